"""Test mode for an app's own tests: run the jobs the app enqueued now, in the test's process, against the real
database, and say how each ended (`queue.drain()`, `await queue.drain_async()`).

A drain is a burst worker (pgqueue.worker.Worker with burst=True) on the queue's tasks: the same claim, handler,
retry_on/Discard/Snooze rules and outcome writes as production, one job at a time by default so that a test sees
jobs run in the order they were enqueued. It runs what is runnable now, including jobs the handlers enqueue and
retries due now; a retry waiting for its backoff or a snoozed job stays pending and is reported so. Cron
schedules are not fired by a drain. The fixtures for pytest are in pgqueue.pytest_plugin.
"""

from __future__ import annotations

import asyncio

import psycopg

from pgqueue.errors import PgQueueError
from pgqueue.queue.queue import Queue
from pgqueue.settings import WorkerSettings
from pgqueue.store import statements
from pgqueue.store.connections import connect_kwargs
from pgqueue.store.errors import database_errors
from pgqueue.store.rows import DrainedJob
from pgqueue.store.run import fetch_async
from pgqueue.worker.worker import Worker

# The most jobs one drain reports as runnable at its start (a test with more is not a unit test).
MAX_REPORTED = 100_000


async def drain_async(queue: Queue, *, concurrency: int = 1) -> list[DrainedJob]:
    """Run every runnable job now; return each job that ran (or was runnable), as it is afterwards, by id."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int of at least 1, got {concurrency!r:.40}")
    dsn = queue.dsn
    # The queue's tasks without its schedules: a drain runs what the test enqueued, it fires no cron.
    view = Queue(dsn, max_attempts=queue.default_max_attempts)
    view.tasks = queue.tasks
    worker = Worker(view, WorkerSettings(burst=True, concurrency=concurrency), dsn=dsn)
    with database_errors():
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **connect_kwargs(dsn, "pgqueue drain"))
        async with conn:
            runnable = await fetch_async(conn, statements.runnable_job_ids(MAX_REPORTED))
            await worker.run_async()
            return await fetch_async(conn, statements.drained_jobs(ids=runnable, worker_id=worker.id))


def drain(queue: Queue, *, concurrency: int = 1) -> list[DrainedJob]:
    """`drain_async` for sync code (it runs its own event loop: inside a running one, await drain_async)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(drain_async(queue, concurrency=concurrency))
    raise PgQueueError("queue.drain() was called inside a running event loop: use `await queue.drain_async()`")
