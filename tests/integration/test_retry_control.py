"""retry_on, Discard and Snooze: in-process workers and real `pgqueue work` processes, real PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import Discard, Fixed, Queue, Snooze, Worker, WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    q = Queue(dsn)
    yield q
    q.close()


def run_burst(queue: Queue, **settings: Any) -> Worker:
    worker = Worker(queue, WorkerSettings(burst=True, **settings))
    asyncio.run(worker.run_async())
    return worker


def job(db: psycopg.Connection, job_id: int) -> dict[str, Any]:
    cursor = db.execute(
        "SELECT status, attempts, snoozes, error, errors, result, extract(epoch FROM run_at - now()) AS due_in "
        "FROM pgqueue.jobs WHERE id = %s",
        (job_id,),
    )
    names = [column.name for column in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


# -- Snooze ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_snooze_runs_again_without_spending_an_attempt(queue: Queue, db: psycopg.Connection, kind: str) -> None:
    calls: list[int] = []

    if kind == "sync":

        @queue.task(name="napper", max_attempts=1)
        def napper() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise Snooze(0)
            return "done"

    else:

        @queue.task(name="napper", max_attempts=1)
        async def napper() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise Snooze(timedelta(0))
            return "done"

    job_id = queue.enqueue("napper")
    worker = run_burst(queue)
    row = job(db, job_id)
    # Two snoozes and a success within max_attempts=1: a snooze charged no attempt; nothing went to the history.
    assert len(calls) == 3
    assert (row["status"], row["attempts"], row["snoozes"], row["error"], row["errors"]) == (
        "completed", 1, 2, None, [],
    )  # fmt: skip
    assert row["result"] == "done"
    assert worker.stats["snoozed"] == 2


def test_snooze_pushes_run_at_and_keeps_the_last_error(queue: Queue, db: psycopg.Connection) -> None:
    @queue.task(name="later", retry=Fixed(0), max_attempts=3)
    def later() -> None:
        from pgqueue import current_job

        if current_job().attempt == 1:
            raise RuntimeError("first try fails")
        raise Snooze(600)

    job_id = queue.enqueue("later")
    run_burst(queue)
    row = job(db, job_id)
    # Attempt 1 failed (counted, in the history); attempt 2 snoozed: pending, attempts back to 1, due in ~600 s.
    assert (row["status"], row["attempts"], row["snoozes"]) == ("pending", 1, 1)
    assert row["error"] == "RuntimeError: first try fails"
    assert [entry["attempt"] for entry in row["errors"]] == [1]
    assert 500 < float(row["due_in"]) <= 600


@pytest.mark.parametrize(
    "seconds", [math.nan, math.inf, -1, -0.001, 10**12, 366 * 86400, "5", True, None, timedelta(days=-1)]
)
def test_a_bad_snooze_fails_the_attempt_with_a_clear_error(queue: Queue, db: psycopg.Connection, seconds: Any) -> None:
    @queue.task(name="bad_nap", max_attempts=1)
    def bad_nap() -> None:
        raise Snooze(seconds)

    @queue.task(name="fine")
    def fine() -> int:
        return 1

    bad = queue.enqueue("bad_nap")
    good = queue.enqueue("fine")
    run_burst(queue)
    row = job(db, bad)
    assert row["status"] == "failed"
    assert row["error"].startswith("ValueError: Snooze")
    assert "\n" not in row["error"]
    assert job(db, good)["status"] == "completed"  # one bad job costs only itself


def test_a_snooze_tampered_with_after_it_was_made_fails_permanently(queue: Queue, db: psycopg.Connection) -> None:
    @queue.task(name="tampered", retry=Fixed(0))
    def tampered() -> None:
        snooze = Snooze(1)
        snooze.seconds = math.nan
        raise snooze

    job_id = queue.enqueue("tampered")
    run_burst(queue)
    row = job(db, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["error"].startswith("invalid snooze: Snooze(nan)")


def test_snooze_messages_and_limits() -> None:
    assert Snooze(timedelta(minutes=2)).seconds == 120
    assert Snooze(0).seconds == 0
    assert str(Snooze(1.5)) == "snoozed for 1.5 s"
    with pytest.raises(ValueError, match="finite number from 0 to 31536000"):
        Snooze(-5)
    with pytest.raises(ValueError, match="got str"):
        Snooze("10")  # type: ignore[arg-type]


# -- Discard --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_discard_fails_the_job_now(queue: Queue, db: psycopg.Connection, kind: str) -> None:
    if kind == "sync":

        @queue.task(name="refuse", max_attempts=5, retry=Fixed(0))
        def refuse(order_id: int) -> None:
            raise Discard(f"order {order_id} was deleted")

    else:

        @queue.task(name="refuse", max_attempts=5, retry=Fixed(0))
        async def refuse(order_id: int) -> None:
            raise Discard(f"order {order_id} was deleted")

    job_id = queue.enqueue("refuse", {"order_id": 42})
    run_burst(queue)
    row = job(db, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["error"] == "Discard: order 42 was deleted"
    assert [(entry["attempt"], entry["counted"]) for entry in row["errors"]] == [(1, True)]


# -- retry_on -------------------------------------------------------------------------------------------------


def test_retry_on_retries_only_the_listed_exceptions(queue: Queue, db: psycopg.Connection) -> None:
    raised: dict[str, list[BaseException]] = {
        "listed": [ConnectionError("down"), TimeoutError("slow")],
        "subclass": [ConnectionRefusedError("refused")],  # a subclass of a listed class is retried too
        "other": [KeyError("customer")],
    }

    def handler_for(key: str):
        def handler() -> str:
            if raised[key]:
                raise raised[key].pop(0)
            return key

        return handler

    for key in raised:
        queue.task(name=key, retry=Fixed(0), max_attempts=3, retry_on=(ConnectionError, TimeoutError))(handler_for(key))
    ids = {key: queue.enqueue(key) for key in raised}
    run_burst(queue)
    assert (job(db, ids["listed"])["status"], job(db, ids["listed"])["attempts"]) == ("completed", 3)
    assert (job(db, ids["subclass"])["status"], job(db, ids["subclass"])["attempts"]) == ("completed", 2)
    other = job(db, ids["other"])
    assert (other["status"], other["attempts"], other["error"]) == ("failed", 1, "KeyError: 'customer'")


def test_retry_on_applies_to_the_task_timeout(queue: Queue, db: psycopg.Connection) -> None:
    @queue.task(name="slow_not_retried", timeout=0.05, retry=Fixed(0), retry_on=ConnectionError)
    async def slow_not_retried() -> None:
        await asyncio.sleep(30)

    @queue.task(name="slow_retried", timeout=0.05, retry=Fixed(0), max_attempts=2, retry_on=(TimeoutError,))
    async def slow_retried() -> None:
        await asyncio.sleep(30)

    not_retried = queue.enqueue("slow_not_retried")
    retried = queue.enqueue("slow_retried")
    run_burst(queue)
    assert (job(db, not_retried)["status"], job(db, not_retried)["attempts"]) == ("failed", 1)
    assert (job(db, retried)["status"], job(db, retried)["attempts"]) == ("failed", 2)


def test_without_retry_on_every_exception_is_retried(queue: Queue, db: psycopg.Connection) -> None:
    @queue.task(name="plain", retry=Fixed(0), max_attempts=2)
    def plain() -> None:
        raise KeyError("x")

    job_id = queue.enqueue("plain")
    run_burst(queue)
    assert (job(db, job_id)["status"], job(db, job_id)["attempts"]) == ("failed", 2)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "got int 5"),
        ("ConnectionError", "got str 'ConnectionError'"),
        (ConnectionError(), "got ConnectionError ConnectionError()"),
        ((ValueError, int), "the class 'int', which is not an exception"),
        ([ValueError, "KeyError"], "got str 'KeyError'"),
        (dict, "the class 'dict', which is not an exception"),
        ({"a": ValueError}, "got dict"),
    ],
)
def test_retry_on_with_a_non_exception_is_refused_at_declaration(value: Any, message: str) -> None:
    queue = Queue("postgresql://nowhere.invalid/db")
    with pytest.raises(TypeError, match="retry_on must be an exception class or a tuple of them") as refused:

        @queue.task(name="t", retry_on=value)
        def t() -> None: ...

    assert message in str(refused.value)
    assert "t" not in queue.tasks


def test_retry_on_accepts_one_class_or_a_collection() -> None:
    queue = Queue("postgresql://nowhere.invalid/db")
    one = queue.task(name="one", retry_on=OSError)(lambda: None)
    several = queue.task(name="several", retry_on=[OSError, ValueError])(lambda: None)
    never = queue.task(name="never", retry_on=())(lambda: None)
    assert one.retry_on == (OSError,) and several.retry_on == (OSError, ValueError) and never.retry_on == ()
    assert one.retries(ConnectionError()) and not one.retries(ValueError()) and not never.retries(OSError())


# -- real worker processes ------------------------------------------------------------------------------------


def test_retry_control_in_a_worker_process(dsn: str, db: psycopg.Connection) -> None:
    from tests.apps import control_app

    q = Queue(dsn)
    q.tasks = control_app.queue.tasks
    try:
        ids = {
            "snooze": q.enqueue("snooze_once", {"seconds": 0}),
            "snooze_async": q.enqueue("snooze_once_async", {"seconds": 0}),
            "discard": q.enqueue("discard", {"reason": "no such customer"}),
            "flaky": q.enqueue("flaky_connection", {"fail_times": 2}),
            "wrong": q.enqueue("wrong_value"),
        }
    finally:
        q.close()
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    proc = subprocess.run(
        [PGQUEUE, "work", "--app", "tests.apps.control_app", "--burst", "--concurrency", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for key in ("snooze", "snooze_async"):
        row = job(db, ids[key])
        assert (row["status"], row["attempts"], row["snoozes"], row["result"]) == ("completed", 1, 1, "woke")
    assert (job(db, ids["discard"])["status"], job(db, ids["discard"])["error"]) == (
        "failed", "Discard: no such customer",
    )  # fmt: skip
    flaky = job(db, ids["flaky"])
    assert (flaky["status"], flaky["attempts"], flaky["result"]) == ("completed", 3, 3)
    wrong = job(db, ids["wrong"])
    assert (wrong["status"], wrong["attempts"], wrong["error"]) == ("failed", 1, "ValueError: bad input")
    assert "snoozed for 0 s (attempt not counted)" in proc.stderr
