"""`pgqueue demo`: an order and its jobs committed together, a worker that runs them, the history in SQL."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

import psycopg

from pgqueue import migrate
from pgqueue.queue import Queue
from pgqueue.retry import Fixed
from pgqueue.tables import format_table
from pgqueue.worker import Worker, WorkerSettings

DEMO_QUEUE = "pgqueue-demo"

HISTORY_QUERY = """\
SELECT id, task, status, attempts, args->>'order_id' AS order_id,
       finished_at - created_at AS took,
       (SELECT string_agg(e->>'attempt' || ': ' || (e->>'error'), '; ') FROM jsonb_array_elements(errors) e)
           AS errors
FROM pgqueue.jobs
WHERE queue = 'pgqueue-demo' AND args->>'order_id' = %(order_id)s
ORDER BY id"""

demo_queue = Queue()
_invoice_attempts: dict[int, int] = {}


@demo_queue.task(name="send_confirmation_email", queue=DEMO_QUEUE, max_attempts=3)
def send_confirmation_email(order_id: int, to: str) -> None:
    """A sync handler: runs on a worker thread."""


@demo_queue.task(name="generate_invoice", queue=DEMO_QUEUE, max_attempts=3, retry=Fixed(1.0))
async def generate_invoice(order_id: int) -> dict[str, str]:
    """An async handler that fails its first attempt, as a flaky PDF service would."""
    _invoice_attempts[order_id] = _invoice_attempts.get(order_id, 0) + 1
    if _invoice_attempts[order_id] == 1:
        raise ConnectionError("PDF service timed out")
    await asyncio.sleep(0.05)
    return {"invoice": f"INV-{order_id:05d}.pdf"}


def run_demo(dsn: str, say: Callable[[str], Any]) -> None:
    demo_queue.dsn = dsn
    migrate.upgrade(dsn)
    say("pgqueue demo: schema migrated")
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS pgqueue_demo")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pgqueue_demo.orders "
            "(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL)"
        )
        conn.commit()

        # The order row and its jobs commit together...
        row = conn.execute(
            "INSERT INTO pgqueue_demo.orders (customer, total) VALUES ('ada@example.com', 42.00) RETURNING id"
        ).fetchone()
        assert row is not None
        order_id = int(row[0])
        email_job = send_confirmation_email.enqueue({"order_id": order_id, "to": "ada@example.com"}, connection=conn)
        invoice_job = generate_invoice.enqueue({"order_id": order_id}, connection=conn)
        conn.commit()
        say(f"order {order_id} committed with jobs {email_job} (email) and {invoice_job} (invoice)")

        # ...or roll back together: no job for an order that does not exist.
        row = conn.execute(
            "INSERT INTO pgqueue_demo.orders (customer, total) VALUES ('bob@example.com', 7.00) RETURNING id"
        ).fetchone()
        assert row is not None
        send_confirmation_email.enqueue({"order_id": int(row[0]), "to": "bob@example.com"}, connection=conn)
        conn.rollback()
        orphans = conn.execute(
            "SELECT count(*) FROM pgqueue.jobs WHERE args->>'order_id' = %s", (str(row[0]),)
        ).fetchone()
        say(f"order {row[0]} rolled back: {orphans[0] if orphans else '?'} jobs exist for it")

    say("running a worker until the order's jobs are done (the invoice fails once and is retried):")
    asyncio.run(_work_until_done(dsn, [email_job, invoice_job]))

    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(HISTORY_QUERY, {"order_id": str(order_id)})
        headers = [column.name for column in cursor.description or []]
        rows = [[_cell(value) for value in record] for record in cursor.fetchall()]
    say("\nthe job history is plain SQL:\n")
    say(HISTORY_QUERY.replace("%(order_id)s", f"'{order_id}'") + ";\n")
    say(format_table(headers, rows))


async def _work_until_done(dsn: str, job_ids: list[int]) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  [worker] %(message)s"))
    worker_log = logging.getLogger("pgqueue.worker")
    worker_log.addHandler(handler)
    worker_log.setLevel(logging.DEBUG)
    worker = Worker(demo_queue, WorkerSettings(queues=[DEMO_QUEUE], concurrency=4), dsn=dsn)
    try:
        runner = asyncio.create_task(worker.run_async())
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while not runner.done():
                cursor = await conn.execute(
                    "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND status IN ('pending', 'running')",
                    (job_ids,),
                )
                row = await cursor.fetchone()
                if row and row[0] == 0:
                    break
                await asyncio.sleep(0.1)
        worker.stop()
        await runner
    finally:
        worker_log.removeHandler(handler)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "total_seconds"):
        return f"{value.total_seconds():.3f} s"
    return str(value)
