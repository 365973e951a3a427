"""Tasks of the concurrency- and rate-limit tests (`pgqueue work --app tests.apps.limits_app`): every handler writes its
start and its end to `limit_runs` on its own connection, so a test can count overlaps from the table."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import psycopg

from pgqueue import Queue, current_job

queue = Queue()
_local = threading.local()

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS limit_runs (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    task text NOT NULL,
    key text,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz,
    PRIMARY KEY (job_id, attempt)
)
"""

CONCURRENCY = 3
PER_CUSTOMER = 1
PDF_QUEUE = 2
RATE = "5/s"
RATE_PER_CUSTOMER = "2/s"


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True)
        _local.conn = conn
    return conn


def _run(key: str | None, seconds: float) -> None:
    job = current_job()
    _conn().execute(
        "INSERT INTO limit_runs (job_id, attempt, task, key, pid) VALUES (%s, %s, %s, %s, %s)",
        (job.id, job.attempt, job.task, key, os.getpid()),
    )
    time.sleep(seconds)
    _conn().execute(
        "UPDATE limit_runs SET ended_at = clock_timestamp() WHERE job_id = %s AND attempt = %s", (job.id, job.attempt)
    )


@queue.task(name="limited", concurrency=CONCURRENCY)
def limited(n: int, seconds: float = 0.05) -> None:
    _run(None, seconds)


@queue.task(name="per_customer", concurrency=PER_CUSTOMER, concurrency_key="customer_id")
def per_customer(customer_id: Any, seconds: float = 0.05) -> None:
    _run(json.dumps(customer_id, sort_keys=True), seconds)  # 1 and "1" are different customers


@queue.task(name="unlimited")
def unlimited(n: int, seconds: float = 0.0) -> None:
    _run(None, seconds)


@queue.task(name="render", queue="pdf")
def render(n: int, seconds: float = 0.05) -> None:
    _run(None, seconds)


queue.limit_queue("pdf", concurrency=PDF_QUEUE)


@queue.task(name="rated", rate_limit=RATE)
def rated(n: int, seconds: float = 0.0) -> None:
    _run(None, seconds)


@queue.task(name="rated_per_customer", rate_limit=RATE_PER_CUSTOMER, rate_key="customer_id", concurrency=2)
def rated_per_customer(customer_id: Any, seconds: float = 0.0) -> None:
    _run(json.dumps(customer_id, sort_keys=True), seconds)
