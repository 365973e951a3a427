"""`pgqueue demo`: an order and its jobs committed together, a worker that runs them, the history in SQL.

The demo's own statements (its orders table, the history query it prints) are in pgqueue/sql/demo.sql."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import typer

from pgqueue.cli.common import DsnOption, app, dsn_for
from pgqueue.cli.errors import friendly_errors
from pgqueue.cli.tables import format_table
from pgqueue.queue.queue import Queue
from pgqueue.queue.retry import Fixed
from pgqueue.settings import WorkerSettings
from pgqueue.store import migrate, statements
from pgqueue.store.run import count, fetch, fetch_async
from pgqueue.worker import Worker

DEMO_QUEUE = "pgqueue-demo"

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


@app.command()
@friendly_errors
def demo(dsn: DsnOption = None) -> None:
    """Show the main job end to end: an order and its jobs in one transaction, a worker, the history."""
    run_demo(dsn_for(dsn), typer.echo)


def run_demo(dsn: str, say: Callable[[str], Any]) -> None:
    demo_queue.dsn = dsn
    migrate.upgrade(dsn)
    say("pgqueue demo: schema migrated")
    with psycopg.connect(dsn) as conn:
        for command in statements.demo_setup():
            count(conn, command)
        conn.commit()

        # The order row and its jobs commit together...
        (order_id,) = fetch(conn, statements.demo_insert_order("ada@example.com", 42.00))[0]
        email_job = send_confirmation_email.enqueue({"order_id": order_id, "to": "ada@example.com"}, connection=conn)
        invoice_job = generate_invoice.enqueue({"order_id": order_id}, connection=conn)
        conn.commit()
        say(f"order {order_id} committed with jobs {email_job} (email) and {invoice_job} (invoice)")

        # ...or roll back together: no job for an order that does not exist.
        (rolled_back,) = fetch(conn, statements.demo_insert_order("bob@example.com", 7.00))[0]
        send_confirmation_email.enqueue({"order_id": rolled_back, "to": "bob@example.com"}, connection=conn)
        conn.rollback()
        (orphans,) = fetch(conn, statements.demo_jobs_of_order(rolled_back))[0]
        say(f"order {rolled_back} rolled back: {orphans} jobs exist for it")

    say("running a worker until the order's jobs are done (the invoice fails once and is retried):")
    asyncio.run(_work_until_done(dsn, [email_job, invoice_job]))

    history = statements.demo_history(order_id)
    with psycopg.connect(dsn) as conn:
        rows = [[_cell(value) for value in record] for record in fetch(conn, history)]
    headers = ["id", "task", "status", "attempts", "order_id", "took", "errors"]
    say("\nthe job history is plain SQL:\n")
    say(str(history.sql).replace("%(order_id)s", f"'{order_id}'") + ";\n")
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
                (unfinished,) = (await fetch_async(conn, statements.demo_unfinished(job_ids)))[0]
                if unfinished == 0:
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
