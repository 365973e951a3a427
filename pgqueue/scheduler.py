"""Cron schedules: declared in code, stored in `pgqueue.schedules`, fired as job rows exactly once.

Declaring
---------
::

    @queue.periodic(cron="0 9 * * 1-5", name="daily_report", timezone="Europe/Berlin", args={"kind": "sales"})
    @queue.task
    def send_report(kind: str) -> None: ...

`periodic` also registers a plain function as a task, so `@queue.task` underneath is optional; it
must be the outer decorator when both are used. The expression, the zone, the policies and the
arguments are checked when the module is imported (`CronError` or `ValueError` with a clear message).
A six-field expression has a leading seconds field. Every `pgqueue work` process of an app that
declares schedules runs the scheduler; there is no leader.

When a schedule fires
---------------------
Expressions match wall-clock time in the schedule's zone (UTC by default). A wall time skipped by
the spring DST jump fires once, at the instant of the jump; a wall time repeated in autumn fires
once, at its first occurrence. The job's `run_at` is the fire time, and `jobs.schedule` names the
schedule.

Exactly once
------------
A fire is one statement: it locks the schedule row, checks that the fire time is not before
`next_fire_at`, records the fire in `schedule_fires` (primary key: schedule and fire time) and only
then inserts the job, so however many processes and hosts try, one job row exists per fire time.
A process killed at any instant leaves either the whole fire or nothing. Each process sleeps until
the earliest next fire (at most a minute), so an idle worker costs about one statement a minute.
Fire times follow the workers' clocks; a host whose clock runs ahead fires early, but the job's
`run_at` is the fire time, so it still starts on time by the database's clock.

Missed fires
------------
When no worker ran for a while, `missed="latest"` (the default) fires once, for the latest missed
time; `missed="backfill"` fires each missed time, oldest first, but at most the newest
`backfill_limit` of them (default 10, at most 1000); older ones are dropped with one log line.
Time during which a schedule was disabled, or before its expression or zone changed, is never
backfilled.

Overlap
-------
With `skip_if_running=True`, a fire whose previous fire's job is still pending (including waiting
for a retry) or running inserts no job; it is recorded in `schedule_fires` with a `skipped_reason`.

Removing a schedule, rolling deploys
------------------------------------
Each worker registers its app's schedules when it starts and disables (`enabled = false`, no
`next_fire_at`) every schedule in the database its app does not declare; disabled schedules never
fire. Re-adding a schedule enables it again from that moment on. While old and new code run side by
side, each process fires the definition it was started with, and only while its row is enabled: a
schedule removed in the new code stops as soon as the first new process starts, and one added in
the new code starts then. A process of the old code that (re)starts mid-deploy re-registers the old
set until the next new process starts, so once every old process is replaced, the new code's set
stands. An app that declares no schedule runs no scheduler and changes nothing; apps that do and
share one database must declare the same set (say, one shared module), or each disables the other's
when it starts. `enabled` belongs to the workers: an `UPDATE` of it lasts until the next worker starts.

In SQL: `SELECT name, cron, timezone, enabled, last_fire_at, next_fire_at FROM pgqueue.schedules`,
and `SELECT * FROM pgqueue.schedule_fires ORDER BY fire_at DESC` for each fire with its job or the
reason it was skipped. Fires older than the worker's retention are pruned, except each schedule's
latest fire with a job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, LiteralString
from zoneinfo import ZoneInfo

import psycopg

from pgqueue.cron import Cron, CronError, parse_timezone
from pgqueue.sql import QUERIES

if TYPE_CHECKING:
    from pgqueue.queue import Queue
    from pgqueue.tasks import Task
    from pgqueue.worker import Worker

log = logging.getLogger("pgqueue.scheduler")

MISSED_POLICIES = ("latest", "backfill")
MAX_BACKFILL = 1000
MAX_SLEEP = 60.0  # seconds; bounds how long a change by another process (or a clock jump) goes unnoticed
RETRY_DELAY = 5.0  # seconds after a failed pass
PRUNE_EVERY = 3600.0  # seconds between prunes of old schedule_fires rows
PRUNE_BATCH = 5000
_MISSED_COUNT_CAP = 1000  # counting dropped fires stops here; only a log line uses the count
_ONE_MICROSECOND = timedelta(microseconds=1)

Execute = Callable[[LiteralString, "dict[str, Any] | None"], Awaitable[Sequence[tuple[Any, ...]]]]


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
    queue: Queue,
    task: Task,
    *,
    cron: str,
    name: str | None = None,
    timezone: str | None = None,
    args: dict[str, Any] | None = None,
    missed: str = "latest",
    backfill_limit: int = 10,
    skip_if_running: bool = False,
    queue_name: str | None = None,
    priority: int | None = None,
) -> Schedule:
    """Validate a declaration (expression, zone, policies, arguments) and build its Schedule."""
    schedule_name = task.name if name is None else name
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
    params = queue.job_params(task, args, queue=queue_name, priority=priority, schedule=schedule_name)
    return Schedule(
        name=schedule_name,
        cron=parsed,
        timezone=zone_name,
        task=task.name,
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
    dropped: int = 0  # missed fire times not fired (capped at _MISSED_COUNT_CAP)


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
            if dropped >= _MISSED_COUNT_CAP:
                break
        candidate = schedule.previous_at_or_before(candidate - _ONE_MICROSECOND)
    return Plan(fires=newest_first[::-1], next_fire_at=schedule.next_after(now), dropped=dropped)


# -- the database side --------------------------------------------------------------------------------


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


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Fires an app's schedules through `execute` (one autocommitted statement per call).

    Any number of Schedulers may run against one database. `now` is injectable for tests; `run`
    sleeps on the real clock until the earliest next fire, at most `max_sleep` seconds.
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        execute: Execute,
        *,
        now: Callable[[], datetime] = _utc_now,
        max_sleep: float = MAX_SLEEP,
        retention: timedelta | None = None,
    ) -> None:
        self.schedules = list(schedules)
        self._execute = execute
        self._now = now
        self.max_sleep = max_sleep
        self.retention = retention
        self._names = [s.name for s in self.schedules]
        self._next_prune = time.monotonic() + PRUNE_EVERY / 10

    @classmethod
    def for_worker(cls, worker: Worker) -> Scheduler:
        return cls(worker.queue.periodic_tasks, worker.execute, retention=worker.settings.retention)

    async def sync(self) -> None:
        """Register the declared schedules; disable those in the database that are no longer declared."""
        rows = await self._execute(QUERIES["sync_schedules"], sync_params(self.schedules, self._now()))
        disabled = sorted(name for change, name in rows if change == "disabled")
        log.info("scheduler: %d schedule(s) registered: %s", len(self._names), ", ".join(sorted(self._names)))
        for name in disabled:
            log.warning("scheduler: schedule %s is no longer declared by this app: disabled", name)

    async def tick(self) -> datetime | None:
        """One pass: fire what is due now; return the earliest next fire (None: nothing enabled)."""
        now = self._now()
        rows = await self._execute(QUERIES["schedule_states"], {"names": self._names})
        states = {name: (enabled, next_fire_at) for name, enabled, next_fire_at in rows}
        if len(states) < len(self._names):
            # A row vanished (deleted by hand): register again, fire on the next pass.
            await self.sync()
            return now
        wake_at: datetime | None = None
        for schedule in self.schedules:
            enabled, next_fire_at = states[schedule.name]
            if not enabled:
                continue
            step = plan(schedule, next_fire_at, now)
            for index, fire_at in enumerate(step.fires):
                fired = await self.fire(schedule, fire_at)
                if index == 0 and fired is not None and step.dropped:
                    self._log_dropped(schedule, step)  # only the process that won the first fire says so
            wake_at = step.next_fire_at if wake_at is None else min(wake_at, step.next_fire_at)
        return wake_at

    @staticmethod
    def _log_dropped(schedule: Schedule, step: Plan) -> None:
        policy = "missed=latest" if schedule.missed == "latest" else f"backfill_limit={schedule.backfill_limit}"
        log.warning(
            "schedule %s: %d%s missed fire time(s) before %s not fired (%s)",
            schedule.name,
            step.dropped,
            "+" if step.dropped >= _MISSED_COUNT_CAP else "",
            step.fires[0].isoformat(),
            policy,
        )

    async def fire(self, schedule: Schedule, fire_at: datetime) -> tuple[int | None, str | None] | None:
        """Fire once for `fire_at`; None when another process already did (or the schedule is disabled)."""
        rows = await self._execute(QUERIES["fire_schedule"], fire_params(schedule, fire_at))
        if not rows:
            return None
        job_id, skipped_reason = rows[0]
        if job_id is not None:
            log.info("schedule %s fired for %s: job %d", schedule.name, fire_at.isoformat(), job_id)
        else:
            log.info("schedule %s skipped its fire for %s: %s", schedule.name, fire_at.isoformat(), skipped_reason)
        return job_id, skipped_reason

    async def prune(self) -> int:
        """Delete fires older than the retention (each schedule's latest fire with a job stays)."""
        if self.retention is None:
            return 0
        deleted = 0
        while True:
            rows = await self._execute(
                QUERIES["prune_schedule_fires"], {"retention": self.retention, "batch": PRUNE_BATCH}
            )
            deleted += len(rows)
            if len(rows) < PRUNE_BATCH:
                break
        if deleted:
            log.info("pruned %d schedule fire(s) older than %s", deleted, self.retention)
        return deleted

    async def run(self) -> None:
        """Register, then fire until cancelled. Never polls: sleeps until the earliest next fire."""
        while True:
            try:
                await self.sync()
                break
            except Exception as exc:
                self._log_failure("registering schedules", exc)
                await asyncio.sleep(RETRY_DELAY)
        while True:
            try:
                wake_at = await self.tick()
                if time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + PRUNE_EVERY
                    await self.prune()
            except Exception as exc:
                self._log_failure("firing schedules", exc)
                await asyncio.sleep(RETRY_DELAY)
                continue
            delay = self.max_sleep
            if wake_at is not None:
                # A few ms late rather than early: an early wake would find nothing due and loop once more.
                delay = min(delay, (wake_at - self._now()).total_seconds() + 0.005)
            await asyncio.sleep(max(0.0, delay))

    @staticmethod
    def _log_failure(what: str, exc: Exception) -> None:
        if isinstance(exc, psycopg.OperationalError):
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("scheduler: database unreachable while %s (%s); retrying", what, first_line)
        else:
            log.exception("scheduler: %s failed; retrying", what)


# -- listing (the CLI's `cron list`) -------------------------------------------------------------------


def describe(
    schedules: Sequence[Schedule], rows: Sequence[tuple[Any, ...]] | None, now: datetime
) -> list[dict[str, Any]]:
    """Each schedule with its last and next fire; `rows` from `list_schedules`, None without a database."""
    stored = {row[0]: row[1:] for row in rows or []}
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
