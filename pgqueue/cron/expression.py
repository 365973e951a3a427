"""Cron expressions: parsing, matching and computing fire times.

Pure module (stdlib only, no database).

Grammar
-------
Five whitespace-separated fields ``minute hour day-of-month month day-of-week``, or six with a
leading ``second`` field. Each field is a comma-separated list of items; an item is ``*``, a value,
a range ``a-b``, or one of those followed by a step: ``*/15``, ``0-30/5``, ``5/10`` (= ``5-max/10``).
Months accept ``JAN``-``DEC`` and days of week ``SUN``-``SAT`` (case-insensitive, also inside
ranges such as ``MON-FRI``). Day of week is 0-7 where both 0 and 7 mean Sunday; its maximum for
``*`` and ``a/n`` is 7, so ``1/2`` is Mon, Wed, Fri, Sun -- the same set as ``1-7/2``.
Macros: ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``, ``@hourly``.

Day rule (classic Vixie/Debian cron)
------------------------------------
A field whose text starts with ``*`` (including ``*/2``) is "star-flagged". If day-of-month or
day-of-week is star-flagged, a day must match BOTH fields; otherwise (both restricted) a day
matches if EITHER field matches. So ``0 0 13 * FRI`` fires on every 13th and on every Friday,
while ``0 0 */2 * MON`` fires only on Mondays that fall on an odd day of the month.
Expressions that can never fire (``0 0 30 2 *``) are rejected by :meth:`Cron.parse`.

Time zones and DST
------------------
An expression matches WALL-CLOCK time in the schedule's zone (UTC by default):

* A wall time that does not exist (spring-forward gap) fires once, at the instant of the jump:
  in Europe/Berlin on 2026-03-29, ``30 2 * * *`` fires at 03:00+02:00 (01:00 UTC). Several
  matching wall times inside one gap (and the first wall time after it, e.g. 03:00) collapse
  into that single fire.
* A wall time that occurs twice (fall-back overlap) fires once, at its first occurrence
  (``fold=0``). This applies to wildcard expressions too: ``*/15 * * * *`` fires 02:00-02:45
  in summer time and then not again until 03:00 in winter time.

Fire times are therefore strictly increasing, with no duplicates, and :meth:`Cron.next_after`
and :meth:`Cron.previous_at_or_before` agree on the same set of instants. Results carry
``microsecond=0`` (and ``second=0`` for five-field expressions). Compare results as instants in
UTC: per PEP 495, an aware datetime inside a fold never compares equal to one in another zone.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "CronError", "parse_timezone"]

# A valid expression fires at least every ~40 years (Feb 29 on a given weekday across a
# skipped century leap year); this bound only protects against bugs and datetime.max.
_MAX_SEARCH_YEARS = 400

_ONE_SECOND = timedelta(seconds=1)

_MONTH_NAMES = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DOW_NAMES = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Days in each month of a leap year: used to reject expressions that can never fire.
_LEAP_MONTH_DAYS = {m: calendar.monthrange(2000, m)[1] for m in range(1, 13)}


class CronError(ValueError):
    """Invalid cron expression or time zone, or no fire time could be found."""


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: dict[str, int]


_SECOND = _FieldSpec("second", 0, 59, {})
_MINUTE = _FieldSpec("minute", 0, 59, {})
_HOUR = _FieldSpec("hour", 0, 23, {})
_DOM = _FieldSpec("day-of-month", 1, 31, {})
_MONTH = _FieldSpec("month", 1, 12, _MONTH_NAMES)
_DOW = _FieldSpec("day-of-week", 0, 7, _DOW_NAMES)


def _field_error(spec: _FieldSpec, text: str, why: str) -> CronError:
    return CronError(f"{spec.name} field '{text}': {why}")


def _parse_value(spec: _FieldSpec, text: str, token: str) -> int:
    if token.isascii() and token.isdigit():
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise _field_error(spec, text, f"value {value} out of range {spec.low}-{spec.high}")
        return value
    if not token:
        raise _field_error(spec, text, "missing value")
    if token.upper() in spec.names:
        return spec.names[token.upper()]
    if token.isascii() and token.isalpha():
        if spec.names:
            raise _field_error(spec, text, f"unknown name '{token}'")
        raise _field_error(spec, text, f"names are not allowed here ('{token}')")
    raise _field_error(spec, text, f"invalid value '{token}'")


def _parse_field(spec: _FieldSpec, text: str) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _field_error(spec, text, "empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise _field_error(spec, text, f"invalid step '{step_text}'")
            step = int(step_text)
            if step == 0:
                raise _field_error(spec, text, "step must be at least 1")
        if base == "*":
            start, end = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _parse_value(spec, text, first)
            end = _parse_value(spec, text, last)
            if start > end:
                raise _field_error(spec, text, f"reversed range '{base}' ({start} > {end})")
        else:
            start = _parse_value(spec, text, base)
            # "5/10" is shorthand for "5-<max>/10".
            end = spec.high if slash else start
        values.update(range(start, end + 1, step))
    if spec is _DOW and 7 in values:
        values.discard(7)
        values.add(0)
    return tuple(sorted(values))


def _bits(days: tuple[int, ...] | range) -> int:
    mask = 0
    for day in days:
        mask |= 1 << day
    return mask


def parse_timezone(name: str | None) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name; ``None`` means UTC."""
    if name is None:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError/OSError cover malformed keys such as "" or "../etc" or a directory name.
        raise CronError(f"unknown time zone '{name}'") from None


def _resolve_tz(tz: str | ZoneInfo | None) -> tzinfo:
    if isinstance(tz, tzinfo):
        return tz
    return parse_timezone(tz)


def _require_aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value!r}")
    return value.astimezone(UTC)


def _transition(tz: tzinfo, before: datetime, after: datetime) -> datetime:
    """Earliest whole-second UTC instant in (before, after] whose UTC offset equals after's.

    Used to find the instant a clock jumped; the window is at most a few hours wide.
    """
    target = after.astimezone(tz).utcoffset()
    low, high = 0, int((after - before).total_seconds())
    while high - low > 1:
        mid = (low + high) // 2
        if (before + timedelta(seconds=mid)).astimezone(tz).utcoffset() == target:
            high = mid
        else:
            low = mid
    return before + timedelta(seconds=high)


def _instant(wall: datetime, tz: tzinfo) -> datetime:
    """Map a naive wall time to the UTC instant it fires at, per the module's DST rule."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    offset_first, offset_second = first.utcoffset(), second.utcoffset()
    assert offset_first is not None and offset_second is not None
    if offset_first >= offset_second:
        # Normal time, or a repeated wall time: fold=0 is the first occurrence.
        return first.astimezone(UTC)
    # Gap: fold=1 (new offset) lands before the jump, fold=0 (old offset) after it.
    return _transition(tz, second.astimezone(UTC), first.astimezone(UTC))


def _overlap_end(local: datetime) -> datetime | None:
    """For an instant in the second pass of a fall-back overlap, the first wall time after it.

    Returns None when ``local`` is not in a second pass. Wall times before the returned
    value (within the overlap) already fired during the first pass.
    """
    if not local.fold:
        return None
    tz = local.tzinfo
    assert tz is not None
    wall = local.replace(tzinfo=None, microsecond=0)
    first = wall.replace(tzinfo=tz, fold=0)
    old_offset, new_offset = first.utcoffset(), local.utcoffset()
    if old_offset is None or new_offset is None or old_offset <= new_offset:
        return None
    jump = _transition(tz, first.astimezone(UTC), wall.replace(tzinfo=tz, fold=1).astimezone(UTC))
    # At the jump the clock read old_offset wall time = end of the repeated range.
    return (jump + old_offset).replace(tzinfo=None)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression. Build with :meth:`Cron.parse`.

    Value tuples are sorted; ``days_of_week`` uses 0 = Sunday (7 is folded into 0).
    ``dom_star``/``dow_star`` record whether those fields' text started with ``*``.
    """

    expression: str
    has_seconds: bool
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]
    dom_star: bool
    dow_star: bool
    # Derived bitmasks (bit d = day d of the month) for O(1) day matching per month.
    _dom_mask: int = field(init=False, repr=False, compare=False)
    # Indexed by the Python weekday (Mon=0) of the 1st of the month.
    _dow_masks: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_dom_mask", _bits(self.days_of_month))
        dow = set(self.days_of_week)
        masks = []
        for first_weekday in range(7):
            # Python weekday (Mon=0) of day d is (first_weekday + d - 1) % 7; cron's (Sun=0)
            # is one more.
            masks.append(_bits([d for d in range(1, 32) if (first_weekday + d) % 7 in dow]))
        object.__setattr__(self, "_dow_masks", tuple(masks))

    @classmethod
    def parse(cls, expression: str) -> Cron:
        if not isinstance(expression, str):
            raise TypeError(f"cron expression must be a str, not {type(expression).__name__}")
        text = expression.strip()
        if text.startswith("@"):
            expanded = _MACROS.get(text.lower())
            if expanded is None:
                known = ", ".join(_MACROS)
                raise CronError(f"unknown macro '{text}' (expected one of {known})")
            text = expanded
        parts = text.split()
        if len(parts) not in (5, 6):
            raise CronError(
                f"expression '{expression}': expected 5 fields (minute hour day-of-month month "
                f"day-of-week) or 6 with a leading second field, got {len(parts)}"
            )
        has_seconds = len(parts) == 6
        if not has_seconds:
            parts.insert(0, "0")
        seconds = _parse_field(_SECOND, parts[0])
        minutes = _parse_field(_MINUTE, parts[1])
        hours = _parse_field(_HOUR, parts[2])
        days = _parse_field(_DOM, parts[3])
        months = _parse_field(_MONTH, parts[4])
        weekdays = _parse_field(_DOW, parts[5])
        dom_star = parts[3].startswith("*")
        dow_star = parts[5].startswith("*")
        if (dom_star or dow_star) and not any(day <= _LEAP_MONTH_DAYS[month] for month in months for day in days):
            # Both day fields must match, and no allowed day exists in any allowed month.
            # (When both are restricted, any weekday occurs in every month, so it always fires.)
            raise CronError(
                f"day-of-month field '{parts[3]}': no allowed day exists in any allowed month "
                f"(month field '{parts[4]}'), so the expression can never fire"
            )
        return cls(
            expression=expression,
            has_seconds=has_seconds,
            seconds=seconds,
            minutes=minutes,
            hours=hours,
            days_of_month=days,
            months=months,
            days_of_week=weekdays,
            dom_star=dom_star,
            dow_star=dow_star,
        )

    # -- matching ---------------------------------------------------------------------------

    def _day_mask(self, year: int, month: int) -> int:
        """Bitmask of the days of (year, month) that satisfy the day fields (Vixie rule)."""
        first_weekday, length = calendar.monthrange(year, month)
        dow_mask = self._dow_masks[first_weekday]
        both_required = self.dom_star or self.dow_star
        mask = self._dom_mask & dow_mask if both_required else self._dom_mask | dow_mask
        return mask & ((1 << (length + 1)) - 2)

    def matches(self, wall: datetime) -> bool:
        """Whether a wall-clock time matches. Any tzinfo is ignored; so is the second field
        of ``wall`` unless the expression has a seconds field."""
        if self.has_seconds and wall.second not in self.seconds:
            return False
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and bool(self._day_mask(wall.year, wall.month) >> wall.day & 1)
        )

    # -- wall-clock search ------------------------------------------------------------------

    def _next_day(self, day: date, last_year: int) -> date:
        """First matching date >= day."""
        year, month, first = day.year, day.month, day.day
        while year <= last_year:
            i = bisect_left(self.months, month)
            if i == len(self.months):
                year, month, first = year + 1, self.months[0], 1
                continue
            if self.months[i] != month:
                month, first = self.months[i], 1
            mask = self._day_mask(year, month) >> first << first
            if mask:
                return date(year, month, (mask & -mask).bit_length() - 1)
            month, first = month + 1, 1
        raise CronError(f"cron '{self.expression}': no fire time found before year {last_year + 1}")

    def _previous_day(self, day: date, first_year: int) -> date:
        """Last matching date <= day."""
        year, month, last = day.year, day.month, day.day
        while year >= first_year:
            i = bisect_right(self.months, month) - 1
            if i < 0:
                year, month, last = year - 1, self.months[-1], 31
                continue
            if self.months[i] != month:
                month, last = self.months[i], 31
            mask = self._day_mask(year, month) & ((2 << last) - 1)
            if mask:
                return date(year, month, mask.bit_length() - 1)
            month, last = month - 1, 31
        raise CronError(f"cron '{self.expression}': no fire time found after year {first_year - 1}")

    def _time_at_or_after(self, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect_left(hours, hour)
        if i < len(hours) and hours[i] == hour:
            j = bisect_left(minutes, minute)
            if j < len(minutes) and minutes[j] == minute:
                k = bisect_left(seconds, second)
                if k < len(seconds):
                    return hour, minute, seconds[k]
                j += 1
            if j < len(minutes):
                return hour, minutes[j], seconds[0]
            i += 1
        if i < len(hours):
            return hours[i], minutes[0], seconds[0]
        return None

    def _time_at_or_before(self, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect_right(hours, hour) - 1
        if i >= 0 and hours[i] == hour:
            j = bisect_right(minutes, minute) - 1
            if j >= 0 and minutes[j] == minute:
                k = bisect_right(seconds, second) - 1
                if k >= 0:
                    return hour, minute, seconds[k]
                j -= 1
            if j >= 0:
                return hour, minutes[j], seconds[-1]
            i -= 1
        if i >= 0:
            return hours[i], minutes[-1], seconds[-1]
        return None

    def _next_wall(self, start: datetime) -> datetime:
        """Smallest matching naive wall time >= start (start has microsecond=0)."""
        last_year = min(start.year + _MAX_SEARCH_YEARS, datetime.max.year)
        day = start.date()
        clock = (start.hour, start.minute, start.second)
        while True:
            found = self._next_day(day, last_year)
            if found != day:
                clock = (0, 0, 0)
            time_of_day = self._time_at_or_after(*clock)
            if time_of_day is not None:
                return datetime(found.year, found.month, found.day, *time_of_day)
            if found == date.max:
                raise CronError(f"cron '{self.expression}': no fire time before {date.max}")
            # Nothing left on this day: move on to the next one.
            day, clock = found + timedelta(days=1), (0, 0, 0)

    def _previous_wall(self, end: datetime) -> datetime:
        """Largest matching naive wall time <= end (end has microsecond=0)."""
        first_year = max(end.year - _MAX_SEARCH_YEARS, datetime.min.year)
        day = end.date()
        clock = (end.hour, end.minute, end.second)
        while True:
            found = self._previous_day(day, first_year)
            if found != day:
                clock = (23, 59, 59)
            time_of_day = self._time_at_or_before(*clock)
            if time_of_day is not None:
                return datetime(found.year, found.month, found.day, *time_of_day)
            if found == date.min:
                raise CronError(f"cron '{self.expression}': no fire time after {date.min}")
            day, clock = found - timedelta(days=1), (23, 59, 59)

    # -- instants ---------------------------------------------------------------------------

    def next_after(self, after: datetime, tz: str | ZoneInfo | None = None) -> datetime:
        """First fire time strictly after ``after`` (aware), as an aware datetime in ``tz``."""
        return self._next(_require_aware(after, "after"), _resolve_tz(tz))

    def previous_at_or_before(self, at: datetime, tz: str | ZoneInfo | None = None) -> datetime:
        """Latest fire time <= ``at`` (aware), as an aware datetime in ``tz``."""
        zone = _resolve_tz(tz)
        local = _require_aware(at, "at").astimezone(zone)
        wall = local.replace(tzinfo=None, microsecond=0)
        overlap_end = _overlap_end(local)
        # In the second pass of an overlap, every repeated wall time already fired (first pass).
        end = wall if overlap_end is None else overlap_end - _ONE_SECOND
        return _instant(self._previous_wall(end), zone).astimezone(zone)

    def iter_after(self, after: datetime, tz: str | ZoneInfo | None = None) -> Iterator[datetime]:
        """Fire times strictly after ``after``, in increasing order (endless)."""
        # Validate eagerly so errors surface here rather than on the first next().
        return self._iterate(_require_aware(after, "after"), _resolve_tz(tz))

    def _iterate(self, after_utc: datetime, zone: tzinfo) -> Iterator[datetime]:
        current = after_utc
        while True:
            current = self._next(current, zone)
            yield current

    def _next(self, after_utc: datetime, zone: tzinfo) -> datetime:
        local = after_utc.astimezone(zone)
        wall = local.replace(tzinfo=None, microsecond=0)
        overlap_end = _overlap_end(local)
        # In the second pass of an overlap, the repeated wall times already fired (first pass).
        start = wall + _ONE_SECOND if overlap_end is None else overlap_end
        return _instant(self._next_wall(start), zone).astimezone(zone)
