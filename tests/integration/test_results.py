"""Queue.result / result_async and `pgqueue result`: LISTEN, the row decides, real worker processes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import Fixed, JobCancelled, JobFailed, JobNotFoundError, Queue, Worker, WorkerSettings
from pgqueue.store import results

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
# A guard against a hang, not a measurement: every wait below ends long before it on any machine.
HANG = 60.0


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    q = Queue(dsn)

    @q.task
    def add(a: int, b: int) -> int:
        return a + b

    @q.task(max_attempts=2, retry=Fixed(0))
    def explode(message: str) -> None:
        raise RuntimeError(message)

    @q.task
    def nothing() -> None:
        return None

    yield q
    q.close()


@pytest.fixture
def no_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the periodic re-read, a wait can end only by a notification (or its timeout)."""
    monkeypatch.setattr(results, "BACKSTOP", 3600.0)


def run_burst(queue: Queue) -> None:
    asyncio.run(Worker(queue, WorkerSettings(burst=True)).run_async())


class Waiter(threading.Thread):
    """queue.result(...) on a thread: its answer or exception kept for the test."""

    def __init__(self, queue: Queue, job_id: int, timeout: float | None = HANG) -> None:
        super().__init__(daemon=True)
        self.queue, self.job_id, self.timeout = queue, job_id, timeout
        self.value: Any = None
        self.error: BaseException | None = None
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            self.value = self.queue.result(self.job_id, timeout=self.timeout)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended.set()


def listening(db: psycopg.Connection, waiters: int = 1) -> None:
    """Until `waiters` sessions LISTEN on the finished channel (pg_listening_channels is per session: count the
    result connections instead, by their application name, once they have gone idle after LISTEN)."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        found = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgqueue result' AND state = 'idle' "
            "AND query LIKE 'SELECT status, result, error%%'"
        ).fetchone()[0]
        if found >= waiters:
            return
        time.sleep(0.02)
    raise AssertionError("the waiter never listened")


def test_a_job_finished_before_the_wait_is_answered_at_once(queue: Queue, no_backstop: None) -> None:
    job_id = queue.enqueue("add", {"a": 2, "b": 3})
    run_burst(queue)  # finished before anyone listened: its notification went to nobody
    # No time limit and no backstop: a wait that needed a notification would never end.
    waiter = Waiter(queue, job_id, timeout=None)
    waiter.start()
    assert waiter.ended.wait(HANG)
    assert (waiter.value, waiter.error) == (5, None)


def test_result_waits_for_the_notification(queue: Queue, db: psycopg.Connection, no_backstop: None) -> None:
    job_id = queue.enqueue("add", {"a": 20, "b": 22})
    waiter = Waiter(queue, job_id)
    waiter.start()
    listening(db)
    assert not waiter.ended.is_set()
    run_burst(queue)
    assert waiter.ended.wait(HANG)
    assert (waiter.value, waiter.error) == (42, None)


def test_forged_notifications_do_not_end_the_wait(queue: Queue, db: psycopg.Connection, no_backstop: None) -> None:
    job_id = queue.enqueue("add", {"a": 1, "b": 1})
    waiter = Waiter(queue, job_id)
    waiter.start()
    listening(db)
    for payload in ["", json.dumps({"id": job_id, "status": "completed"}), "x" * 7000, "\x1b[31m"]:
        db.execute("SELECT pg_notify('pgqueue_finished', %s)", (payload,))
    # Each forged notification makes the waiter read the row, which says pending: it keeps waiting.
    time.sleep(0.5)
    assert not waiter.ended.is_set()
    run_burst(queue)
    assert waiter.ended.wait(HANG)
    assert (waiter.value, waiter.error) == (2, None)


def test_failed_cancelled_unknown_and_timeout(queue: Queue, db: psycopg.Connection) -> None:
    failed = queue.enqueue("explode", {"message": "disk full"})
    cancelled = queue.enqueue("add", {"a": 1, "b": 2}, delay=3600)
    pending = queue.enqueue("add", {"a": 1, "b": 2}, delay=3600)
    run_burst(queue)
    queue.cancel(cancelled)
    with pytest.raises(JobFailed) as raised:
        queue.result(failed)
    assert raised.value.error == "RuntimeError: disk full"
    assert raised.value.job_id == failed
    assert str(raised.value) == f"job {failed} failed: RuntimeError: disk full"
    with pytest.raises(JobCancelled):
        queue.result(cancelled)
    with pytest.raises(JobNotFoundError):
        queue.result(pending + 1000)
    with pytest.raises(JobNotFoundError):
        queue.result(2**70)
    with pytest.raises(TimeoutError, match=f"job {pending} did not finish within 0.2 s"):
        queue.result(pending, timeout=0.2)
    with pytest.raises(TimeoutError):
        queue.result(pending, timeout=0)


def test_a_retry_is_not_an_answer(queue: Queue, db: psycopg.Connection, no_backstop: None) -> None:
    """A failed attempt with attempts left leaves the job pending: the waiter waits on to the last one."""
    job_id = queue.enqueue("explode", {"message": "again"})
    waiter = Waiter(queue, job_id)
    waiter.start()
    listening(db)
    run_burst(queue)
    assert waiter.ended.wait(HANG)
    assert isinstance(waiter.error, JobFailed)
    assert db.execute("SELECT attempts FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()[0] == 2


def test_none_result_and_many_waiters(queue: Queue, db: psycopg.Connection, no_backstop: None) -> None:
    ids = [queue.enqueue("nothing") for _ in range(5)] + [queue.enqueue("add", {"a": n, "b": n}) for n in range(5)]
    waiters = [Waiter(queue, job_id) for job_id in ids]
    for waiter in waiters:
        waiter.start()
    listening(db, len(waiters))
    run_burst(queue)
    for waiter in waiters:
        assert waiter.ended.wait(HANG)
    assert [w.value for w in waiters] == [None] * 5 + [0, 2, 4, 6, 8]
    assert all(w.error is None for w in waiters)


@pytest.mark.parametrize("timeout", [math.nan, -1, math.inf, "5", True])
def test_bad_timeouts_are_refused_before_any_io(timeout: Any) -> None:
    queue = Queue("postgresql://nowhere.invalid/db")
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        queue.result(1, timeout=timeout)


def test_result_async(queue: Queue, db: psycopg.Connection, no_backstop: None) -> None:
    done = queue.enqueue("add", {"a": 1, "b": 2})
    failed = queue.enqueue("explode", {"message": "async"})

    async def main() -> tuple[Any, BaseException]:
        waits = asyncio.gather(queue.result_async(done, timeout=HANG), queue.result_async(failed, timeout=HANG),
                               return_exceptions=True)  # fmt: skip
        await asyncio.sleep(0)
        while (
            db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgqueue result' AND state = 'idle'"
            ).fetchone()[0]
            < 2
        ):
            await asyncio.sleep(0.02)
        await Worker(queue, WorkerSettings(burst=True)).run_async()
        return tuple(await waits)  # type: ignore[return-value]

    value, error = asyncio.run(main())
    assert value == 3
    assert isinstance(error, JobFailed) and error.error == "RuntimeError: async"
    with pytest.raises(TimeoutError):
        asyncio.run(queue.result_async(queue.enqueue("add", {"a": 1, "b": 1}, delay=3600), timeout=0.1))


# -- real processes: a `pgqueue work` worker and the `pgqueue result` command --------------------------------------


def pgqueue(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    return subprocess.run([PGQUEUE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_pgqueue_result_against_a_worker_process(dsn: str, db: psycopg.Connection, no_backstop: None) -> None:
    from tests.apps import control_app

    q = Queue(dsn)
    q.tasks = control_app.queue.tasks
    try:
        slow = q.enqueue("sleep_then_add", {"a": 40, "b": 2, "seconds": 0.5})
        failed = q.enqueue("fail", {"message": "boom \x1b[2J"})
        cancelled = q.enqueue("add", {"a": 1, "b": 1}, delay=3600)
        late = q.enqueue("add", {"a": 1, "b": 1}, delay=3600)
    finally:
        q.close()
    q.cancel(cancelled)
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    worker = subprocess.Popen(
        [PGQUEUE, "work", "--app", "tests.apps.control_app"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        ok = pgqueue(dsn, "result", str(slow), "--timeout", str(HANG))
        assert (ok.returncode, ok.stdout, ok.stderr) == (0, "42\n", "")
        bad = pgqueue(dsn, "result", str(failed), "--timeout", str(HANG))
        assert bad.returncode == 3
        assert bad.stderr.startswith(f"error: job {failed} failed: RuntimeError: boom ")
        assert "\x1b" not in bad.stderr and bad.stderr.count("\n") == 1
        gone = pgqueue(dsn, "result", str(cancelled))
        assert (gone.returncode, gone.stderr) == (4, f"error: job {cancelled} was cancelled\n")
        waited = pgqueue(dsn, "result", str(late), "--timeout", "0.3")
        assert (waited.returncode, waited.stderr) == (
            5,
            f"error: job {late} did not finish within 0.3 s (it is pending)\n",
        )
        unknown = pgqueue(dsn, "result", "999999")
        assert unknown.returncode == 1 and "no job 999999" in unknown.stderr
        for bad_timeout in ("nan", "-1", "soon"):
            usage = pgqueue(dsn, "result", str(slow), "--timeout", bad_timeout)
            assert usage.returncode == 2 and "Traceback" not in usage.stderr
        assert pgqueue(dsn, "result", "abc").returncode == 2
    finally:
        worker.terminate()
        worker.wait(30)


def test_pgqueue_result_with_a_bad_dsn_prints_one_line_without_the_password() -> None:
    proc = pgqueue("postgresql://user:s3cret@127.0.0.1:1/db", "result", "1")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "s3cret" not in proc.stderr and "Traceback" not in proc.stderr


def test_one_notification_per_statement_and_none_for_renewals(dsn: str, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pgqueue.jobs (task, status) SELECT 'x', 'running' FROM generate_series(1, 100)")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_finished")
        db.execute("UPDATE pgqueue.jobs SET lease_expires_at = now() + interval '1 minute'")  # a renewal: no status
        db.execute("UPDATE pgqueue.jobs SET started_at = now()")  # a start report: no status
        assert list(listener.notifies(timeout=0.5)) == []
        db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now()")  # 100 jobs, one statement
        first = list(listener.notifies(timeout=0.5))
        assert [(n.channel, n.payload) for n in first] == [("pgqueue_finished", "")]


def test_claims_and_retries_send_no_finished_notification(dsn: str, db: psycopg.Connection) -> None:
    """Only a statement that leaves a job finished notifies (migration 0020): a claim, a claim's held or deferred
    jobs and a retry leave none finished, and a notification costs each commit the cluster-wide lock that all
    notifying commits share. A failure for good and a cancel are finishes like a completion."""
    from datetime import timedelta

    from pgqueue.store import statements
    from pgqueue.store.run import fetch

    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'x' FROM generate_series(1, 30)")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_finished")
        claim = statements.record_outcomes_and_claim(worker_id="w", limit=20, lease=timedelta(seconds=30), queues=None)
        claimed = [job.id for job in fetch(db, claim)]
        assert len(claimed) == 20
        retry = statements.Failure(claimed[0], 1, True, timedelta(seconds=60), "again", None)
        assert [row.status for row in fetch(db, statements.fail_jobs(worker_id="w", failures=[retry]))] == ["pending"]
        assert list(listener.notifies(timeout=0.5)) == []
        for finish in (
            "UPDATE pgqueue.jobs SET status = 'failed', finished_at = now() WHERE id = %s",
            "UPDATE pgqueue.jobs SET status = 'cancelled', finished_at = now() WHERE id = %s",
        ):
            db.execute(finish, [claimed.pop()])
            assert [(n.channel, n.payload) for n in listener.notifies(timeout=0.5)] == [("pgqueue_finished", "")]


def test_pgqueue_result_prints_hostile_and_huge_results_safely(dsn: str, db: psycopg.Connection) -> None:
    big = "x" * 500_000
    (escape_id,) = db.execute(
        "INSERT INTO pgqueue.jobs (task, status, finished_at, result) "
        "VALUES ('t', 'completed', now(), to_jsonb(E'\\u001b[2J\\nred'::text)) RETURNING id"
    ).fetchone()
    (big_id,) = db.execute(
        "INSERT INTO pgqueue.jobs (task, status, finished_at, result) "
        "VALUES ('t', 'completed', now(), %s) RETURNING id",
        (json.dumps({"blob": big}),),
    ).fetchone()
    escaped = pgqueue(dsn, "result", str(escape_id))
    assert (escaped.returncode, escaped.stdout) == (0, '"\\u001b[2J\\nred"\n')  # JSON: no raw control character
    huge = pgqueue(dsn, "result", str(big_id))
    assert huge.returncode == 0 and json.loads(huge.stdout) == {"blob": big}
