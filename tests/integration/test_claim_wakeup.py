"""A wake-up that arrives while a claim is on its way is not lost (the job would wait for the next poll)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg

from pgqueue import Queue, Worker, WorkerSettings


def test_notification_during_a_claim_is_not_lost(dsn: str, db: psycopg.Connection) -> None:
    queue = Queue(dsn)
    ran = threading.Event()

    @queue.task(name="mark")
    async def mark() -> None:
        ran.set()

    # Without the trigger only the wake-up below (or the 60 s poll) can bring the job to the worker.
    db.execute("ALTER TABLE pgqueue.jobs DISABLE TRIGGER USER")
    worker = Worker(queue, WorkerSettings(poll_interval=60))
    armed = threading.Event()
    # The claim loop claims through its completer (flush_and_claim): this one sends a wake-up right after a
    # claim that found nothing, as a notification arriving while the claim was on its way would.
    claim = worker.completer.flush_and_claim

    async def claim_then_notify(limit: int, free: int | None = None) -> Any:
        rows = await claim(limit, free)
        if armed.is_set() and not rows:
            armed.clear()
            # As if this job committed after the claim's snapshot and its notification came in meanwhile.
            await asyncio.to_thread(db.execute, "INSERT INTO pgqueue.jobs (task) VALUES ('mark')")
            worker.wake()
        return rows

    worker.completer.flush_and_claim = claim_then_notify  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run_async(),))
    thread.start()
    try:
        time.sleep(0.5)  # idle: its start-up claim found nothing
        armed.set()
        loop.call_soon_threadsafe(worker.wake)
        assert ran.wait(10), "the job waited for the poll: the wake-up during the claim was lost"
    finally:
        loop.call_soon_threadsafe(worker.stop)
        thread.join(30)
        loop.close()
        queue.close()
    assert not thread.is_alive()
