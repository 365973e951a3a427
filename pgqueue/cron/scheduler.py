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
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from pgqueue.cron.schedule import MISSED_COUNT_CAP, Plan, Schedule, fire_params, plan, sync_params
from pgqueue.store import statements
from pgqueue.store.run import AsyncRunner
from pgqueue.text import first_line

log = logging.getLogger("pgqueue.scheduler")

MAX_SLEEP = 60.0  # seconds; bounds how long a change by another process (or a clock jump) goes unnoticed
RETRY_DELAY = 5.0  # seconds after a failed pass
PRUNE_EVERY = 3600.0  # seconds between prunes of old schedule_fires rows
PRUNE_BATCH = 5000


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Fires an app's schedules through `runner` (one autocommitted statement per call: the worker's connection
    owner, or store.run.OnConnection).

    Any number of Schedulers may run against one database. `now` is injectable for tests; `run`
    sleeps on the real clock until the earliest next fire, at most `max_sleep` seconds.
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        runner: AsyncRunner,
        *,
        now: Callable[[], datetime] = _utc_now,
        max_sleep: float = MAX_SLEEP,
        retention: timedelta | None = None,
    ) -> None:
        self.schedules = list(schedules)
        self._runner = runner
        self._now = now
        self.max_sleep = max_sleep
        self.retention = retention
        self._names = [s.name for s in self.schedules]
        self._next_prune = time.monotonic() + PRUNE_EVERY / 10

    async def sync(self) -> None:
        """Register the declared schedules; disable those in the database that are no longer declared."""
        changes = await self._runner.fetch(statements.sync_schedules(sync_params(self.schedules, self._now())))
        disabled = sorted(change.name for change in changes if change.change == "disabled")
        log.info("scheduler: %d schedule(s) registered: %s", len(self._names), ", ".join(sorted(self._names)))
        for name in disabled:
            log.warning("scheduler: schedule %s is no longer declared by this app: disabled", name)

    async def tick(self) -> datetime | None:
        """One pass: fire what is due now; return the earliest next fire (None: nothing enabled)."""
        now = self._now()
        rows = await self._runner.fetch(statements.schedule_states(self._names))
        states = {state.name: (state.enabled, state.next_fire_at) for state in rows}
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
            "+" if step.dropped >= MISSED_COUNT_CAP else "",
            step.fires[0].isoformat(),
            policy,
        )

    async def fire(self, schedule: Schedule, fire_at: datetime) -> tuple[int | None, str | None] | None:
        """Fire once for `fire_at`; None when another process already did (or the schedule is disabled)."""
        fires = await self._runner.fetch(statements.fire_schedule(fire_params(schedule, fire_at)))
        if not fires:
            return None
        job_id, skipped_reason = fires[0]
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
            rows = await self._runner.fetch(
                statements.prune_schedule_fires(retention=self.retention, batch=PRUNE_BATCH)
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
            log.warning("scheduler: database unreachable while %s (%s); retrying", what, first_line(exc))
        else:
            log.exception("scheduler: %s failed; retrying", what)
