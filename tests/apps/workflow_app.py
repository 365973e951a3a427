"""Tasks the workflow tests run in real worker processes (`pgqueue work --app tests.apps.workflow_app`).

Each handler writes a row to `wf_runs` on its own connection, with what it saw of its parents, so a test can
tell what ran, how often, in which order and with which parents' outcomes.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

import psycopg

from pgqueue import Queue, current_job

queue = Queue()
_local = threading.local()

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS wf_runs (
    job_id bigint NOT NULL,
    step text NOT NULL,
    parents jsonb NOT NULL,
    parent_results jsonb NOT NULL,
    pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    seq bigint GENERATED ALWAYS AS IDENTITY
)
"""


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True)
        _local.conn = conn
    return conn


def _record(step: str, parents: list[Any], results: dict[int, Any]) -> None:
    _conn().execute(
        "INSERT INTO wf_runs (job_id, step, parents, parent_results, pid) VALUES (%s, %s, %s, %s, %s)",
        (
            current_job().id,
            step,
            json.dumps([{"id": p.id, "status": p.status} for p in parents]),
            json.dumps({str(k): v for k, v in results.items()}),
            os.getpid(),
        ),
    )


@queue.task(name="wf_step", max_attempts=1)
def wf_step(step: str, value: Any = None, fail: bool = False, fail_unless: str | None = None) -> Any:
    """Records that it ran (and its parents' outcomes); fails for good when `fail`, or while the file
    `fail_unless` does not exist; returns `value`."""
    job = current_job()
    _record(step, job.parents(), job.parent_results())
    if fail or (fail_unless is not None and not Path(fail_unless).exists()):
        raise RuntimeError(f"step {step} fails on purpose")
    return value


@queue.task(name="wf_step_async", max_attempts=1)
async def wf_step_async(step: str, value: Any = None) -> Any:
    job = current_job()
    parents = await job.parents_async()
    results = await job.parent_results_async()
    await asyncio.to_thread(_record, step, parents, results)
    return value


@queue.task(name="wf_barrier", max_attempts=1, timeout=300)
async def wf_barrier(flag: str) -> None:
    """Waits (without recording) until the file `flag` exists: many of these then finish at the same instant."""
    path = Path(flag)
    while not path.exists():
        await asyncio.sleep(0.02)
