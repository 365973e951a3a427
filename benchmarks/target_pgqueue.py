"""pgqueue through its public API and its `pgqueue work` command."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from target_base import Target


class PgqueueClient:
    def __init__(self, queue: Any, api: str) -> None:
        self.queue = queue
        self.api = api

    async def enqueue(self, n: int, sent: float) -> None:
        if self.api == "async":
            await self.queue.enqueue_async("noop", {"n": n, "sent": sent})
        else:
            self.queue.enqueue("noop", {"n": n, "sent": sent})

    async def enqueue_many(self, ns: Sequence[int], sent: float = 0.0) -> None:
        jobs = [("noop", {"n": n, "sent": sent}) for n in ns]
        if self.api == "async":
            await self.queue.enqueue_many_async(jobs)
        else:
            self.queue.enqueue_many(jobs)


class Pgqueue(Target):
    name = "pgqueue"
    default_concurrency = 16
    sweep = (16, 64, 256)
    sql_remaining = (
        "SELECT EXISTS (SELECT FROM pgqueue.jobs WHERE status = 'pending') "
        "OR EXISTS (SELECT FROM pgqueue.jobs WHERE status = 'running')"
    )
    sql_done = "SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'"

    def __init__(self, api: str = "sync", task: str = "noop") -> None:
        import pgqueue

        self.api = api
        self.task = task
        self.version = getattr(pgqueue, "__version__", "dev")

    def install(self, dsn: str) -> None:
        from pgqueue.store.migrate import upgrade

        upgrade(dsn)

    def reset(self, conn: Any) -> None:
        conn.execute("TRUNCATE pgqueue.jobs")

    @asynccontextmanager
    async def client(self, dsn: str) -> AsyncIterator[PgqueueClient]:
        from app_pgqueue import queue

        queue.dsn = dsn
        try:
            yield PgqueueClient(queue, self.api)
        finally:
            await queue.aclose()

    def worker_commands(self, dsn: str, processes: int, concurrency: int) -> list[list[str]]:
        command = [sys.executable, "-m", "pgqueue", "work", "--app", "app_pgqueue", "--dsn", dsn]
        command += ["--concurrency", str(concurrency)]
        if processes > 1:
            command += ["--workers", str(processes)]  # pgqueue's own supervisor: one command
        return [command]

    def preload_finished(self, conn: Any, count: int) -> None:
        conn.execute(
            "INSERT INTO pgqueue.jobs (task, args, status, attempts, started_at, finished_at) "
            "SELECT 'noop', jsonb_build_object('n', -i), 'completed', 1, now(), now() FROM generate_series(1, %s) i",
            (count,),
        )
