"""Enqueue joins the caller's transaction (psycopg, SQLAlchemy) and rejects bad input before any insert."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pgqueue import InvalidJobError, JobSpec, Queue, UnknownTaskError
from pgqueue.store.migrate import engine_for


@pytest.fixture
def queue(dsn: str):
    q = Queue(dsn)

    @q.task(name="send_email", queue="emails", max_attempts=3)
    def send_email(to: str, subject: str, body: str = "") -> None: ...

    @q.task(name="generate_invoice")
    async def generate_invoice(order_id: int) -> None: ...

    yield q
    q.close()


def job_count(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0]


def make_orders(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE orders (id int PRIMARY KEY)")


def test_enqueue_own_connection_commits(queue: Queue, db: psycopg.Connection) -> None:
    job_id = queue.enqueue("send_email", {"to": "a@b.c", "subject": "Hi"})
    row = db.execute(
        "SELECT queue, task, args, status, attempts, max_attempts FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row == ("emails", "send_email", {"to": "a@b.c", "subject": "Hi"}, "pending", 0, 3)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_psycopg_transaction(queue: Queue, dsn: str, db: psycopg.Connection, outcome: str) -> None:
    make_orders(db)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO orders VALUES (42)")
        queue.enqueue("send_email", {"to": "a@b.c", "subject": "Order"}, connection=conn)
        queue.enqueue("generate_invoice", {"order_id": 42}, connection=conn, delay=timedelta(seconds=10))
        # Not visible to anyone else before the commit.
        assert job_count(db) == 0
        getattr(conn, outcome)()
    expected = 2 if outcome == "commit" else 0
    assert job_count(db) == expected
    assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == expected // 2


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_sqlalchemy_connection_transaction(queue: Queue, dsn: str, db: psycopg.Connection, outcome: str) -> None:
    make_orders(db)
    engine = engine_for(dsn)
    with engine.connect() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES (42)"))
        queue.enqueue("generate_invoice", {"order_id": 42}, connection=conn)
        getattr(conn, outcome)()
    engine.dispose()
    assert job_count(db) == (1 if outcome == "commit" else 0)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_sqlalchemy_session_transaction(queue: Queue, dsn: str, db: psycopg.Connection, outcome: str) -> None:
    make_orders(db)
    engine = engine_for(dsn)
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO orders VALUES (42)"))
        ids = queue.enqueue_many(
            [("generate_invoice", {"order_id": 42}), ("generate_invoice", {"order_id": 43})], connection=session
        )
        assert len(ids) == 2
        getattr(session, outcome)()
    engine.dispose()
    assert job_count(db) == (2 if outcome == "commit" else 0)
    assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == (1 if outcome == "commit" else 0)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_async_psycopg_transaction(queue: Queue, dsn: str, db: psycopg.Connection, outcome: str) -> None:
    make_orders(db)

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute("INSERT INTO orders VALUES (42)")
            await queue.enqueue_async("generate_invoice", {"order_id": 42}, connection=conn)
            await getattr(conn, outcome)()
        await queue.aclose()

    asyncio.run(scenario())
    assert job_count(db) == (1 if outcome == "commit" else 0)


def test_async_own_connection(queue: Queue, db: psycopg.Connection) -> None:
    async def scenario() -> int:
        try:
            return await queue.enqueue_async("generate_invoice", {"order_id": 7})
        finally:
            await queue.aclose()

    job_id = asyncio.run(scenario())
    assert db.execute("SELECT args FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()[0] == {"order_id": 7}


def test_options_delay_run_at_priority(queue: Queue, db: psycopg.Connection) -> None:
    delayed = queue.enqueue("generate_invoice", {"order_id": 1}, delay=timedelta(minutes=5), priority=7)
    when = datetime(2030, 1, 1, tzinfo=UTC)
    scheduled = queue.enqueue("generate_invoice", {"order_id": 2}, run_at=when, queue="other", max_attempts=9)
    rows = dict(
        (row[0], row[1:])
        for row in db.execute(
            "SELECT id, run_at - now() > interval '4 minutes', run_at, priority, queue, max_attempts FROM pgqueue.jobs"
        )
    )
    assert rows[delayed][0] is True and rows[delayed][2] == 7
    assert rows[scheduled][1] == when and rows[scheduled][3:] == ("other", 9)


def test_task_sugar(queue: Queue, db: psycopg.Connection) -> None:
    job_id = queue.tasks["generate_invoice"].enqueue({"order_id": 5})
    assert db.execute("SELECT task FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()[0] == "generate_invoice"


def test_enqueue_many_one_statement(queue: Queue, db: psycopg.Connection) -> None:
    ids = queue.enqueue_many(
        [JobSpec("generate_invoice", {"order_id": i}, priority=i % 3) for i in range(1000)]
        + [JobSpec("send_email", {"to": "x", "subject": "y"}, delay=60)]
    )
    assert len(ids) == 1001 and ids == sorted(ids)
    args = [row[0] for row in db.execute("SELECT args FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id", (ids[:1000],))]
    assert args == [{"order_id": i} for i in range(1000)]
    assert db.execute("SELECT queue FROM pgqueue.jobs WHERE id = %s", (ids[-1],)).fetchone()[0] == "emails"


@pytest.mark.parametrize(
    ("task", "args", "options", "error", "message"),
    [
        ("nope", {}, {}, UnknownTaskError, "unknown task 'nope'"),
        ("generate_invoice", {"order_id": {1, 2}}, {}, InvalidJobError, "not JSON-serialisable"),
        ("generate_invoice", {"order_id": float("nan")}, {}, InvalidJobError, "not JSON-serialisable"),
        ("generate_invoice", {"wrong": 1}, {}, InvalidJobError, "do not fit"),
        ("generate_invoice", {}, {}, InvalidJobError, "do not fit"),
        ("generate_invoice", [1], {}, InvalidJobError, "must be a dict"),
        ("generate_invoice", {"order_id": 1}, {"delay": -5}, InvalidJobError, "must not be negative"),
        ("generate_invoice", {"order_id": 1}, {"run_at": datetime(2030, 1, 1)}, InvalidJobError, "timezone-aware"),
        ("generate_invoice", {"order_id": 1}, {"max_attempts": 0}, InvalidJobError, "at least 1"),
    ],
)
def test_bad_input_inserts_nothing(queue, db, task, args, options, error, message) -> None:
    with pytest.raises(error, match=message):
        queue.enqueue(task, args, **options)
    with pytest.raises(error, match=message):
        queue.enqueue_many([JobSpec("generate_invoice", {"order_id": 1}), JobSpec(task, args, **options)])
    assert job_count(db) == 0


def test_plain_sql_insert_is_a_valid_job(db: psycopg.Connection) -> None:
    db.execute("""INSERT INTO pgqueue.jobs (task, args) VALUES ('send_email', '{"to": "a@b.c"}')""")
    row = db.execute(
        "SELECT queue, status, priority, attempts, max_attempts, run_at <= now(), errors FROM pgqueue.jobs"
    ).fetchone()
    assert row == ("default", "pending", 0, 0, 5, True, [])


def test_insert_notifies_once_per_queue_on_commit(queue: Queue, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn) as writer:
        listener.execute("LISTEN pgqueue_jobs")
        queue.enqueue_many([("generate_invoice", {"order_id": i}) for i in range(50)], connection=writer)
        queue.enqueue("send_email", {"to": "a", "subject": "b"}, connection=writer)
        assert list(listener.notifies(timeout=0.3)) == []  # nothing before the commit
        writer.commit()
        payloads = sorted(json.loads(n.payload)["queue"] for n in listener.notifies(timeout=0.5, stop_after=3))
    assert payloads == ["default", "emails"]


def test_missing_schema_is_one_clear_error(empty_dsn: str) -> None:
    from pgqueue import SchemaMissingError

    q = Queue(empty_dsn)
    q.task(name="t")(lambda: None)
    with pytest.raises(SchemaMissingError, match="pgqueue migrate"):
        q.enqueue("t")
    q.close()


def test_missing_schema_is_one_clear_error_through_sqlalchemy(empty_dsn: str) -> None:
    """SQLAlchemy wraps the driver's UndefinedTable; the caller still gets SchemaMissingError, sync and async."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from pgqueue import SchemaMissingError

    q = Queue(empty_dsn)
    q.task(name="t")(lambda: None)
    engine = sa.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(empty_dsn))
    with engine.connect() as conn, pytest.raises(SchemaMissingError, match="pgqueue migrate"):
        q.enqueue("t", connection=conn)
    engine.dispose()

    async def enqueue_async() -> None:
        async_engine = create_async_engine(
            "postgresql+psycopg://", async_creator=lambda: psycopg.AsyncConnection.connect(empty_dsn)
        )
        try:
            async with async_engine.connect() as conn:
                await q.enqueue_async("t", connection=conn)
        finally:
            await async_engine.dispose()

    with pytest.raises(SchemaMissingError, match="pgqueue migrate"):
        asyncio.run(enqueue_async())
    q.close()


def test_dedup_key_one_live_job_per_key(queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    first = queue.enqueue("generate_invoice", {"order_id": 1}, dedup_key="invoice-1")
    again = queue.enqueue("generate_invoice", {"order_id": 1}, dedup_key="invoice-1")
    other = queue.enqueue("generate_invoice", {"order_id": 2}, dedup_key="invoice-2")
    assert again == first and other != first
    # Once the job has finished, the key is free again.
    db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now() WHERE id = %s", (first,))
    later = queue.enqueue("generate_invoice", {"order_id": 1}, dedup_key="invoice-1")
    assert later not in (first, other)
    # Inside a caller's transaction that rolls back, nothing is left behind.
    with psycopg.connect(dsn) as conn:
        assert queue.enqueue("generate_invoice", {"order_id": 3}, dedup_key="invoice-3", connection=conn) > 0
        conn.rollback()
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE dedup_key = 'invoice-3'").fetchone()[0] == 0


def test_dedup_key_concurrent_enqueues_agree(queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    import threading

    with psycopg.connect(dsn) as first:
        holder = queue.enqueue("generate_invoice", {"order_id": 9}, dedup_key="invoice-9", connection=first)
        second: list[int] = []
        # The second enqueue waits on the first's uncommitted row, then yields to it once it commits.
        racer = threading.Thread(
            target=lambda: second.append(queue.enqueue("generate_invoice", {"order_id": 9}, dedup_key="invoice-9"))
        )
        racer.start()
        racer.join(0.5)
        assert racer.is_alive() and second == []
        first.commit()
        racer.join(10)
    assert second == [holder]
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE dedup_key = 'invoice-9'").fetchone()[0] == 1
