"""The worker in-process against a real database: running, retrying, failing, ordering, waking."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from pgqueue import Fixed, Queue, Worker, WorkerSettings, current_job


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    q = Queue(dsn)
    yield q
    q.close()


def run_burst(queue: Queue, **settings) -> Worker:
    worker = Worker(queue, WorkerSettings(burst=True, **settings))
    asyncio.run(worker.run_async())
    return worker


class Background:
    """A worker running in a thread, stopped (gracefully) on exit."""

    def __init__(self, queue: Queue, **settings) -> None:
        self.worker = Worker(queue, WorkerSettings(**settings))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.worker.run_async(),))

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.loop.close()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def statuses(db: psycopg.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT status, count(*) FROM pgqueue.jobs GROUP BY status").fetchall())


def test_sync_and_async_handlers_run_with_results(queue: Queue, db: psycopg.Connection) -> None:
    seen: list[tuple[str, int]] = []

    @queue.task
    def double(x: int) -> int:
        seen.append(("sync", x))
        return 2 * x

    @queue.task
    async def triple(x: int) -> dict[str, int]:
        await asyncio.sleep(0.01)
        seen.append(("async", x))
        return {"value": 3 * x}

    queue.enqueue_many([("double", {"x": i}) for i in range(50)] + [("triple", {"x": i}) for i in range(50)])
    worker = run_burst(queue, concurrency=8)
    assert sorted(seen) == sorted([("sync", i) for i in range(50)] + [("async", i) for i in range(50)])
    assert worker.stats["completed"] == 100
    rows = db.execute(
        "SELECT task, args->>'x', result, attempts, started_at IS NOT NULL, finished_at >= started_at "
        "FROM pgqueue.jobs WHERE status = 'completed'"
    ).fetchall()
    assert len(rows) == 100
    for task, x, result, attempts, started, ordered in rows:
        assert attempts == 1 and started and ordered
        assert result == (2 * int(x) if task == "double" else {"value": 3 * int(x)})


def test_retry_then_success_keeps_every_error(queue: Queue, db: psycopg.Connection) -> None:
    attempts: list[int] = []

    @queue.task(retry=Fixed(0.05), max_attempts=4)
    def flaky() -> None:
        attempts.append(current_job().attempt)
        if len(attempts) < 3:
            raise ValueError(f"boom {len(attempts)}")

    job_id = queue.enqueue("flaky")
    for _ in range(5):  # burst exits while the retry waits for its backoff
        run_burst(queue)
        if db.execute("SELECT status FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()[0] == "completed":
            break
        time.sleep(0.06)
    status, count, error, errors = db.execute(
        "SELECT status, attempts, error, errors FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert (status, count, attempts) == ("completed", 3, [1, 2, 3])
    assert error == "ValueError: boom 2"  # the last failure stays visible after success
    assert [(e["attempt"], e["error"]) for e in errors] == [(1, "ValueError: boom 1"), (2, "ValueError: boom 2")]
    assert all("Traceback" in e["traceback"] and e["worker"] for e in errors)


def test_final_failure_after_max_attempts_with_backoff(queue: Queue, db: psycopg.Connection) -> None:
    @queue.task(max_attempts=3, retry=Fixed(0.2))
    async def broken() -> None:
        raise RuntimeError("still broken")

    job_id = queue.enqueue("broken")
    run_times = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run_burst(queue)
        status, run_at = db.execute("SELECT status, run_at FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
        run_times.append(run_at)
        if status == "failed":
            break
        time.sleep(0.05)
    status, attempts, errors, finished = db.execute(
        "SELECT status, attempts, errors, finished_at IS NOT NULL FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert (status, attempts, finished) == ("failed", 3, True)
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    gaps = sorted({b - a for a, b in itertools.pairwise(run_times) if b != a})
    assert gaps and all(g >= timedelta(seconds=0.2) for g in gaps)  # each retry waited for its backoff


def test_poison_jobs_fail_clearly_and_worker_goes_on(queue: Queue, db: psycopg.Connection) -> None:
    done: list[int] = []

    @queue.task
    def fine(n: int) -> None:
        done.append(n)

    @queue.task
    def exits() -> None:
        raise SystemExit(3)

    @queue.task
    def unserialisable() -> object:
        return object()

    db.execute("INSERT INTO pgqueue.jobs (task, args) VALUES ('no_such_task', '{}')")
    db.execute("""INSERT INTO pgqueue.jobs (task, args) VALUES ('fine', '{"wrong": 1}')""")
    db.execute("""INSERT INTO pgqueue.jobs (task, args) VALUES ('fine', '[1, 2]')""")
    db.execute("INSERT INTO pgqueue.jobs (task, max_attempts) VALUES ('exits', 1)")
    db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('unserialisable')")
    queue.enqueue("fine", {"n": 1})
    run_burst(queue)
    assert done == [1]
    errors = dict(db.execute("SELECT task || ':' || args::text, error FROM pgqueue.jobs WHERE status = 'failed'"))
    assert errors == {
        "no_such_task:{}": "unknown task 'no_such_task': no handler registered in this worker",
        'fine:{"wrong": 1}': "arguments do not fit task 'fine': missing a required argument: 'n'",
        "fine:[1, 2]": "args must be a JSON object, got list",
        "exits:{}": "SystemExit: 3",
        "unserialisable:{}": errors["unserialisable:{}"],
    }
    assert "not JSON-serialisable" in errors["unserialisable:{}"]


def test_priority_then_run_at_then_id(queue: Queue, db: psycopg.Connection) -> None:
    order: list[str] = []

    @queue.task
    def mark(label: str) -> None:
        order.append(label)

    queue.enqueue("mark", {"label": "low-1"}, priority=0)
    queue.enqueue("mark", {"label": "high"}, priority=10)
    queue.enqueue("mark", {"label": "low-2"}, priority=0)
    queue.enqueue("mark", {"label": "mid"}, priority=5)
    run_burst(queue, concurrency=1)
    assert order == ["high", "mid", "low-1", "low-2"]


def test_named_queues_are_honoured(queue: Queue, db: psycopg.Connection) -> None:
    ran: list[str] = []

    @queue.task
    def where(q: str) -> None:
        ran.append(q)

    for name in ("emails", "reports", "default"):
        queue.enqueue("where", {"q": name}, queue=name)
    run_burst(queue, queues=["emails", "reports"])
    assert sorted(ran) == ["emails", "reports"]
    assert db.execute("SELECT queue FROM pgqueue.jobs WHERE status = 'pending'").fetchall() == [("default",)]


def test_delayed_job_runs_when_due_not_on_poll(queue: Queue, db: psycopg.Connection) -> None:
    ran_at: list[float] = []

    @queue.task
    def stamp() -> None:
        ran_at.append(time.time())

    with Background(queue, poll_interval=60):
        time.sleep(0.3)  # the worker is idle and listening
        enqueued = time.time()
        queue.enqueue("stamp", delay=1.0)
        wait_for(lambda: bool(ran_at), timeout=10)
    assert 0.9 <= ran_at[0] - enqueued < 3.0


def test_listen_wakes_idle_worker_quickly(queue: Queue, db: psycopg.Connection) -> None:
    ran_at: dict[int, float] = {}

    @queue.task
    def stamp(i: int) -> None:
        ran_at[i] = time.time()

    latencies = []
    with Background(queue, poll_interval=60):
        time.sleep(0.3)
        for i in range(5):
            start = time.time()
            if i % 2:
                queue.enqueue("stamp", {"i": i})
            else:  # a hand-written INSERT wakes workers just the same
                db.execute("INSERT INTO pgqueue.jobs (task, args) VALUES ('stamp', %s)", (f'{{"i": {i}}}',))
            wait_for(lambda i=i: i in ran_at, timeout=5)
            latencies.append(ran_at[i] - start)
            time.sleep(0.1)
    # The poll interval is 60 s: anything under a second was the NOTIFY.
    assert max(latencies) < 1.0


def test_retry_failed_resets_attempts_and_keeps_history(queue: Queue, db: psycopg.Connection) -> None:
    fixed = {"ok": False}

    @queue.task(max_attempts=1)
    def fragile() -> None:
        if not fixed["ok"]:
            raise RuntimeError("not yet")

    job_id = queue.enqueue("fragile")
    run_burst(queue)
    assert db.execute("SELECT status, attempts FROM pgqueue.jobs").fetchone() == ("failed", 1)
    fixed["ok"] = True
    assert queue.retry_failed(task="fragile").retried == [job_id]
    assert db.execute("SELECT status, attempts FROM pgqueue.jobs").fetchone() == ("pending", 0)
    run_burst(queue)
    status, attempts, errors = db.execute(
        "SELECT status, attempts, errors FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert (status, attempts, len(errors)) == ("completed", 1, 1)


def test_cancel_pending_and_running(queue: Queue, db: psycopg.Connection) -> None:
    started = threading.Event()

    @queue.task
    async def long_async() -> None:
        started.set()
        await asyncio.sleep(30)

    @queue.task
    def later() -> None: ...

    running_id = queue.enqueue("long_async")
    pending_id = queue.enqueue("later", delay=3600)
    with Background(queue, poll_interval=60):
        assert started.wait(10)
        assert sorted(queue.cancel(running_id, pending_id)) == sorted([running_id, pending_id])
        wait_for(lambda: db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'running'").fetchone()[0] == 0)
    assert statuses(db) == {"cancelled": 2}


def test_sigterm_style_stop_hands_back_after_grace(queue: Queue, db: psycopg.Connection) -> None:
    started = threading.Event()

    @queue.task
    async def stubborn() -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = queue.enqueue("stubborn")
    background = Background(queue, grace_period=0.5)
    with background:
        assert started.wait(10)
    status, attempts, errors = db.execute(
        "SELECT status, attempts, errors FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    # The interrupted attempt is recorded but not counted: a deploy must not use up a job's attempts.
    assert (status, attempts) == ("pending", 0)
    assert errors[-1]["error"].startswith("interrupted") and errors[-1]["counted"] is False


def test_lost_lease_is_rescued(queue: Queue, db: psycopg.Connection) -> None:
    ran: list[int] = []

    @queue.task
    def work(n: int) -> None:
        ran.append(n)

    job_id = queue.enqueue("work", {"n": 1})
    # A worker that vanished while the handler ran: the job is running (started) under a lease that has expired.
    db.execute(
        "UPDATE pgqueue.jobs SET status = 'running', attempts = 1, worker_id = 'ghost', started_at = now(), "
        "lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (job_id,),
    )
    with Background(queue, maintenance_interval=0.2):
        wait_for(lambda: ran == [1])
    status, attempts, errors = db.execute(
        "SELECT status, attempts, errors FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert (status, attempts) == ("completed", 2)
    assert errors[0]["error"] == "worker lost: lease expired on worker ghost"
    assert errors[0]["counted"] is True


def test_rescued_job_keeps_its_place_in_line(queue: Queue, db: psycopg.Connection) -> None:
    order: list[str] = []

    @queue.task
    def mark(label: str) -> None:
        order.append(label)

    lost = queue.enqueue("mark", {"label": "lost"})
    queue.enqueue("mark", {"label": "newer"})
    db.execute(
        "UPDATE pgqueue.jobs SET status = 'running', attempts = 1, worker_id = 'ghost', "
        "lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (lost,),
    )
    run_at_before = db.execute("SELECT run_at FROM pgqueue.jobs WHERE id = %s", (lost,)).fetchone()[0]
    with Background(queue, maintenance_interval=0.2, concurrency=1):
        wait_for(lambda: len(order) == 2)
    # Rescued with its old run_at: back in its old place in line, not behind the whole backlog.
    assert sorted(order) == ["lost", "newer"]
    assert db.execute("SELECT run_at FROM pgqueue.jobs WHERE id = %s", (lost,)).fetchone()[0] == run_at_before
