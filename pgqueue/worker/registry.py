"""The worker's row in the registry (pgqueue.workers), which the dashboard reads.

Written when the worker starts, carried as a heartbeat by the rescue statement the maintenance round sends
anyway (so an idle worker sends nothing extra), marked stopped on a clean exit, and pruned by any worker once
it has been silent for KEEP_SILENT. The registry is for people to look at: a worker whose writes to it are
refused (no privilege on the table, a database not migrated to 0007) says so once and works on without it,
trying again every RETRY_AFTER.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg

from pgqueue.errors import PgQueueError
from pgqueue.store import statements
from pgqueue.store.rows import Rescued
from pgqueue.store.run import AsyncRunner
from pgqueue.store.statements import Query, WorkerEntry
from pgqueue.text import first_line

log = logging.getLogger("pgqueue.worker")

KEEP_SILENT = timedelta(days=1)  # rows of workers not heard from for this long are deleted
PRUNE_BATCH = 1000
RETRY_AFTER = 600.0  # seconds between attempts once the registry refused a write
STOP_TIMEOUT = 5.0  # seconds a stopping worker spends at most on marking its row stopped

# What a refused registry write raises: a driver error that is not about the connection (those are the
# caller's to handle, as for any other statement), or the store's mapping of one (schema behind the code).
Refusal = (psycopg.Error, PgQueueError)


class Registry:
    """One worker's registry row. `busy()` counts its busy slots (the row's `running`)."""

    def __init__(self, runner: AsyncRunner, entry: WorkerEntry, busy: Callable[[], int]) -> None:
        self._runner = runner
        self.entry = entry
        self._busy = busy
        self._paused_until = 0.0  # monotonic time before which no write is tried (after a refusal)

    @property
    def writing(self) -> bool:
        return time.monotonic() >= self._paused_until

    async def register(self) -> None:
        """The row as the worker starts. A failure costs only the registry: the first heartbeat writes it."""
        try:
            await self._runner.count(statements.register_worker(self.entry))
        except psycopg.OperationalError as exc:
            log.debug("could not register in pgqueue.workers (%s); the heartbeat will", first_line(exc))
        except Refusal as exc:
            self.refused(exc)

    def heartbeat(self) -> Query[Rescued] | None:
        """The rescue statement with this worker's heartbeat, or None while the registry is refusing writes."""
        if not self.writing:
            return None
        return statements.heartbeat_and_rescue_lost_jobs(self.entry, running=self._busy())

    def refused(self, exc: BaseException) -> None:
        """A write was refused: say so, and leave the registry alone for RETRY_AFTER."""
        self._paused_until = time.monotonic() + RETRY_AFTER
        log.warning(
            "worker %s cannot write its row in pgqueue.workers (%s); it works on without it and tries again in %.0f s",
            self.entry.worker_id,
            first_line(exc),
            RETRY_AFTER,
        )

    async def stopped(self) -> None:
        """A clean stop: the row says so. Best effort: a database that does not answer soon is not waited for."""
        if not self.writing:
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await self._runner.count(statements.worker_stopped(self.entry.worker_id))
        except (TimeoutError, *Refusal) as exc:
            log.debug("could not mark the worker stopped in pgqueue.workers: %s", first_line(exc))

    async def prune(self) -> int:
        """Delete the rows of workers silent for KEEP_SILENT; returns how many."""
        if not self.writing:
            return 0
        deleted = 0
        try:
            while True:
                count = await self._runner.count(statements.prune_workers(keep=KEEP_SILENT, batch=PRUNE_BATCH))
                deleted += count
                if count < PRUNE_BATCH:
                    break
        except psycopg.OperationalError:
            raise
        except Refusal as exc:
            # A worker role granted before pruning needed DELETE here: the grants, run again, give it.
            log.warning(
                "could not prune pgqueue.workers (%s); `pgqueue grant` gives the worker role what it needs",
                first_line(exc),
            )
        if deleted:
            log.info("pruned %d row(s) of workers silent for over %s", deleted, KEEP_SILENT)
        return deleted
