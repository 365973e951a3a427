"""Worker-side record of every handler call, written to `bench_results` when the worker process exits.

A handler only appends to a list (no round trip per job, so the record does not slow the queue it
measures); the orchestrator then proves each job ran exactly once from the table. `sent` is the
CLOCK_MONOTONIC time of the enqueue call (shared by all processes on Linux), so `started - sent`
is the pick-up latency.
"""

from __future__ import annotations

import atexit
import os
import time

import psycopg

RESULTS_DSN_ENV = "BENCH_RESULTS_DSN"
RESULTS_DDL = """
CREATE TABLE IF NOT EXISTS bench_results (
    n bigint NOT NULL,
    sent double precision NOT NULL,
    started double precision NOT NULL,
    pid int NOT NULL
)
"""

_calls: list[tuple[int, float, float]] = []


def record(n: int, sent: float) -> None:
    _calls.append((n, sent, time.monotonic()))


def _write() -> None:
    dsn = os.environ.get(RESULTS_DSN_ENV)
    if not dsn or not _calls:
        return
    pid = os.getpid()
    copy_sql = "COPY bench_results (n, sent, started, pid) FROM STDIN"
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for n, sent, started in _calls:
            copy.write_row((n, sent, started, pid))
    _calls.clear()


atexit.register(_write)
