"""The FastAPI example (examples/fastapi_orders) over HTTP against the test's database, then a real worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from examples.fastapi_orders.app import create_app

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
ORDER = {
    "email": "ada@example.com",
    "items": [
        {"sku": "BOOK-1", "quantity": 2, "unit_price": "12.50"},
        {"sku": "PEN-7", "quantity": 1, "unit_price": "3"},
    ],
}
FREE = {"email": "eve@example.com", "items": [{"sku": "SAMPLE", "quantity": 3, "unit_price": "0.00"}]}


@asynccontextmanager
async def serve(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app as uvicorn would run it (its lifespan: engine, orders table), spoken to over HTTP in-process."""
    app = create_app(dsn)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orders") as client,
    ):
        yield client


def run(dsn: str, scenario: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with serve(dsn) as client:
            await scenario(client)

    asyncio.run(main())


def count(db: psycopg.Connection, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def test_order_and_its_jobs_commit_together_and_a_worker_runs_them(dsn: str, db: psycopg.Connection) -> None:
    run(dsn, lambda client: _order_and_its_jobs(client, dsn, db))


async def _order_and_its_jobs(client: httpx.AsyncClient, dsn: str, db: psycopg.Connection) -> None:
    created = await client.post("/orders", json=ORDER)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["total"] == "28.00" and len(body["jobs"]) == 3
    rows = db.execute(
        "SELECT id, task, queue, status, args FROM pgqueue.jobs WHERE args->>'order_id' = %s ORDER BY id",
        (str(body["id"]),),
    ).fetchall()
    assert [row[0] for row in rows] == body["jobs"]
    assert [(task, queue, status) for _, task, queue, status, _ in rows] == [
        ("send_confirmation_email", "emails", "pending"),
        ("generate_invoice", "invoices", "pending"),
        ("notify_warehouse", "warehouse", "pending"),
    ]
    assert rows[2][4]["items"][0] == {"sku": "BOOK-1", "quantity": 2, "unit_price": "12.50"}
    # Written by one transaction: the order row and the three job rows carry the same xmin.
    xmins = db.execute(
        "SELECT xmin::text FROM orders WHERE id = %(id)s "
        "UNION SELECT xmin::text FROM pgqueue.jobs WHERE args->>'order_id' = %(id)s::text",
        {"id": body["id"]},
    ).fetchall()
    assert len(xmins) == 1

    shown = (await client.get(f"/orders/{body['id']}")).json()
    assert shown["email"] == "ada@example.com" and [job["status"] for job in shown["jobs"]] == ["pending"] * 3

    env = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    worker = await asyncio.to_thread(
        subprocess.run,
        [PGQUEUE, "work", "--app", "examples.fastapi_orders.jobs", "--burst", "--dsn", dsn],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr

    after = (await client.get(f"/orders/{body['id']}")).json()
    assert [(job["task"], job["status"], job["attempts"], job["result"]) for job in after["jobs"]] == [
        ("send_confirmation_email", "completed", 1, {"sent_to": "ada@example.com"}),
        ("generate_invoice", "completed", 1, {"pdf": f"invoices/{body['id']}.pdf"}),
        ("notify_warehouse", "completed", 1, {"units": 3}),
    ]


def test_rejected_order_leaves_no_order_and_no_jobs(dsn: str, db: psycopg.Connection) -> None:
    run(dsn, lambda client: _rejected_order(client, db))


async def _rejected_order(client: httpx.AsyncClient, db: psycopg.Connection) -> None:
    kept = await client.post("/orders", json=ORDER)
    assert kept.status_code == 201
    # Rejected by code after its three enqueues: the rollback takes the jobs with the order.
    rejected = await client.post("/orders", json=FREE)
    assert rejected.status_code == 422
    assert rejected.json() == {"detail": "order rejected: its total must be positive"}
    assert count(db, "SELECT count(*) FROM orders") == 1
    assert count(db, "SELECT count(*) FROM pgqueue.jobs") == 3
    assert count(db, "SELECT count(*) FROM pgqueue.jobs WHERE args->>'to' = 'eve@example.com'") == 0
    # Bad input is refused before any statement.
    invalid = await client.post("/orders", json={"email": "ada@example.com", "items": [{"sku": "X", "quantity": 0}]})
    assert invalid.status_code == 422
    assert count(db, "SELECT count(*) FROM orders") == 1 and count(db, "SELECT count(*) FROM pgqueue.jobs") == 3
    assert (await client.get("/orders/999999")).status_code == 404


def test_start_up_without_the_schema_says_to_migrate(empty_dsn: str) -> None:
    from pgqueue import SchemaMissingError

    async def start() -> None:
        async with serve(empty_dsn):
            pass

    with pytest.raises(SchemaMissingError, match="pgqueue migrate"):
        asyncio.run(start())
