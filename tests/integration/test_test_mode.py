"""Test mode: queue.drain() / drain_async(), queue.enqueued(), and the pytest plugin used by a small app's own test
suite, run by pytest in a subprocess as the app's developers would run it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue import Discard, Fixed, InvalidJobError, PgQueueError, Queue, Snooze

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    q = Queue(dsn)
    order: list[int] = []

    @q.task
    def step(n: int) -> int:
        order.append(n)
        if n == 0:
            q.enqueue("step", {"n": 100})  # a job enqueued by a handler runs in the same drain
        return n * 10

    @q.task(max_attempts=3, retry=Fixed(0))
    def flaky(fails: int) -> str:
        from pgqueue import current_job

        if current_job().attempt <= fails:
            raise ConnectionError("try again")
        return "ok"

    @q.task
    def refuse() -> None:
        raise Discard("not today")

    @q.task
    async def later() -> None:
        raise Snooze(600)

    @q.periodic(cron="* * * * *")
    @q.task
    def every_minute() -> None: ...

    q.order = order  # type: ignore[attr-defined]
    yield q
    q.close()


def test_drain_runs_everything_runnable_and_reports_outcomes(queue: Queue, db: psycopg.Connection) -> None:
    ids = [queue.enqueue("step", {"n": n}) for n in range(3)]
    flaky = queue.enqueue("flaky", {"fails": 1})
    refused = queue.enqueue("refuse")
    snoozed = queue.enqueue("later")
    future = queue.enqueue("step", {"n": 9}, delay=3600)
    ran = queue.drain()
    by_id = {job.id: job for job in ran}
    assert queue.order == [0, 1, 2, 100]  # type: ignore[attr-defined]
    assert [by_id[i].result for i in ids] == [0, 10, 20]
    assert (by_id[flaky].status, by_id[flaky].attempts, by_id[flaky].result) == ("completed", 2, "ok")
    assert (by_id[refused].status, by_id[refused].error) == ("failed", "Discard: not today")
    assert (by_id[snoozed].status, by_id[snoozed].attempts) == ("pending", 0)
    assert future not in by_id  # not due: not run, not reported
    spawned = [job for job in ran if job.args == {"n": 100}]
    assert [(job.status, job.result) for job in spawned] == [("completed", 1000)]
    # A drain fires no cron schedule, and leaves the future job alone.
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE task = 'every_minute'").fetchone()[0] == 0
    assert db.execute("SELECT status FROM pgqueue.jobs WHERE id = %s", (future,)).fetchone()[0] == "pending"
    assert queue.drain() == []  # nothing runnable any more


def test_drain_reports_jobs_enqueued_by_handlers_even_when_they_snooze(queue: Queue) -> None:
    @queue.task
    def parent() -> None:
        queue.enqueue("later")

    first = queue.enqueue("parent")
    ran = queue.drain()
    assert [(job.task, job.status) for job in ran] == [("parent", "completed"), ("later", "pending")]
    assert ran[0].id == first


def test_drain_async_and_the_running_loop_guard(queue: Queue) -> None:
    job_id = queue.enqueue("step", {"n": 5})

    async def main() -> list:
        with pytest.raises(PgQueueError, match=re.escape("use `await queue.drain_async()`")):
            queue.drain()
        return await queue.drain_async()

    ran = asyncio.run(main())
    assert [(job.id, job.status, job.result) for job in ran] == [(job_id, "completed", 50)]


def test_enqueued_filters_by_task_args_and_status(queue: Queue) -> None:
    first = queue.enqueue("step", {"n": 1})
    second = queue.enqueue("step", {"n": 2})
    other = queue.enqueue("flaky", {"fails": 0})
    assert [job.id for job in queue.enqueued("step")] == [first, second]
    assert [job.id for job in queue.enqueued(args={"n": 2})] == [second]
    assert [job.id for job in queue.enqueued()] == [first, second, other]
    assert queue.enqueued("step", {"n": 3}) == []
    (job,) = queue.enqueued(queue.tasks["flaky"], status="pending")
    assert (job.id, job.task, job.args, job.status, job.attempts) == (other, "flaky", {"fails": 0}, "pending", 0)
    queue.drain()
    assert queue.enqueued(status="pending") == []
    assert len(queue.enqueued(status=["completed", "failed"], limit=2)) == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda q: q.enqueued(status="done"), "unknown status 'done'"),
        (lambda q: q.enqueued(args=[1]), "args must be a dict"),
        (lambda q: q.enqueued(args={"x": float("nan")}), "not JSON-serialisable"),
        (lambda q: q.enqueued(limit=0), "limit must be a positive int"),
    ],
)
def test_bad_enqueued_filters_are_refused(call, message: str) -> None:
    with pytest.raises(InvalidJobError, match=message):
        call(Queue("postgresql://nowhere.invalid/db"))


def test_bad_drain_concurrency_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency must be an int of at least 1"):
        Queue("postgresql://nowhere.invalid/db").drain(concurrency=0)


# -- an app's own test suite, run by pytest ---------------------------------------------------------------------

CONFTEST = """
import pytest

from tests.apps import shop_app

pytest_plugins = ["pgqueue.pytest_plugin"]


@pytest.fixture
def queue(pgqueue_dsn):
    from psycopg.conninfo import conninfo_to_dict

    with open("databases.txt", "a") as made:  # for the outer test: were they all dropped?
        made.write(conninfo_to_dict(pgqueue_dsn)["dbname"] + "\\n")
    shop_app.queue.dsn = pgqueue_dsn
    shop_app.sent.clear()
    yield shop_app.queue
    shop_app.queue.close()
"""

SUITE = """
import asyncio

from tests.apps import shop_app


def test_checkout_enqueues_an_order(queue):
    job_id = shop_app.checkout(1, "ann@example.com")
    (job,) = queue.enqueued("place_order", {"order_id": 1})
    assert (job.id, job.status) == (job_id, "pending")


def test_drain_runs_the_order_and_its_receipt(queue):
    shop_app.checkout(2, "bob@example.com")
    ran = queue.drain()
    assert [(job.task, job.status) for job in ran] == [("place_order", "completed"), ("send_receipt", "completed")]
    assert ran[0].result == {"order_id": 2}
    assert shop_app.sent == ["bob@example.com"]


def test_a_receipt_without_address_is_discarded(queue):
    shop_app.checkout(3, "nobody")
    receipt = queue.drain()[1]
    assert receipt.status == "failed" and receipt.attempts == 1
    assert receipt.error == "Discard: no address to send order 3's receipt to"


def test_a_snoozed_job_stays_pending(queue):
    queue.enqueue("nightly_report")
    (job,) = asyncio.run(queue.drain_async())
    assert (job.status, job.attempts) == ("pending", 0)


def test_each_test_starts_with_an_empty_queue(queue):
    assert queue.enqueued() == []
"""

WRONG = """
from tests.apps import shop_app


def test_an_expectation_that_does_not_hold(queue):
    shop_app.checkout(4, "cy@example.com")
    queue.drain()
    assert shop_app.sent == ["someone.else@example.com"]
"""


def run_app_suite(folder: Path, server_dsn: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_TEST_DSN": server_dsn, "PYTHONPATH": str(ROOT)}
    env.pop("PGQUEUE_DSN", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder), *options,
         str(folder)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_an_apps_test_suite_uses_the_plugin(tmp_path: Path, server_dsn: str) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_shop.py").write_text(textwrap.dedent(SUITE))
    proc = run_app_suite(tmp_path, server_dsn)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed" in proc.stdout
    # Side by side (pytest-xdist): each process migrates a template of its own, each test has its own database.
    parallel = run_app_suite(tmp_path, server_dsn, "-n", "2")
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert "5 passed" in parallel.stdout
    made = (tmp_path / "databases.txt").read_text().split()
    assert len(made) == len(set(made)) == 10  # a database per test, per run
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        left = admin.execute("SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", (made,)).fetchone()[0]
    assert left == 0  # every database the plugin made was dropped


def test_an_apps_failing_test_fails(tmp_path: Path, server_dsn: str) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_wrong.py").write_text(textwrap.dedent(WRONG))
    proc = run_app_suite(tmp_path, server_dsn)
    assert proc.returncode == 1
    assert "1 failed" in proc.stdout and "someone.else@example.com" in proc.stdout
