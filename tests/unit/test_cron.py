"""Tests for pgqueue.cron: parser, matching, next/previous fire times, DST handling.

Oracles: a brute-force matcher written here (day-by-day, then every time of day in order) that
implements the Vixie day rule on value sets generated independently of the parser, and cronsim
for UTC cross-checks. croniter is deliberately not used as an oracle: its day-of-month /
day-of-week rule differs from Vixie cron for ``*/n`` fields (it treats them as restricted and ORs).
"""

from __future__ import annotations

import calendar
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import cronsim
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgqueue.cron.expression import Cron, CronError, parse_timezone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ONE_US = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def take(cron: str, after: datetime, n: int, tz: str | ZoneInfo | None = None) -> list[datetime]:
    it = Cron.parse(cron).iter_after(after, tz)
    return [next(it) for _ in range(n)]


# --------------------------------------------------------------------------------------------
# Brute-force oracle (independent of the parser: works on explicit value sets)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sets:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]  # 0 = Sunday
    dom_star: bool
    dow_star: bool

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom_ok = d.day in self.doms
        dow_ok = d.isoweekday() % 7 in self.dows
        # Vixie: either field star-flagged -> both must match; otherwise either may match.
        if self.dom_star or self.dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    def can_fire(self) -> bool:
        leap_len = {m: calendar.monthrange(2000, m)[1] for m in range(1, 13)}
        if not (self.dom_star or self.dow_star):
            return True
        return any(d <= leap_len[m] for m in self.months for d in self.doms)

    def times_of_day(self, reverse: bool = False) -> Iterator[tuple[int, int, int]]:
        # Every time of day in order, pruned level by level (still a plain enumeration).
        order = reversed if reverse else iter
        for h in order(range(24)):
            if h not in self.hours:
                continue
            for m in order(range(60)):
                if m not in self.minutes:
                    continue
                for s in order(range(60)):
                    if s in self.seconds:
                        yield h, m, s


def vixie_sets(
    seconds: set[int] | None, minutes: set[int], hours: set[int], doms: set[int],
    months: set[int], dows: set[int], dom_star: bool, dow_star: bool,
) -> Sets:  # fmt: skip
    return Sets(
        frozenset({0} if seconds is None else seconds), frozenset(minutes), frozenset(hours),
        frozenset(doms), frozenset(months), frozenset(d % 7 for d in dows), dom_star, dow_star,
    )  # fmt: skip


def brute_next(sets: Sets, after: datetime) -> datetime:
    """First matching UTC time strictly after ``after`` (aware UTC)."""
    floor = after.replace(tzinfo=None, microsecond=0)
    day = floor.date()
    while True:
        if day.month not in sets.months:
            # Jump to the first of the next month (only skips days that cannot match).
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
            continue
        if sets.day_matches(day):
            for h, m, s in sets.times_of_day():
                candidate = datetime(day.year, day.month, day.day, h, m, s)
                if candidate > floor:  # floor < after when after has microseconds
                    return candidate.replace(tzinfo=UTC)
        day += timedelta(days=1)


def brute_previous(sets: Sets, at: datetime) -> datetime:
    """Last matching UTC time <= ``at`` (aware UTC)."""
    floor = at.replace(tzinfo=None, microsecond=0)
    day = floor.date()
    while True:
        if day.month not in sets.months:
            day = day.replace(day=1) - timedelta(days=1)
            continue
        if sets.day_matches(day):
            for h, m, s in sets.times_of_day(reverse=True):
                candidate = datetime(day.year, day.month, day.day, h, m, s)
                if candidate <= floor:
                    return candidate.replace(tzinfo=UTC)
        day -= timedelta(days=1)


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def test_parse_five_fields_basic() -> None:
    c = Cron.parse("*/15 9-17 * * MON-FRI")
    assert c.expression == "*/15 9-17 * * MON-FRI"
    assert not c.has_seconds
    assert c.seconds == (0,)
    assert c.minutes == (0, 15, 30, 45)
    assert c.hours == tuple(range(9, 18))
    assert c.days_of_month == tuple(range(1, 32))
    assert c.months == tuple(range(1, 13))
    assert c.days_of_week == (1, 2, 3, 4, 5)
    assert c.dom_star and not c.dow_star


def test_parse_six_fields_has_seconds() -> None:
    c = Cron.parse("*/20 0 0 1 1 *")
    assert c.has_seconds
    assert c.seconds == (0, 20, 40)
    assert c.minutes == (0,) and c.hours == (0,)


@pytest.mark.parametrize(
    ("field", "index", "expected"),
    [
        ("1,2,3", 1, (1, 2, 3)),
        ("0-30/5", 1, (0, 5, 10, 15, 20, 25, 30)),
        ("5/10", 1, (5, 15, 25, 35, 45, 55)),
        ("10-12,50-59/3", 1, (10, 11, 12, 50, 53, 56, 59)),
        ("*/7", 2, (0, 7, 14, 21)),
        ("*/100", 1, (0,)),
        ("3-3", 2, (3,)),
        ("*/2", 3, tuple(range(1, 32, 2))),
        ("2/10", 3, (2, 12, 22)),
        ("JAN,jun,Dec", 4, (1, 6, 12)),
        ("feb-APR", 4, (2, 3, 4)),
        ("MAR/4", 4, (3, 7, 11)),
        ("sun,Sat", 5, (0, 6)),
        ("mon-fri", 5, (1, 2, 3, 4, 5)),
        ("7", 5, (0,)),
        ("5-7", 5, (0, 5, 6)),
        ("0,7", 5, (0,)),
        ("*/2", 5, (0, 2, 4, 6)),
        ("1/2", 5, (0, 1, 3, 5)),  # 1-7/2: 7 is Sunday
    ],
)
def test_parse_field_values(field: str, index: int, expected: tuple[int, ...]) -> None:
    parts = ["0", "0", "1", "1", "*"]
    parts[index - 1] = field
    c = Cron.parse(" ".join(parts))
    got = (c.minutes, c.hours, c.days_of_month, c.months, c.days_of_week)[index - 1]
    assert got == expected


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("  @HOURLY ", "0 * * * *"),
        ("@Daily", "0 0 * * *"),
    ],
)
def test_macros(macro: str, equivalent: str) -> None:
    c, e = Cron.parse(macro), Cron.parse(equivalent)
    assert c.expression == macro
    assert not c.has_seconds
    fields = ["seconds", "minutes", "hours", "days_of_month", "months", "days_of_week"]
    fields += ["dom_star", "dow_star"]
    assert [getattr(c, f) for f in fields] == [getattr(e, f) for f in fields]


def test_whitespace_and_star_flags() -> None:
    c = Cron.parse("  0\t0 \n */2   *  MON ")
    assert c.dom_star and not c.dow_star
    assert Cron.parse("0 0 1,* * *").dom_star is False  # only a leading '*' counts
    assert Cron.parse("0 0 1 * */3").dow_star is True
    assert Cron.parse("0 0 1 * */3").days_of_week == (0, 3, 6)


def test_seven_is_sunday() -> None:
    assert Cron.parse("0 0 * * 7").days_of_week == Cron.parse("0 0 * * SUN").days_of_week == (0,)
    # 2026-01-04 is a Sunday.
    assert Cron.parse("0 0 * * 7").next_after(utc(2026, 1, 1)) == utc(2026, 1, 4)


@pytest.mark.parametrize(
    ("expression", "fragments"),
    [
        ("61 * * * *", ["minute field '61'", "value 61 out of range 0-59"]),
        ("0,61 * * * *", ["minute field '0,61'", "61 out of range"]),
        ("* 24 * * *", ["hour field '24'", "out of range 0-23"]),
        ("* * 0 * *", ["day-of-month field '0'", "out of range 1-31"]),
        ("* * 32 * *", ["day-of-month field '32'", "out of range 1-31"]),
        ("* * * 13 *", ["month field '13'", "out of range 1-12"]),
        ("* * * 0 *", ["month field '0'", "out of range 1-12"]),
        ("* * * * 8", ["day-of-week field '8'", "out of range 0-7"]),
        ("60 * * * * *", ["second field '60'", "out of range 0-59"]),
        ("*/0 * * * *", ["minute field '*/0'", "step"]),
        ("* 1-5/0 * * *", ["hour field '1-5/0'", "step"]),
        ("*/x * * * *", ["minute field '*/x'", "invalid step 'x'"]),
        ("*/ * * * *", ["minute field '*/'", "invalid step"]),
        ("5-1 * * * *", ["minute field '5-1'", "reversed range"]),
        ("* * * * FRI-SUN", ["day-of-week field 'FRI-SUN'", "reversed range"]),
        ("* * * *", ["expected 5 fields", "got 4"]),
        ("* * * * * * *", ["got 7"]),
        ("", ["got 0"]),
        ("   ", ["got 0"]),
        ("* * * FOO *", ["month field 'FOO'", "unknown name 'FOO'"]),
        ("* * * * FOO", ["day-of-week field 'FOO'", "unknown name 'FOO'"]),
        ("* * * JANUARY *", ["month field 'JANUARY'", "unknown name"]),
        ("JAN * * * *", ["minute field 'JAN'", "names are not allowed"]),
        ("1,,2 * * * *", ["minute field '1,,2'", "empty list item"]),
        ("1, * * * *", ["minute field '1,'", "empty list item"]),
        (",1 * * * *", ["minute field ',1'", "empty list item"]),
        ("-1 * * * *", ["minute field '-1'", "missing value"]),
        ("1- * * * *", ["minute field '1-'", "missing value"]),
        ("1-2-3 * * * *", ["minute field '1-2-3'", "invalid value '2-3'"]),
        ("1.5 * * * *", ["minute field '1.5'", "invalid value"]),
        ("? * * * *", ["minute field '?'", "invalid value"]),
        ("* * L * *", ["day-of-month field 'L'"]),
        ("\u0661 * * * *", ["minute field", "invalid value"]),  # non-ASCII digit
        ("@reboot", ["unknown macro '@reboot'"]),
        ("@daily extra", ["unknown macro"]),
        ("0 0 30 2 *", ["day-of-month field '30'", "never fire"]),
        ("0 0 31 4,6,9,11 *", ["day-of-month field '31'", "never fire"]),
        ("0 0 30,31 FEB */2", ["day-of-month field '30,31'", "never fire"]),
    ],
)
def test_parse_errors(expression: str, fragments: list[str]) -> None:
    with pytest.raises(CronError) as info:
        Cron.parse(expression)
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(TypeError):
        Cron.parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 30 2 MON", "0 0 31 2,3 *", "0 0 31 * *"])
def test_rarely_firing_expressions_are_valid(expression: str) -> None:
    Cron.parse(expression)


def test_parse_timezone() -> None:
    assert parse_timezone(None) == ZoneInfo("UTC")
    assert parse_timezone("Europe/Berlin") == BERLIN
    for bad in ["Mars/Olympus", "", "../etc/passwd", "Europe"]:
        with pytest.raises(CronError, match="unknown time zone"):
            parse_timezone(bad)
    with pytest.raises(CronError, match="unknown time zone 'Nowhere'"):
        Cron.parse("* * * * *").next_after(utc(2026, 1, 1), "Nowhere")


def test_cron_is_hashable_and_comparable() -> None:
    assert Cron.parse("0 0 * * *") == Cron.parse("0 0 * * *")
    assert len({Cron.parse("0 0 * * *"), Cron.parse("0 0 * * *"), Cron.parse("@daily")}) == 2


# --------------------------------------------------------------------------------------------
# matches
# --------------------------------------------------------------------------------------------


def test_matches() -> None:
    c = Cron.parse("30 9 * * MON-FRI")
    assert c.matches(datetime(2026, 1, 5, 9, 30))  # Monday
    assert c.matches(datetime(2026, 1, 5, 9, 30, 45, 123))  # seconds ignored for 5 fields
    assert not c.matches(datetime(2026, 1, 4, 9, 30))  # Sunday
    assert not c.matches(datetime(2026, 1, 5, 9, 31))
    s = Cron.parse("15 30 9 * * *")
    assert s.matches(datetime(2026, 1, 5, 9, 30, 15))
    assert not s.matches(datetime(2026, 1, 5, 9, 30, 16))
    both = Cron.parse("0 0 13 * FRI")
    assert both.matches(datetime(2026, 1, 13))  # a Tuesday, matches by day-of-month
    assert both.matches(datetime(2026, 1, 2))  # a Friday, matches by day-of-week
    assert not both.matches(datetime(2026, 1, 14))


# --------------------------------------------------------------------------------------------
# next_after / previous_at_or_before in UTC
# --------------------------------------------------------------------------------------------


def test_next_is_strictly_after_and_truncates() -> None:
    c = Cron.parse("*/5 * * * *")
    assert c.next_after(utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 10, 5)
    assert c.next_after(utc(2026, 1, 1, 10, 4, 59, 999999)) == utc(2026, 1, 1, 10, 5)
    result = c.next_after(utc(2026, 1, 1, 10, 0, 0, 1))
    assert result == utc(2026, 1, 1, 10, 5) and result.microsecond == 0 and result.second == 0
    assert Cron.parse("* * * * * *").next_after(utc(2026, 1, 1, 10, 0, 0, 500)) == utc(2026, 1, 1, 10, 0, 1)


def test_next_requires_aware() -> None:
    c = Cron.parse("* * * * *")
    with pytest.raises(ValueError, match="timezone-aware"):
        c.next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        c.previous_at_or_before(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        c.iter_after(datetime(2026, 1, 1))  # eager, before the first next()


def test_result_is_in_requested_zone() -> None:
    result = Cron.parse("0 9 * * *").next_after(utc(2026, 6, 1), "Europe/Berlin")
    assert result.tzinfo == BERLIN
    assert (result.hour, result.utcoffset()) == (9, timedelta(hours=2))
    assert Cron.parse("0 9 * * *").next_after(utc(2026, 6, 1)).tzinfo == ZoneInfo("UTC")
    # An input in another zone is treated as the instant it denotes.
    ny_after = datetime(2026, 6, 1, 4, 0, tzinfo=NEW_YORK)  # 08:00 UTC
    assert Cron.parse("0 9 * * *").next_after(ny_after) == utc(2026, 6, 1, 9)


def test_leap_day() -> None:
    assert Cron.parse("0 0 29 2 *").next_after(utc(2025, 1, 1)) == utc(2028, 2, 29)
    assert take("0 0 29 2 *", utc(2096, 3, 1), 2) == [utc(2104, 2, 29), utc(2108, 2, 29)]  # 2100: no leap


def test_month_ends() -> None:
    got = take("0 0 31 * *", utc(2026, 1, 31), 4)
    assert got == [utc(2026, 3, 31), utc(2026, 5, 31), utc(2026, 7, 31), utc(2026, 8, 31)]
    assert take("0 12 30 * *", utc(2026, 1, 30, 12), 2) == [utc(2026, 3, 30, 12), utc(2026, 4, 30, 12)]


def test_both_day_fields_restricted_means_or() -> None:
    # Jan 2026: Fridays are 2, 9, 16, 23, 30; the 13th is a Tuesday.
    got = take("0 0 13 * FRI", utc(2026, 1, 1), 6)
    days = [2, 9, 13, 16, 23, 30]
    assert got == [utc(2026, 1, d) for d in days]


def test_star_step_day_field_means_and() -> None:
    # dom '*/2' is star-flagged, so only odd-numbered days that are Mondays fire.
    got = take("0 0 */2 * MON", utc(2026, 1, 1), 4)
    assert got == [utc(2026, 1, 5), utc(2026, 1, 19), utc(2026, 2, 9), utc(2026, 2, 23)]
    assert all(d.day % 2 == 1 and d.isoweekday() == 1 for d in got)
    # and the mirror image: '*/3' in day-of-week is star-flagged too.
    got = take("0 0 1 * */3", utc(2026, 1, 1), 2)  # the 1st, on Sun/Wed/Sat
    assert all(d.day == 1 and d.isoweekday() % 7 in (0, 3, 6) for d in got)
    assert got == [utc(2026, 2, 1), utc(2026, 3, 1)]


def test_feb29_monday_follows_the_or_rule() -> None:
    # Both day fields are restricted, so Vixie cron fires on Feb 29 OR on any Monday in
    # February: the next fire after 2026-01-01 is Monday 2026-02-02, not 2044-02-29.
    sets = vixie_sets(None, {0}, {0}, {29}, {2}, {1}, dom_star=False, dow_star=False)
    c = Cron.parse("0 0 29 2 MON")
    assert c.next_after(utc(2026, 1, 1)) == brute_next(sets, utc(2026, 1, 1)) == utc(2026, 2, 2)
    assert utc(2028, 2, 29) in take("0 0 29 2 MON", utc(2028, 2, 20), 3)  # a Tuesday


def test_rare_and_combination_is_found_fast() -> None:
    # Feb 29 AND Sunday ('*/7' is star-flagged and means {0, 7} = Sunday): every ~28 years.
    c = Cron.parse("0 0 29 2 */7")
    sets = vixie_sets(None, {0}, {0}, {29}, {2}, {0}, dom_star=False, dow_star=True)
    assert c.next_after(utc(2026, 1, 1)) == brute_next(sets, utc(2026, 1, 1)) == utc(2032, 2, 29)
    assert c.next_after(utc(2088, 3, 1)) == brute_next(sets, utc(2088, 3, 1)) == utc(2128, 2, 29)
    started = time.perf_counter()
    for _ in range(200):
        c.next_after(utc(2088, 3, 1))
        c.previous_at_or_before(utc(2128, 2, 28))
    per_call = (time.perf_counter() - started) / 400
    assert per_call < 0.002  # arithmetic, not a minute-by-minute scan
    assert c.previous_at_or_before(utc(2128, 2, 28)) == utc(2088, 2, 29)


def test_seconds_field() -> None:
    got = take("*/20 * * * * *", utc(2026, 1, 1, 0, 0, 30), 3)
    assert got == [utc(2026, 1, 1, 0, 0, 40), utc(2026, 1, 1, 0, 1, 0), utc(2026, 1, 1, 0, 1, 20)]
    assert take("59 59 23 31 12 *", utc(2026, 6, 1), 1) == [utc(2026, 12, 31, 23, 59, 59)]
    c = Cron.parse("30 * * * * *")
    assert c.previous_at_or_before(utc(2026, 1, 1, 0, 0, 29)) == utc(2025, 12, 31, 23, 59, 30)


def test_previous_at_or_before_basic() -> None:
    c = Cron.parse("0 12 * * *")
    assert c.previous_at_or_before(utc(2026, 1, 5, 12)) == utc(2026, 1, 5, 12)
    assert c.previous_at_or_before(utc(2026, 1, 5, 12) - ONE_US) == utc(2026, 1, 4, 12)
    assert c.previous_at_or_before(utc(2026, 1, 5, 12, 0, 0, 999)) == utc(2026, 1, 5, 12)
    assert Cron.parse("0 0 31 * *").previous_at_or_before(utc(2026, 5, 30)) == utc(2026, 3, 31)
    assert Cron.parse("0 0 29 2 *").previous_at_or_before(utc(2028, 2, 28)) == utc(2024, 2, 29)


def test_year_boundaries() -> None:
    assert take("0 0 1 1 *", utc(2026, 12, 31, 23, 59), 1) == [utc(2027, 1, 1)]
    assert Cron.parse("59 23 31 12 *").previous_at_or_before(utc(2027, 1, 1)) == utc(2026, 12, 31, 23, 59)


# --------------------------------------------------------------------------------------------
# Time zones / DST
# --------------------------------------------------------------------------------------------


def offsets(values: list[datetime]) -> list[str]:
    return [v.isoformat() for v in values]


def test_berlin_fixed_time_in_gap_fires_at_the_jump() -> None:
    got = take("30 2 * * *", utc(2026, 3, 27, 12), 4, "Europe/Berlin")
    assert offsets(got) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist: fire at the jump, 01:00 UTC
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert got[1] == utc(2026, 3, 29, 1)


def test_berlin_fixed_time_in_overlap_fires_once() -> None:
    got = take("30 2 * * *", utc(2026, 10, 23, 12), 4, BERLIN)
    assert offsets(got) == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",  # first occurrence only
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


def test_berlin_wildcards_across_gap() -> None:
    got = take("*/15 * * * *", utc(2026, 3, 29, 0, 30), 4, BERLIN)
    # 02:00..02:45 and 03:00 all collapse into one fire at the jump.
    assert offsets(got) == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:15:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]
    got = take("0 * * * *", utc(2026, 3, 28, 23, 30), 3, BERLIN)
    assert offsets(got) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]


def test_berlin_wildcards_across_overlap() -> None:
    got = take("*/15 * * * *", utc(2026, 10, 25, 0, 30), 4, BERLIN)
    assert offsets(got) == [
        "2026-10-25T02:45:00+02:00",
        "2026-10-25T03:00:00+01:00",  # the repeated 02:xx (winter time) does not fire again
        "2026-10-25T03:15:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    got = take("0 * * * *", utc(2026, 10, 24, 22, 30), 4, BERLIN)
    assert offsets(got) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]


def test_after_inside_second_pass_of_overlap() -> None:
    c = Cron.parse("*/15 * * * *")
    at = utc(2026, 10, 25, 1, 10)  # 02:10+01:00, the second 02:10
    assert c.next_after(at, BERLIN).isoformat() == "2026-10-25T03:00:00+01:00"
    assert c.previous_at_or_before(at, BERLIN).isoformat() == "2026-10-25T02:45:00+02:00"
    s = Cron.parse("0 * * * * *")
    assert s.next_after(at, BERLIN).isoformat() == "2026-10-25T03:00:00+01:00"


def test_new_york_gap_and_overlap() -> None:
    got = take("30 2 * * *", utc(2026, 3, 7), 3, "America/New_York")
    assert offsets(got) == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]
    got = take("30 1 * * *", utc(2026, 10, 31, 12), 3, NEW_YORK)
    assert offsets(got) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]
    got = take("*/15 * * * *", utc(2026, 3, 8, 6, 30), 3, NEW_YORK)
    assert offsets(got) == [
        "2026-03-08T01:45:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:15:00-04:00",
    ]
    got = take("0 * * * *", utc(2026, 11, 1, 4, 30), 3, NEW_YORK)
    assert offsets(got) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]


def test_gap_with_seconds_field_collapses() -> None:
    got = take("*/20 * * * * *", utc(2026, 3, 29, 0, 59, 30), 3, BERLIN)
    assert offsets(got) == [
        "2026-03-29T01:59:40+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:00:20+02:00",
    ]


def test_skipped_calendar_day() -> None:
    # Samoa skipped 2011-12-30 entirely; a job due that day fires at the jump.
    apia = ZoneInfo("Pacific/Apia")
    got = take("0 12 * * *", datetime(2011, 12, 29, 13, tzinfo=apia), 2, apia)
    assert offsets(got) == ["2011-12-31T00:00:00+14:00", "2011-12-31T12:00:00+14:00"]


def test_previous_consistent_across_dst() -> None:
    for cron, start, zone in [
        ("30 2 * * *", utc(2026, 3, 27), BERLIN),
        ("*/15 * * * *", utc(2026, 3, 29, 0, 30), BERLIN),
        ("*/15 * * * *", utc(2026, 10, 25, 0, 30), BERLIN),
        ("0 * * * *", utc(2026, 11, 1, 3), NEW_YORK),
    ]:
        c = Cron.parse(cron)
        fires = take(cron, start, 12, zone)
        for before, fire in itertools.pairwise(fires):
            # UTC comparisons: aware times inside a fold never equal another zone's (PEP 495).
            assert c.previous_at_or_before(fire, zone).astimezone(UTC) == fire.astimezone(UTC)
            got = c.previous_at_or_before(fire.astimezone(UTC) - ONE_US, zone)
            assert got.astimezone(UTC) == before.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the name of value low + i


SPECS = [
    Spec(0, 59),
    Spec(0, 59),
    Spec(0, 23),
    Spec(1, 31),
    Spec(1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    Spec(0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
]


@dataclass(frozen=True)
class GenField:
    text: str
    values: frozenset[int]
    one_value_stepped_range: bool  # e.g. "4-4/1", which cronsim misreads


@st.composite
def field_item(draw: st.DrawFn, spec: Spec) -> tuple[str, set[int], bool]:
    def render(value: int) -> str:
        index = value - spec.low
        if index < len(spec.names) and draw(st.booleans()):
            name = spec.names[index]
            return draw(st.sampled_from([name, name.lower(), name.title()]))
        return str(value)

    values = st.integers(spec.low, spec.high)
    step = draw(st.integers(1, spec.high - spec.low + 2))
    kind = draw(st.sampled_from(["star", "star_step", "value", "range", "range_step", "value_step"]))
    if kind == "star":
        return "*", set(range(spec.low, spec.high + 1)), False
    if kind == "star_step":
        return f"*/{step}", set(range(spec.low, spec.high + 1, step)), False
    a = draw(values)
    if kind == "value":
        return render(a), {a}, False
    if kind == "value_step":
        return f"{render(a)}/{step}", set(range(a, spec.high + 1, step)), False
    b = draw(st.integers(a, spec.high))
    if kind == "range":
        return f"{render(a)}-{render(b)}", set(range(a, b + 1)), False
    return f"{render(a)}-{render(b)}/{step}", set(range(a, b + 1, step)), a == b


@st.composite
def cron_field(draw: st.DrawFn, spec: Spec) -> GenField:
    items = draw(st.lists(field_item(spec), min_size=1, max_size=3))
    values: set[int] = set().union(*(v for _, v, _ in items))
    return GenField(",".join(t for t, _, _ in items), frozenset(values), any(f for _, _, f in items))


@dataclass(frozen=True)
class GenCron:
    text: str
    sets: Sets
    cronsim_safe: bool


@st.composite
def cron_expressions(draw: st.DrawFn, seconds: bool | None = None, simple_days: bool = False) -> GenCron:
    has_seconds = draw(st.booleans()) if seconds is None else seconds
    fields = [draw(cron_field(spec)) for spec in SPECS]
    if simple_days:
        # Keep the date part permissive so a DST window almost always contains fires.
        star_dom = GenField("*", frozenset(range(1, 32)), False)
        star_month = GenField("*", frozenset(range(1, 13)), False)
        fields[3] = draw(st.sampled_from([star_dom, fields[3]]))
        fields[4] = star_month
    if not has_seconds:
        fields[0] = GenField("0", frozenset({0}), False)
    texts = [f.text for f in fields]
    text = " ".join(texts if has_seconds else texts[1:])
    sets = vixie_sets(
        set(fields[0].values), set(fields[1].values), set(fields[2].values), set(fields[3].values),
        set(fields[4].values), set(fields[5].values), texts[3].startswith("*"), texts[5].startswith("*"),
    )  # fmt: skip
    return GenCron(text, sets, not any(f.one_value_stepped_range for f in fields))


def parse_or_reject(gen: GenCron) -> Cron:
    try:
        cron = Cron.parse(gen.text)
    except CronError as exc:
        # The only valid-grammar rejection: expressions that can never fire.
        assert "never fire" in str(exc)
        assert not gen.sets.can_fire()
        assume(False)
    assert gen.sets.can_fire()
    return cron


utc_starts = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC))


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gen=cron_expressions(), start=utc_starts)
def test_property_matches_brute_force(gen: GenCron, start: datetime) -> None:
    cron = parse_or_reject(gen)
    # The parser produced exactly the generated value sets.
    assert frozenset(cron.minutes) == gen.sets.minutes
    assert frozenset(cron.hours) == gen.sets.hours
    assert frozenset(cron.days_of_month) == gen.sets.doms
    assert frozenset(cron.months) == gen.sets.months
    assert frozenset(cron.days_of_week) == gen.sets.dows
    assert frozenset(cron.seconds) == gen.sets.seconds
    expected_next = brute_next(gen.sets, start)
    got_next = cron.next_after(start)
    assert got_next == expected_next
    assert cron.matches(got_next.replace(tzinfo=None))
    assert cron.previous_at_or_before(start) == brute_previous(gen.sets, start)
    # previous/next consistency
    assert cron.previous_at_or_before(got_next) == got_next
    before = cron.previous_at_or_before(got_next - ONE_US)
    assert before <= start
    assert cron.next_after(before) == got_next


@settings(max_examples=600, deadline=None)
@given(gen=cron_expressions(), start=utc_starts)
def test_property_agrees_with_cronsim_in_utc(gen: GenCron, start: datetime) -> None:
    assume(gen.cronsim_safe)
    cron = parse_or_reject(gen)
    try:
        expected = next(cronsim.CronSim(gen.text, start))
    except StopIteration:  # cronsim gives up after ~50 years
        assert cron.next_after(start) > start + timedelta(days=365 * 49)
        return
    assert cron.next_after(start) == expected


# --- DST oracle ------------------------------------------------------------------------------

DST_ZONES = ["Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe", "Asia/Beirut"]


@cache
def transitions(zone_name: str, year: int) -> tuple[datetime, ...]:
    """UTC instants in ``year`` at which the zone's UTC offset changes (minute precision)."""
    zone = ZoneInfo(zone_name)
    found = []
    t = utc(year, 1, 1)
    offset = t.astimezone(zone).utcoffset()
    while t.year == year:
        nxt = t + timedelta(hours=1)
        if nxt.astimezone(zone).utcoffset() != offset:
            m = t
            while m.astimezone(zone).utcoffset() == offset:
                m += timedelta(minutes=1)
            found.append(m)
            offset = nxt.astimezone(zone).utcoffset()
        t = nxt
    return tuple(found)


def oracle_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Documented rule, computed naively: fold=0 if the wall time exists, else the jump."""
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    x = first - timedelta(hours=4)
    while x.astimezone(zone).replace(tzinfo=None) <= wall:
        x += timedelta(minutes=1)
    return x


def oracle_fires(sets: Sets, zone: ZoneInfo, center: datetime) -> list[datetime]:
    """All fire instants for the wall times within 3 days of ``center`` (every minute, in order)."""
    first_day = center.astimezone(zone).date() - timedelta(days=3)
    instants: set[datetime] = set()
    for offset in range(7):
        day = first_day + timedelta(days=offset)
        if not sets.day_matches(day):
            continue
        for h, m, _ in sets.times_of_day():
            instants.add(oracle_instant(datetime(day.year, day.month, day.day, h, m), zone))
    return sorted(instants)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gen=cron_expressions(seconds=False, simple_days=True),
    zone_name=st.sampled_from(DST_ZONES),
    year=st.integers(2024, 2026),
    which=st.integers(0, 1),
    shift=st.integers(-36 * 3600 * 10**6, 36 * 3600 * 10**6),
)
def test_property_dst_matches_oracle(gen: GenCron, zone_name: str, year: int, which: int, shift: int) -> None:
    cron = parse_or_reject(gen)
    zone = ZoneInfo(zone_name)
    transition = transitions(zone_name, year)[which]
    after = transition + timedelta(microseconds=shift)
    fires = oracle_fires(gen.sets, zone, transition)
    later = [f for f in fires if f > after]
    earlier = [f for f in fires if f <= after]
    assume(later and earlier)
    # Compare in UTC: per PEP 495, an aware time inside a fold never equals one in another zone.
    assert cron.next_after(after, zone).astimezone(UTC) == later[0]
    assert cron.previous_at_or_before(after, zone).astimezone(UTC) == earlier[-1]
    it = cron.iter_after(after, zone)
    produced = [next(it) for _ in range(min(len(later), 20))]
    assert all(p.tzinfo is zone for p in produced)
    assert [p.astimezone(UTC) for p in produced] == later[: len(produced)]


@settings(max_examples=300, deadline=None)
@given(gen=cron_expressions(), start=utc_starts)
def test_property_iter_strictly_increasing_in_berlin(gen: GenCron, start: datetime) -> None:
    cron = parse_or_reject(gen)
    # Start near a DST transition half of the time.
    if start.microsecond % 2:
        start = transitions("Europe/Berlin", 2026)[start.second % 2] - timedelta(minutes=start.minute * 3)
    produced = list(zip(range(30), cron.iter_after(start, BERLIN), strict=False))
    values = [v.astimezone(UTC) for _, v in produced]
    assert values[0] > start
    assert all(a < b for a, b in itertools.pairwise(values))
    for previous, fire in itertools.pairwise(values):
        assert cron.previous_at_or_before(fire, BERLIN).astimezone(UTC) == fire
        assert cron.previous_at_or_before(fire - ONE_US, BERLIN).astimezone(UTC) == previous
        assert fire.microsecond == 0
        assert cron.has_seconds or fire.second == 0
