"""Tasks the integration tests run in real worker processes (`pgqueue work --app tests.apps.jobs_app`).

Handlers that must prove exactly-once execution write a row to `test_results` on their own connection.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import psycopg

from pgqueue import Fixed, Queue, current_job

queue = Queue()
_local = threading.local()

RESULTS_DDL = """
CREATE TABLE IF NOT EXISTS test_results (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    n int,
    pid int NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True)
        _local.conn = conn
    return conn


def _record(n: int | None) -> None:
    job = current_job()
    _conn().execute(
        "INSERT INTO test_results (job_id, attempt, n, pid) VALUES (%s, %s, %s, %s)",
        (job.id, job.attempt, n, os.getpid()),
    )


@queue.task(name="record")
def record(n: int) -> None:
    _record(n)


@queue.task(name="record_async")
async def record_async(n: int) -> None:
    await asyncio.to_thread(_record, n)


@queue.task(name="slow_record", retry=Fixed(0.2))
def slow_record(n: int, seconds: float) -> None:
    """Sleeps, then records: a job that is mid-run when the test kills or stops its worker."""
    time.sleep(seconds)
    _record(n)


@queue.task(name="always_fails", max_attempts=2, retry=Fixed(0.1))
def always_fails() -> None:
    raise RuntimeError("this job always fails")


@queue.task(name="noop")
def noop(n: int = 0) -> None:
    pass
