"""Schedules as declared in code, checked, and the pure rules of firing them: which fire times are due
(`plan`), the parameters of their statements, and how `pgqueue cron list` describes them. No database here;
pgqueue.cron.scheduler runs them (its docstring tells the whole story of a schedule).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pgqueue.cron.expression import Cron, CronError, parse_timezone

MISSED_POLICIES = ("latest", "backfill")
MAX_BACKFILL = 1000
MISSED_COUNT_CAP = 1000  # counting dropped fires stops here; only a log line uses the count
_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """One declared schedule, validated; `queue`, `priority` and `max_attempts` are resolved from the task."""

    name: str
    cron: Cron
    timezone: str
    task: str
    args: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    missed: str = "latest"
    backfill_limit: int = 10
    skip_if_running: bool = False
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", parse_timezone(self.timezone))

    @property
    def expression(self) -> str:
        return self.cron.expression

    # Both return UTC: arithmetic and comparison of aware datetimes within one zone are wall-clock
    # operations in Python, wrong across DST; in UTC they are instants.
    def next_after(self, when: datetime) -> datetime:
        return self.cron.next_after(when, self.zone).astimezone(UTC)

    def previous_at_or_before(self, when: datetime) -> datetime:
        return self.cron.previous_at_or_before(when, self.zone).astimezone(UTC)


def declare(
    task_name: str,
    *,
    cron: str,
    job: Callable[[str], Mapping[str, Any]],
    name: str | None = None,
    timezone: str | None = None,
    missed: str = "latest",
    backfill_limit: int = 10,
    skip_if_running: bool = False,
) -> Schedule:
    """Validate a declaration (expression, zone, policies) and build its Schedule.

    `job(schedule_name)` gives the job parameters each fire inserts, checked by the caller's rules (the Queue's
    job_params: queue, priority, attempts, arguments), after the schedule's own checks.
    """
    schedule_name = task_name if name is None else name
    if not isinstance(schedule_name, str) or not schedule_name.strip():
        raise ValueError("schedule name must be a non-empty string")
    try:
        parsed = Cron.parse(cron)
    except CronError as exc:
        raise CronError(f"schedule {schedule_name!r}: {exc}") from None
    zone_name = timezone or "UTC"
    try:
        parse_timezone(zone_name)
    except CronError as exc:
        raise CronError(f"schedule {schedule_name!r}: {exc}") from None
    if missed not in MISSED_POLICIES:
        raise ValueError(f"schedule {schedule_name!r}: missed must be 'latest' or 'backfill', not {missed!r}")
    if (
        isinstance(backfill_limit, bool)
        or not isinstance(backfill_limit, int)
        or not 1 <= backfill_limit <= MAX_BACKFILL
    ):
        raise ValueError(f"schedule {schedule_name!r}: backfill_limit must be an int from 1 to {MAX_BACKFILL}")
    params = job(schedule_name)
    return Schedule(
        name=schedule_name,
        cron=parsed,
        timezone=zone_name,
        task=task_name,
        args=json.loads(params["args"]),
        queue=params["queue"],
        priority=params["priority"],
        max_attempts=params["max_attempts"],
        missed=missed,
        backfill_limit=backfill_limit,
        skip_if_running=bool(skip_if_running),
    )


# -- the policy (pure) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one pass does for one schedule: fire `fires` (oldest first), then wake at `next_fire_at`."""

    fires: list[datetime]
    next_fire_at: datetime
    dropped: int = 0  # missed fire times not fired (capped at MISSED_COUNT_CAP)


def plan(schedule: Schedule, next_fire_at: datetime | None, now: datetime) -> Plan:
    """The fires due at `now` for a schedule whose earliest unfired time is `next_fire_at`.

    Due are the fire times in [next_fire_at, now]; 'latest' keeps the newest of them, 'backfill'
    the newest `backfill_limit`, so the work per pass is bounded however long the outage was.
    """
    if next_fire_at is None:
        return Plan(fires=[], next_fire_at=schedule.next_after(now))
    if next_fire_at > now:
        return Plan(fires=[], next_fire_at=next_fire_at)
    limit = 1 if schedule.missed == "latest" else schedule.backfill_limit
    newest_first: list[datetime] = []
    dropped = 0
    candidate = schedule.previous_at_or_before(now)
    while candidate >= next_fire_at:
        if len(newest_first) < limit:
            newest_first.append(candidate)
        else:
            dropped += 1
            if dropped >= MISSED_COUNT_CAP:
                break
        candidate = schedule.previous_at_or_before(candidate - _ONE_MICROSECOND)
    return Plan(fires=newest_first[::-1], next_fire_at=schedule.next_after(now), dropped=dropped)


# -- statement parameters ------------------------------------------------------------------------------


def sync_params(schedules: Sequence[Schedule], now: datetime) -> dict[str, list[Any]]:
    ordered = sorted(schedules, key=lambda s: s.name)  # one lock order for every process
    return {
        "names": [s.name for s in ordered],
        "crons": [s.expression for s in ordered],
        "timezones": [s.timezone for s in ordered],
        "tasks": [s.task for s in ordered],
        "args": [json.dumps(s.args) for s in ordered],
        "queues": [s.queue for s in ordered],
        "priorities": [s.priority for s in ordered],
        "missed": [s.missed for s in ordered],
        "backfill_limits": [s.backfill_limit for s in ordered],
        "skip_if_running": [s.skip_if_running for s in ordered],
        "next_fire_ats": [s.next_after(now) for s in ordered],
    }


def fire_params(schedule: Schedule, fire_at: datetime) -> dict[str, Any]:
    return {
        "schedule": schedule.name,
        "fire_at": fire_at,
        "next_fire_at": schedule.next_after(fire_at),
        "skip_if_running": schedule.skip_if_running,
        "queue": schedule.queue,
        "task": schedule.task,
        "args": json.dumps(schedule.args),
        "priority": schedule.priority,
        "max_attempts": schedule.max_attempts,
    }


# -- listing (the CLI's `cron list`) -------------------------------------------------------------------


def describe(
    schedules: Sequence[Schedule], rows: Sequence[Sequence[Any]] | None, now: datetime
) -> list[dict[str, Any]]:
    """Each schedule with its last and next fire; `rows` from `list_schedules`, None without a database."""
    stored = {name: (enabled, last, upcoming) for name, enabled, last, upcoming in rows or []}
    described = []
    for schedule in schedules:
        last_fire_at: datetime | None = None
        next_fire_at: datetime | None = schedule.next_after(now)
        if rows is None:
            state = "unknown"
        elif schedule.name not in stored:
            state = "not registered"
        else:
            enabled, last_fire_at, stored_next = stored[schedule.name]
            state = "enabled" if enabled else "disabled"
            next_fire_at = (stored_next or next_fire_at) if enabled else None
        described.append(
            {
                "name": schedule.name,
                "cron": schedule.expression,
                "timezone": schedule.timezone,
                "task": schedule.task,
                "state": state,
                "last_fire_at": _in_zone(last_fire_at, schedule.zone),
                "next_fire_at": _in_zone(next_fire_at, schedule.zone),
            }
        )
    return described


def _in_zone(value: datetime | None, zone: ZoneInfo) -> str | None:
    return None if value is None else value.astimezone(zone).isoformat()
