"""Rescue of jobs whose worker vanished, and pruning of finished jobs past their retention; the rescue carries the
worker's heartbeat in the registry (worker/registry.py)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg

from pgqueue.store import connections, statements
from pgqueue.store.rows import Rescued
from pgqueue.store.run import AsyncRunner, Command, count_async
from pgqueue.store.schema import JobStatus
from pgqueue.text import first_line
from pgqueue.worker.events import AS_EVENT, Event, JobEvent, Observers
from pgqueue.worker.registry import Refusal, Registry

log = logging.getLogger("pgqueue.maintenance")

PRUNE_EVERY = 600.0  # seconds; pruning is cheap but needs no hurry
PRUNE_BATCH = 5000
# Between the batches of a long prune: the server gets room for the claims of every worker. A batch of 5,000
# took 10-25 ms here on a table of millions of finished jobs, so a long prune runs at about half speed.
PRUNE_PAUSE = 0.02  # seconds


class Maintenance:
    """Run by every worker on a timer; every statement is safe to run from many workers at once."""

    def __init__(
        self,
        runner: AsyncRunner,
        *,
        retention: timedelta,
        dsn: str,
        registry: Registry | None = None,
        observers: Observers | None = None,
        worker_id: str = "",
        parked_held: Callable[[], bool] = lambda: True,
    ) -> None:
        self._runner = runner
        self._observers = observers if observers is not None else Observers()
        self._worker_id = worker_id
        self.retention = retention
        self._dsn = dsn
        self._registry = registry
        self._next_prune = time.time() + PRUNE_EVERY / 10
        # Held jobs are looked at in the first round (a worker that stopped may have left some whose limit is
        # gone) and then only after one of our claims parked some: only the parking claim can miss the slot that
        # freed as it parked (every later freeing wakes one itself), and an idle worker sends no statement for it.
        self._parked_held = parked_held
        self._look_at_held = True

    async def run(self, interval: float, on_lost: Callable[[BaseException], None]) -> None:
        """Every `interval` seconds (spread +/- 10 %, the first at random within it) until cancelled.
        `on_lost(exc)` reports a lost connection (the next round trip reconnects)."""
        next_round = time.time() + random.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.05, next_round - time.time()))
            next_round = time.time() + interval * random.uniform(0.9, 1.1)
            try:
                await self.run_once()
            except psycopg.OperationalError as exc:
                on_lost(exc)
            except Exception:
                log.exception("housekeeping failed; will try again")

    async def run_once(self) -> None:
        await self.rescue_lost_jobs()
        if self._parked_held() or self._look_at_held:
            self._look_at_held = False
            await self.wake_held()
        if time.time() >= self._next_prune:
            self._next_prune = time.time() + PRUNE_EVERY
            await self.prune()

    async def rescue_lost_jobs(self) -> int:
        """Jobs of vanished workers back to pending (or failed); returns how many are runnable again."""
        rescued = await self._rescue_with_heartbeat()
        for job in rescued:
            log.warning(
                "job %d: its worker was lost (lease expired); now %s%s",
                job.id,
                job.status,
                f" after attempt {job.attempts}" if job.counted else " (it had not started: attempt not counted)",
                extra=AS_EVENT,
            )
            if self._observers:
                self._observers.emit(
                    JobEvent(
                        Event.RESCUED,
                        job.id,
                        job.task,
                        job.queue,
                        job.attempts,
                        self._worker_id,
                        error="worker lost: lease expired",
                        status=job.status,
                    )
                )
        runnable = [job for job in rescued if job.status == JobStatus.PENDING]
        for queue_name in sorted({job.queue for job in runnable}):
            await self._runner.count(statements.notify_queue(queue_name))
        return len(runnable)

    async def _rescue_with_heartbeat(self) -> list[Rescued]:
        beat = self._registry.heartbeat() if self._registry is not None else None
        if beat is not None:
            try:
                return await self._runner.fetch(beat)
            except psycopg.OperationalError:
                raise
            except Refusal as exc:
                # The heartbeat's part was refused (the statement is one transaction: nothing was rescued
                # either); the registry is left alone for a while, the rescue goes on without it.
                assert self._registry is not None
                self._registry.refused(exc)
        return await self._runner.fetch(statements.rescue_lost_jobs())

    async def rescue_and_wake(self) -> int:
        """A burst worker's last look: lost jobs rescued and held ones woken; how many became runnable."""
        return await self.rescue_lost_jobs() + await self.wake_held()

    async def wake_held(self) -> int:
        """One held job per limit key back to pending (and every job held by a limit that is gone): the claim
        decides on it again. Catches a job parked by a claim just as the slot it wanted freed, which the
        freeing statement could not yet see as held."""
        woken = await self._runner.fetch(statements.wake_held(names=None, per_key=1))
        return sum(int(row.woken) for row in woken)

    async def prune(self) -> int:
        """Delete finished jobs past the retention in batches.

        The first batch goes over the main connection: it is usually all there is (a worker prunes every ten
        minutes). A longer prune (a first prune of a big history, a shortened retention) goes on over a
        connection of its own, opened for it: on the main connection, which runs one statement at a time, every
        claim would wait behind a batch (tens of milliseconds on a table of millions) for as long as it lasts.
        """
        statement = statements.prune_finished(retention=self.retention, batch=PRUNE_BATCH)
        deleted = await self._runner.count(statement)
        if deleted == PRUNE_BATCH:
            deleted = await self._prune_rest(statement, deleted)
        if deleted:
            log.info("pruned %d finished job(s) older than %s", deleted, self.retention)
        if self._registry is not None:
            await self._registry.prune()
        return deleted

    async def _prune_rest(self, statement: Command, deleted: int) -> int:
        """Go on pruning over a connection of its own; the total deleted (`deleted` so far)."""
        try:
            options = connections.connect_kwargs(self._dsn, "pgqueue prune")
            conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, prepare_threshold=None, **options)
            async with conn:
                while True:
                    await asyncio.sleep(PRUNE_PAUSE)
                    count = await count_async(conn, statement)
                    deleted += count
                    if count < PRUNE_BATCH:
                        return deleted
        except psycopg.OperationalError as exc:
            # Not the worker's connection: nothing to reconnect. The next prune takes up where this one stopped.
            log.warning("pruning stopped after %d job(s): %s", deleted, first_line(exc))
            return deleted
