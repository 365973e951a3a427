"""Rescue of jobs whose worker vanished, and pruning of finished jobs past their retention."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg

from pgqueue.store import statements
from pgqueue.store.run import AsyncRunner
from pgqueue.store.schema import JobStatus
from pgqueue.worker.events import Event, JobEvent, Observers

log = logging.getLogger("pgqueue.maintenance")

PRUNE_EVERY = 600.0  # seconds; pruning is cheap but needs no hurry
PRUNE_BATCH = 5000


class Maintenance:
    """Run by every worker on a timer; every statement is safe to run from many workers at once."""

    def __init__(
        self, runner: AsyncRunner, *, retention: timedelta, observers: Observers | None = None, worker_id: str = ""
    ) -> None:
        self._runner = runner
        self._observers = observers if observers is not None else Observers()
        self._worker_id = worker_id
        self.retention = retention
        self._next_prune = time.time() + PRUNE_EVERY / 10

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
        if time.time() >= self._next_prune:
            self._next_prune = time.time() + PRUNE_EVERY
            await self.prune()

    async def rescue_lost_jobs(self) -> int:
        """Jobs of vanished workers back to pending (or failed); returns how many are runnable again."""
        rescued = await self._runner.fetch(statements.rescue_lost_jobs())
        for job in rescued:
            log.warning(
                "job %d: its worker was lost (lease expired); now %s%s",
                job.id,
                job.status,
                f" after attempt {job.attempts}" if job.counted else " (it had not started: attempt not counted)",
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

    async def prune(self) -> int:
        deleted = 0
        while True:
            count = await self._runner.count(statements.prune_finished(retention=self.retention, batch=PRUNE_BATCH))
            deleted += count
            if count < PRUNE_BATCH:
                break
        if deleted:
            log.info("pruned %d finished job(s) older than %s", deleted, self.retention)
        return deleted
