"""Claiming ahead of free slots (prefetch): every job still runs once, and a stopping worker hands back the
jobs it claimed but never started, without counting an attempt."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from pgqueue import Queue, Worker, WorkerSettings


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    q = Queue(dsn)
    yield q
    q.close()


def test_prefetching_worker_runs_every_job_exactly_once(queue: Queue, db: psycopg.Connection) -> None:
    runs: Counter[int] = Counter()

    @queue.task(name="count")
    async def count(n: int) -> None:
        runs[n] += 1

    queue.enqueue_many([("count", {"n": n}) for n in range(2000)])
    worker = Worker(queue, WorkerSettings(burst=True, concurrency=4, prefetch=8))
    asyncio.run(worker.run_async())

    assert runs == Counter(range(2000))
    assert db.execute(
        "SELECT status, min(attempts), max(attempts), count(*) FROM pgqueue.jobs GROUP BY 1"
    ).fetchall() == [("completed", 1, 1, 2000)]


def test_stopping_worker_hands_back_prefetched_jobs_unattempted(queue: Queue, db: psycopg.Connection) -> None:
    release = threading.Event()
    started: list[int] = []

    @queue.task(name="quick")
    async def quick(n: int) -> None:
        started.append(n)

    @queue.task(name="blocker")
    def blocker(n: int) -> None:
        started.append(n)
        release.wait(10)

    # Quick jobs first, so the worker learns its jobs are short and starts claiming ahead; the blocker
    # then holds the only slot while claimed jobs wait for it.
    queue.enqueue_many([("quick", {"n": n}) for n in range(5)])
    (blocker_id,) = queue.enqueue_many([("blocker", {"n": 5})])
    queue.enqueue_many([("quick", {"n": n}) for n in range(6, 30)])

    worker = Worker(queue, WorkerSettings(concurrency=1, prefetch=4, grace_period=10))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run_async(),))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (5 in started and len(worker.prefetched) == 4) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 5 in started and len(worker.prefetched) == 4, (started, list(worker.prefetched))
        held = [claimed.id for claimed in worker.prefetched]
        held_numbers = [json.loads(claimed.args_text)["n"] for claimed in worker.prefetched]
        assert db.execute(
            "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND status = 'running'", (held,)
        ).fetchone() == (4,)
        loop.call_soon_threadsafe(worker.stop)
        # Handed back while the blocker still runs: other workers need not wait for the grace period.
        deadline = time.monotonic() + 10
        while db.execute(
            "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND status = 'pending'", (held,)
        ).fetchone() != (4,):
            assert time.monotonic() < deadline, "prefetched jobs were not handed back"
            time.sleep(0.01)
    finally:
        release.set()
        thread.join(30)
        loop.close()
    assert not thread.is_alive()

    rows = db.execute(
        "SELECT status, attempts, worker_id, started_at FROM pgqueue.jobs WHERE id = ANY(%s)", (held,)
    ).fetchall()
    assert rows == [("pending", 0, None, None)] * 4
    assert db.execute("SELECT status, attempts FROM pgqueue.jobs WHERE id = %s", (blocker_id,)).fetchone() == (
        "completed",
        1,
    )
    assert not set(held_numbers) & set(started)  # nothing handed back had run
    assert len(started) == len(set(started))
