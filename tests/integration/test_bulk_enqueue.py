"""Big batches of jobs due now are written with COPY: same rows, ids in order, same transaction, same wake-up."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from pgqueue import InvalidJobError, JobSpec, Queue
from pgqueue.queue.jobs import COPY_AT_LEAST

BIG = COPY_AT_LEAST + 100


@pytest.fixture
def queue(dsn: str):
    q = Queue(dsn)

    @q.task(name="send_email", queue="emails", max_attempts=3, priority=2)
    def send_email(to: str) -> None: ...

    @q.task(name="generate_invoice")
    async def generate_invoice(order_id: int, note: str = "") -> None: ...

    yield q
    q.close()


def batch() -> list[JobSpec]:
    jobs = [JobSpec("generate_invoice", {"order_id": i, "note": "tab\there, quote ' \\ é"}) for i in range(BIG)]
    jobs[7] = JobSpec("send_email", {"to": "a@b.c"})
    jobs[8] = JobSpec("generate_invoice", {"order_id": 8}, queue="other", priority=-1, max_attempts=9)
    return jobs


def check_rows(db: psycopg.Connection, ids: list[int]) -> None:
    assert len(ids) == BIG and ids == sorted(ids) and len(set(ids)) == BIG
    rows = db.execute(
        "SELECT id, queue, task, args, priority, max_attempts, status, attempts, run_at <= now() "
        "FROM pgqueue.jobs ORDER BY id"
    ).fetchall()
    assert [row[0] for row in rows] == ids
    assert rows[0][1:] == (
        "default", "generate_invoice", {"order_id": 0, "note": "tab\there, quote ' \\ é"}, 0, 5, "pending", 0, True
    )  # fmt: skip
    assert rows[7][1:6] == ("emails", "send_email", {"to": "a@b.c"}, 2, 3)
    assert rows[8][1:6] == ("other", "generate_invoice", {"order_id": 8}, -1, 9)
    assert [row[3]["order_id"] for row in rows if row[2] == "generate_invoice"] == [i for i in range(BIG) if i != 7]


def test_big_batch_on_own_connection(queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_jobs")
        ids = queue.enqueue_many(batch())
        queues = sorted(json.loads(n.payload)["queue"] for n in listener.notifies(timeout=0.5, stop_after=3))
    check_rows(db, ids)
    assert queues == ["default", "emails", "other"]  # one notification per queue, as for an INSERT


def test_big_batch_joins_the_callers_transaction(queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    with psycopg.connect(dsn) as writer:
        queue.enqueue_many(batch(), connection=writer)
        writer.rollback()
        assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)
        ids = queue.enqueue_many(batch(), connection=writer)
        assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)  # not committed yet
        writer.commit()
    check_rows(db, ids)


def test_big_batch_async(queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    async def own() -> list[int]:
        try:
            return await queue.enqueue_many_async(batch())
        finally:
            await queue.aclose()

    check_rows(db, asyncio.run(own()))
    db.execute("TRUNCATE pgqueue.jobs CASCADE")  # (and the job_dependencies that reference them)

    async def callers() -> list[int]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            ids = await queue.enqueue_many_async(batch(), connection=conn)
            await conn.commit()
            return ids

    check_rows(db, asyncio.run(callers()))


def test_big_batch_with_one_bad_job_inserts_nothing(queue: Queue, db: psycopg.Connection) -> None:
    jobs = [*batch(), JobSpec("generate_invoice", {"wrong": 1})]
    with pytest.raises(InvalidJobError, match="do not fit"):
        queue.enqueue_many(jobs)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_big_batch_with_a_delay_keeps_server_side_run_at(queue: Queue, db: psycopg.Connection) -> None:
    jobs = batch()
    jobs[3] = JobSpec("generate_invoice", {"order_id": 3}, delay=3600)
    ids = queue.enqueue_many(jobs)
    delayed = db.execute(
        "SELECT run_at - created_at BETWEEN interval '3599 s' AND interval '3601 s' FROM pgqueue.jobs WHERE id = %s",
        (ids[3],),
    ).fetchone()
    assert delayed == (True,)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE run_at <= now()").fetchone() == (BIG - 1,)
