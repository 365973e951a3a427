"""Rescue of jobs whose worker vanished, and pruning of finished jobs past their retention."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pgqueue.sql import QUERIES

if TYPE_CHECKING:
    from pgqueue.worker import Worker

log = logging.getLogger("pgqueue.maintenance")

PRUNE_EVERY = 600.0  # seconds; pruning is cheap but needs no hurry
PRUNE_BATCH = 5000


class Maintenance:
    """Run by every worker on a timer; every statement is safe to run from many workers at once."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._next_prune = time.time() + PRUNE_EVERY / 10

    async def run_once(self) -> None:
        await self.rescue_lost_jobs()
        if time.time() >= self._next_prune:
            self._next_prune = time.time() + PRUNE_EVERY
            await self.prune()

    async def rescue_lost_jobs(self) -> int:
        """Jobs of vanished workers back to pending (or failed); returns how many are runnable again."""
        rows = await self.worker.execute(QUERIES["rescue_lost_jobs"])
        requeued_queues = sorted({queue for _id, queue, status, _attempts, _counted in rows if status == "pending"})
        for job_id, _queue, status, attempts, counted in rows:
            log.warning(
                "job %d: its worker was lost (lease expired); now %s%s",
                job_id,
                status,
                f" after attempt {attempts}" if counted else " (it had not started: attempt not counted)",
            )
        for queue in requeued_queues:
            await self.worker.execute(QUERIES["notify_queue"], {"queue": queue})
        return sum(1 for row in rows if row[2] == "pending")

    async def prune(self) -> int:
        deleted = 0
        while True:
            count = await self.worker.execute_count(
                QUERIES["prune_finished"], {"retention": self.worker.settings.retention, "batch": PRUNE_BATCH}
            )
            deleted += count
            if count < PRUNE_BATCH:
                break
        if deleted:
            log.info("pruned %d finished job(s) older than %s", deleted, self.worker.settings.retention)
        return deleted
