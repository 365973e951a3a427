"""Helpers of the dashboard's tests: a real uvicorn server in a thread, and rows written as pgqueue writes them.

`register_worker` writes a registry row as a worker's heartbeat leaves it (sql/workers.sql), with its times set in
the past as a test needs; tests/integration/test_worker_registry.py has real workers write their own.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import uvicorn


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """`app` served over real HTTP on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard's test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def insert_job(db: psycopg.Connection, **columns: Any) -> int:
    """One job row with the given columns (jsonb ones as Python values); the rest take their defaults."""
    columns.setdefault("task", "noop")
    values = [json.dumps(v) if k in ("args", "errors", "result") else v for k, v in columns.items()]
    names = ", ".join(columns)
    marks = ", ".join("%s::jsonb" if k in ("args", "errors", "result") else "%s" for k in columns)
    row = db.execute(f"INSERT INTO pgqueue.jobs ({names}) VALUES ({marks}) RETURNING id", values).fetchone()
    assert row is not None
    return int(row[0])


def register_worker(
    db: psycopg.Connection,
    worker_id: str,
    *,
    host: str = "app-1",
    pid: int = 4242,
    queues: list[str] | None = None,
    concurrency: int = 16,
    running: int = 0,
    started_ago: float = 600.0,
    heartbeat_ago: float = 1.0,
    heartbeat_interval: float | None = 15.0,
    stopped: bool = False,
) -> None:
    """A worker's row; `stopped`: it stopped cleanly at its last heartbeat."""
    db.execute(
        """
        INSERT INTO pgqueue.workers
            (id, host, pid, queues, concurrency, running, started_at, heartbeat_at, heartbeat_interval, stopped_at)
        VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(running)s,
                now() - make_interval(secs => %(started_ago)s), now() - make_interval(secs => %(heartbeat_ago)s),
                %(interval)s, CASE WHEN %(stopped)s THEN now() - make_interval(secs => %(heartbeat_ago)s) END)
        ON CONFLICT (id) DO UPDATE SET running = excluded.running, heartbeat_at = excluded.heartbeat_at
        """,
        {
            "id": worker_id,
            "host": host,
            "pid": pid,
            "queues": queues,
            "concurrency": concurrency,
            "running": running,
            "started_ago": started_ago,
            "heartbeat_ago": heartbeat_ago,
            "interval": heartbeat_interval,
            "stopped": stopped,
        },
    )


def failed_errors(attempts: int, message: str, worker: str = "app-1:4242:9f3c1a") -> list[dict[str, Any]]:
    """The error history fail_jobs writes: one object per failed attempt, the last one a minute ago."""
    now = datetime.now(UTC)
    return [
        {
            "attempt": n,
            "started_at": (now - timedelta(minutes=3 * (attempts - n) + 1, seconds=2)).isoformat(),
            "at": (now - timedelta(minutes=3 * (attempts - n) + 1)).isoformat(),
            "error": f"{message} (attempt {n})",
            "traceback": (
                "Traceback (most recent call last):\n"
                '  File "/srv/app/jobs.py", line 41, in generate_invoice\n'
                "    pdf = render_pdf(order)\n"
                '  File "/srv/app/pdf.py", line 12, in render_pdf\n'
                "    raise ConnectionError('PDF service timed out')\n"
                f"ConnectionError: {message}"
            ),
            "worker": worker,
            "counted": True,
        }
        for n in range(1, attempts + 1)
    ]


def populate(db: psycopg.Connection) -> dict[str, int]:
    """A lively queue for screenshots and page tests: four queues, an hour of history, failures, workers, cron."""
    db.execute(
        """
        INSERT INTO pgqueue.jobs (queue, task, args, status, attempts, created_at, run_at, started_at, finished_at)
        SELECT q.queue, q.task, jsonb_build_object('order_id', 1000 + g, 'customer', 'c-' || (g % 97)),
               'completed', 1, t - interval '2 seconds', t - interval '2 seconds', t - interval '1 second', t
        FROM generate_series(1, 2400) AS g
        CROSS JOIN LATERAL (SELECT now() - make_interval(secs => (g * 1.45)::int + (g % 7)) AS t) AS times
        CROSS JOIN LATERAL (
            SELECT (ARRAY['emails', 'emails', 'default', 'webhooks'])[1 + g % 4] AS queue,
                   (ARRAY['send_email', 'send_email', 'generate_invoice', 'deliver_webhook'])[1 + g % 4] AS task
        ) AS q
        WHERE g % 23 <> 0 OR g > 900
        """
    )
    ids: dict[str, int] = {}
    for n in range(14):
        insert_job(
            db,
            queue="default",
            task="generate_invoice",
            args={"order_id": 42 + n},
            status="failed",
            attempts=3,
            max_attempts=3,
            error="ConnectionError: PDF service timed out",
            errors=failed_errors(3, "PDF service timed out"),
            finished_at=None,
        )
    db.execute("UPDATE pgqueue.jobs SET finished_at = now() - make_interval(secs => id % 3000) WHERE status = 'failed'")
    ids["failed"] = insert_job(
        db,
        queue="default",
        task="generate_invoice",
        args={"order_id": 42, "customer": "ACME Corp", "lines": [{"sku": "A-1", "qty": 3}]},
        status="failed",
        attempts=3,
        max_attempts=3,
        dedup_key="invoice-42",
        error="ConnectionError: PDF service timed out",
        errors=failed_errors(3, "PDF service timed out"),
        finished_at=None,
    )
    db.execute(
        "UPDATE pgqueue.jobs SET finished_at = now() - interval '1 minute', created_at = now() - interval '8 minutes', "
        "run_at = now() - interval '8 minutes' WHERE id = %s",
        (ids["failed"],),
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, args, run_at, created_at) "
        "SELECT 'emails', 'send_email', jsonb_build_object('to', 'user' || g || '@example.com'), "
        "now() - make_interval(secs => g), now() - make_interval(secs => g) FROM generate_series(1, 37) g"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, args, run_at) "
        "SELECT 'reports', 'build_report', jsonb_build_object('day', g), now() - interval '5 minutes' "
        "FROM generate_series(1, 12) g"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, args, run_at) "
        "SELECT 'webhooks', 'deliver_webhook', jsonb_build_object('hook', g), now() + interval '10 minutes' "
        "FROM generate_series(1, 8) g"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, args, status, attempts, started_at, worker_id, lease_expires_at) "
        "SELECT 'emails', 'send_email', jsonb_build_object('to', 'vip' || g || '@example.com'), 'running', 1, "
        "now() - interval '3 seconds', 'app-1:4242:9f3c1a', now() + interval '27 seconds' FROM generate_series(1, 5) g"
    )
    db.execute("INSERT INTO pgqueue.queues (name, paused) VALUES ('reports', true)")
    register_worker(db, "app-1:4242:9f3c1a", host="app-1", pid=4242, concurrency=16, running=5)
    register_worker(db, "app-2:3117:52e0bd", host="app-2", pid=3117, queues=["emails", "webhooks"], running=0)
    register_worker(db, "app-3:998:0c77aa", host="app-3", pid=998, queues=["default"], concurrency=4, heartbeat_ago=300)
    register_worker(db, "app-4:2210:7d41e9", host="app-4", pid=2210, started_ago=3000, heartbeat_ago=1200, stopped=True)
    db.execute(
        "INSERT INTO pgqueue.schedules "
        "(name, cron, timezone, task, queue, skip_if_running, next_fire_at, last_fire_at) "
        "VALUES ('nightly_report', '0 2 * * *', 'Europe/Berlin', 'build_report', 'reports', true, "
        "date_trunc('day', now()) + interval '1 day 1 hour', date_trunc('day', now()) + interval '1 hour'), "
        "('sync_inventory', '*/15 * * * *', 'UTC', 'sync_inventory', 'default', true, "
        "date_trunc('hour', now()) + interval '1 hour', date_trunc('hour', now()))"
    )
    job = insert_job(db, queue="reports", task="build_report", args={"kind": "sales"}, schedule="nightly_report")
    db.execute(
        "INSERT INTO pgqueue.schedule_fires (schedule, fire_at, job_id, skipped_reason) VALUES "
        "('nightly_report', date_trunc('day', now()) + interval '1 hour', %s, NULL), "
        "('sync_inventory', date_trunc('hour', now()), NULL, 'previous job 17 still running'), "
        "('sync_inventory', date_trunc('hour', now()) - interval '15 minutes', NULL, NULL)",
        (job,),
    )
    db.execute("UPDATE pgqueue.schedule_fires SET job_id = %s WHERE skipped_reason IS NULL AND job_id IS NULL", (job,))
    db.execute("ANALYZE pgqueue.jobs")
    return ids
