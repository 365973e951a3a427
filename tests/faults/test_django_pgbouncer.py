"""Django through PgBouncer in transaction pooling mode: the job's INSERT runs as Django's own queries do.

Several threads, each with its own Django connection, share four server connections, so consecutive transactions
of one Django connection land on different server connections: a prepared statement would be missing there (with
`"prepare_threshold": 0` in the server_binding alias's OPTIONS, every thread fails with 'prepared statement "_pg3_0"
already exists'; Django's default, None, prepares nothing, and pgqueue adds nothing).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from pgqueue import JobSpec, Queue
from tests.faults.harness import FaultDatabase, PgBouncer, PrivateServer, scalar
from tests.faults.test_fault_pgbouncer import PGBOUNCER
from tests.integrations.django_project import settings as project

THREADS = 6
ORDERS_PER_THREAD = 15


@pytest.fixture
def bouncer(pg_server: PrivateServer) -> Iterator[PgBouncer]:
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    running = PgBouncer(PGBOUNCER, pg_server.port)
    try:
        yield running
    finally:
        running.close()


@pytest.mark.parametrize("alias", ["default", "server_binding"])
def test_django_enqueue_through_pgbouncer(
    fault_db: FaultDatabase, db: psycopg.Connection, bouncer: PgBouncer, alias: str
) -> None:
    from django.core.management import call_command
    from django.db import connections, transaction

    pooled = bouncer.dsn(fault_db.name)
    project.configure(pooled)
    project.point_at(pooled)
    call_command("migrate", verbosity=0, database=alias)
    from tests.integrations.django_project import jobs
    from tests.integrations.django_project.orders.models import Order

    queue = Queue(pooled)
    queue.tasks = jobs.queue.tasks
    errors: list[BaseException] = []

    def place_orders(thread: int) -> None:
        try:
            connection = connections[alias]
            for n in range(ORDERS_PER_THREAD):
                try:
                    with transaction.atomic(using=alias):
                        order = Order.objects.using(alias).create(
                            email="ada@example.com", total=Decimal("1.00"), reference=f"{thread}-{n}"
                        )
                        queue.enqueue("confirm_order", {"order_id": order.id}, connection=connection)
                        queue.enqueue_many(
                            [JobSpec("send_receipt", {"order_id": order.id, "to": order.email})], connection=connection
                        )
                        if n % 3 == 2:
                            raise LookupError("out of stock")
                except LookupError:
                    pass
                queue.enqueue("send_receipt", {"order_id": -1, "to": "audit@example.com"}, connection=connection)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=place_orders, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    queue.close()
    connections.close_all()  # the main thread's, used by migrate
    assert errors == []
    committed = THREADS * (ORDERS_PER_THREAD - ORDERS_PER_THREAD // 3)
    assert scalar(db, "SELECT count(*) FROM orders_order") == committed
    assert scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE args->>'order_id' <> '-1'") == 2 * committed
    assert scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE args->>'order_id' = '-1'") == THREADS * ORDERS_PER_THREAD
    # The jobs of each committed order are those of its own transaction.
    assert (
        scalar(db, "SELECT count(*) FROM orders_order o WHERE o.xmin <> ALL (SELECT j.xmin FROM pgqueue.jobs j)") == 0
    )
