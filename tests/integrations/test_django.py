"""Django: `queue.enqueue(..., connection=django.db.connection)` joins Django's transaction.

A real Django project (tests/integrations/django_project: settings.configure(), an app with an Order model and its
migration, applied with `migrate`) against the test's own PostgreSQL database. Every assertion about what exists is
read on a separate connection, so it sees only what was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, connections, transaction
from django.db.transaction import TransactionManagementError

from pgqueue import DatabaseUnavailableError, InvalidJobError, JobSpec, Queue, SchemaMissingError
from tests.integrations.django_project import settings as project

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.integrations.django_project.jobs"


@pytest.fixture(scope="session")
def django_configured(server_dsn: str) -> None:
    project.configure(server_dsn)  # a placeholder database; each test points Django at its own


@pytest.fixture
def django_db(django_configured: None, dsn: str) -> Iterator[str]:
    """Django pointed at this test's database, the app's migrations applied."""
    project.point_at(dsn)
    call_command("migrate", verbosity=0)
    yield dsn
    connections.close_all()


@pytest.fixture
def Order(django_db: str) -> Any:  # the model class, named as in a Django project
    from tests.integrations.django_project.orders.models import Order

    return Order


@pytest.fixture
def queue(django_db: str) -> Iterator[Queue]:
    from tests.integrations.django_project import jobs

    q = Queue(django_db)
    q.tasks = jobs.queue.tasks  # the project's task definitions, this test's database
    yield q
    q.close()


def count(db: psycopg.Connection, sql: str, *params: Any) -> int:
    return db.execute(sql, params).fetchone()[0]


def jobs_of(db: psycopg.Connection, order_id: int) -> list[tuple[str, str]]:
    return db.execute(
        "SELECT task, status FROM pgqueue.jobs WHERE args->>'order_id' = %s ORDER BY id", (str(order_id),)
    ).fetchall()


def orders(db: psycopg.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT reference FROM orders_order ORDER BY id")]


def place_order(Order: Any, queue: Queue, reference: str, using: str = "default") -> Any:
    """What a Django view does: the order row, then its jobs, on the same connection."""
    order = Order.objects.using(using).create(email="ada@example.com", total=Decimal("99.50"), reference=reference)
    queue.enqueue("confirm_order", {"order_id": order.id}, connection=connections[using])
    queue.enqueue_many(
        [JobSpec("send_receipt", {"order_id": order.id, "to": order.email}, delay=timedelta(minutes=5))],
        connection=connections[using],
    )
    return order


@pytest.mark.parametrize("alias", ["default", "server_binding"])
def test_atomic_commit_keeps_order_and_jobs(Order, queue: Queue, db: psycopg.Connection, alias: str) -> None:
    with transaction.atomic(using=alias):
        order = place_order(Order, queue, "A-1", using=alias)
        # Inside the block nobody else sees the order or its jobs.
        assert orders(db) == [] and count(db, "SELECT count(*) FROM pgqueue.jobs") == 0
    assert orders(db) == ["A-1"]
    assert jobs_of(db, order.id) == [("confirm_order", "pending"), ("send_receipt", "pending")]
    # One transaction wrote them all: the order row and both job rows carry the same xmin.
    xmins = db.execute(
        "SELECT xmin::text FROM orders_order UNION SELECT xmin::text FROM pgqueue.jobs",
    ).fetchall()
    assert len(xmins) == 1
    assert count(db, "SELECT count(*) FROM pgqueue.jobs WHERE run_at > now() + interval '4 minutes'") == 1


@pytest.mark.parametrize("alias", ["default", "server_binding"])
def test_exception_in_atomic_rolls_back_order_and_jobs(Order, queue: Queue, db: psycopg.Connection, alias) -> None:
    with pytest.raises(RuntimeError, match="payment declined"), transaction.atomic(using=alias):
        place_order(Order, queue, "B-1", using=alias)
        raise RuntimeError("payment declined")
    assert orders(db) == []
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_savepoint_rollback_drops_only_its_jobs(Order, queue: Queue, db: psycopg.Connection) -> None:
    with transaction.atomic():
        kept = place_order(Order, queue, "C-1")
        try:
            with transaction.atomic():  # a savepoint
                dropped = place_order(Order, queue, "C-2")
                raise ValueError("second order refused")
        except ValueError:
            pass
        after = queue.enqueue("confirm_order", {"order_id": kept.id}, connection=connection, dedup_key="again")
    assert orders(db) == ["C-1"]
    assert jobs_of(db, kept.id) == [
        ("confirm_order", "pending"),
        ("send_receipt", "pending"),
        ("confirm_order", "pending"),
    ]
    assert jobs_of(db, dropped.id) == []
    assert count(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = %s AND dedup_key = 'again'", after) == 1


def test_autocommit_commits_at_once(Order, queue: Queue, db: psycopg.Connection) -> None:
    assert connection.get_autocommit()  # Django's default outside atomic()
    order = Order.objects.create(email="ada@example.com", total=Decimal("5.00"), reference="D-1")
    job_id = queue.enqueue("confirm_order", {"order_id": order.id}, connection=connection)
    # Visible to others before Django does anything else, and Django's connection is left idle, in no transaction.
    assert count(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = %s", job_id) == 1
    assert connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert not connection.in_atomic_block and connection.get_autocommit()


def test_enqueue_many_through_django_matches_the_psycopg_path(Order, queue: Queue, db: psycopg.Connection) -> None:
    when = datetime(2031, 1, 1, 9, tzinfo=UTC)
    batch = [JobSpec("send_receipt", {"order_id": n, "to": f"{n}@example.com"}) for n in range(600)]
    batch += [
        JobSpec("confirm_order", {"order_id": 1}, run_at=when, priority=3, max_attempts=2, queue="late"),
        JobSpec("confirm_order", {"order_id": 2}, delay=90),
    ]
    for alias in ("default", "server_binding"):
        with transaction.atomic(using=alias):
            ids = queue.enqueue_many(batch, connection=connections[alias])
        assert len(ids) == 602 and ids == sorted(ids)
        rows = db.execute(
            "SELECT args, queue, run_at, priority, max_attempts FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id",
            (ids,),
        ).fetchall()
        assert [row[0] for row in rows[:600]] == [{"order_id": n, "to": f"{n}@example.com"} for n in range(600)]
        assert rows[600][1:] == ("late", when, 3, 2)
        assert count(
            db, "SELECT count(*) FROM pgqueue.jobs WHERE id = %s AND run_at > now() + interval '80 s'", ids[-1]
        )


def test_statement_goes_through_djangos_cursor(Order, queue: Queue) -> None:
    """Django's execute wrappers (query logging, django-debug-toolbar, assertNumQueries) see the INSERT."""
    from django.test.utils import CaptureQueriesContext

    seen: list[str] = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(wrapper):
        queue.enqueue("confirm_order", {"order_id": 1}, connection=connection)
    assert len(seen) == 1 and seen[0].startswith("INSERT INTO pgqueue.jobs")
    assert len(captured.captured_queries) == 1 and "INSERT INTO pgqueue.jobs" in captured.captured_queries[0]["sql"]


def test_async_orm_and_enqueue_async(Order, queue: Queue, db: psycopg.Connection) -> None:
    """enqueue_async runs where Django's async ORM runs its queries (sync_to_async, thread-sensitive); a
    transaction spanning both is a sync function, as atomic() is sync in Django."""
    from asgiref.sync import sync_to_async

    def place_in_atomic() -> None:
        with transaction.atomic():
            place_order(Order, queue, "E-2")
            raise RuntimeError("rolled back")

    async def scenario() -> int:
        try:
            order = await Order.objects.acreate(email="ada@example.com", total=Decimal("1.00"), reference="E-1")
            job_id = await queue.enqueue_async("confirm_order", {"order_id": order.id}, connection=connection)
            assert count(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = %s", job_id) == 1  # autocommit
            with pytest.raises(RuntimeError, match="rolled back"):
                await sync_to_async(place_in_atomic)()
            # The sync API from async code: Django's own refusal, as for any ORM call there.
            from django.core.exceptions import SynchronousOnlyOperation

            with pytest.raises(SynchronousOnlyOperation):
                queue.enqueue("confirm_order", {"order_id": order.id}, connection=connection)
            return order.id
        finally:
            await sync_to_async(connections.close_all)()

    order_id = asyncio.run(scenario())
    assert orders(db) == ["E-1"]
    assert jobs_of(db, order_id) == [("confirm_order", "pending")]
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 1


def test_worker_process_runs_the_job_with_the_orm(Order, queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    with transaction.atomic():
        order = place_order(Order, queue, "F-1")
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    done = subprocess.run(
        [PGQUEUE, "work", "--app", APP, "--burst", "--concurrency", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert db.execute("SELECT status FROM orders_order WHERE id = %s", (order.id,)).fetchone() == ("confirmed",)
    rows = db.execute(
        "SELECT task, status, result FROM pgqueue.jobs WHERE args->>'order_id' = %s ORDER BY id", (str(order.id),)
    ).fetchall()
    assert rows == [("confirm_order", "completed", {"reference": "F-1"}), ("send_receipt", "pending", None)]


# -- hostile and edge input ----------------------------------------------------------------------------


def test_non_postgresql_backend_is_refused(queue: Queue, db: psycopg.Connection) -> None:
    with pytest.raises(InvalidJobError, match=r"Django database 'sqlite'.*sqlite3.*pgqueue needs PostgreSQL"):
        queue.enqueue("confirm_order", {"order_id": 1}, connection=connections["sqlite"])
    with pytest.raises(InvalidJobError, match="pgqueue needs PostgreSQL"):
        queue.enqueue_many([("confirm_order", {"order_id": 1})], connection=connections["sqlite"])
    assert connections["sqlite"].connection is None  # refused before Django opened anything
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_closed_connection_is_reopened(queue: Queue, db: psycopg.Connection) -> None:
    queue.enqueue("confirm_order", {"order_id": 1}, connection=connection)
    connection.close()
    assert connection.connection is None
    queue.enqueue("confirm_order", {"order_id": 2}, connection=connection)  # Django's ensure_connection
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 2


def terminate_backend(db: psycopg.Connection, pid: int) -> None:
    db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 10
    while count(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_connection_lost_outside_atomic_is_replaced(queue: Queue, db: psycopg.Connection) -> None:
    queue.enqueue("confirm_order", {"order_id": 1}, connection=connection)
    old_pid = connection.connection.info.backend_pid
    terminate_backend(db, old_pid)  # a server restart or an idle-session timeout would do the same
    queue.enqueue("confirm_order", {"order_id": 2}, connection=connection)
    assert connection.connection.info.backend_pid != old_pid
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 2


def test_connection_lost_inside_atomic_is_unavailable(Order, queue: Queue, db: psycopg.Connection) -> None:
    with pytest.raises(DatabaseUnavailableError, match="database unavailable"), transaction.atomic():
        Order.objects.create(email="ada@example.com", total=Decimal("1.00"), reference="G-1")
        terminate_backend(db, connection.connection.info.backend_pid)
        queue.enqueue("confirm_order", {"order_id": 1}, connection=connection)
    assert orders(db) == [] and count(db, "SELECT count(*) FROM pgqueue.jobs") == 0
    # Django dropped the dead connection on leaving the block; the next enqueue connects anew.
    queue.enqueue("confirm_order", {"order_id": 2}, connection=connection)
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 1


def test_broken_atomic_block_raises_djangos_error(Order, queue: Queue, db: psycopg.Connection) -> None:
    Order.objects.create(email="ada@example.com", total=Decimal("1.00"), reference="H-1")
    with transaction.atomic():
        second = Order(email="bob@example.com", total=Decimal("2.00"), reference="H-2")
        second.save()
        # A duplicate, caught without a savepoint: the transaction is aborted, and Django knows it.
        with contextlib.suppress(IntegrityError):
            Order.objects.create(email="eve@example.com", total=Decimal("3.00"), reference="H-1")
        with pytest.raises(TransactionManagementError, match="You can't execute queries until the end"):
            queue.enqueue("confirm_order", {"order_id": second.id}, connection=connection)
    assert orders(db) == ["H-1"]  # the block rolled back as a whole
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_failed_enqueue_marks_the_atomic_block_for_rollback(Order, queue: Queue, db: psycopg.Connection) -> None:
    db.execute("ALTER TABLE pgqueue.jobs RENAME TO jobs_elsewhere")  # the schema is missing for this enqueue
    with transaction.atomic():
        Order.objects.create(email="ada@example.com", total=Decimal("1.00"), reference="I-1")
        with pytest.raises(SchemaMissingError, match="pgqueue migrate"):
            queue.enqueue("confirm_order", {"order_id": 1}, connection=connection)
        # The transaction is aborted in PostgreSQL; Django is told so, as after a failed ORM call, instead of
        # going on and committing a transaction the server will only roll back.
        assert connection.needs_rollback
        with pytest.raises(TransactionManagementError):
            Order.objects.create(email="bob@example.com", total=Decimal("2.00"), reference="I-2")
    assert orders(db) == []


def test_pgqueue_import_does_not_import_django() -> None:
    code = (
        "import sys, pgqueue, pgqueue.store.connections, pgqueue.store.django as d; "
        "assert 'django' not in sys.modules, 'imported'; assert not d.is_django_connection(object()); "
        "assert 'django' not in sys.modules, 'imported by the check'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
