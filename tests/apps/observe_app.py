"""Tasks of the observability tests (tests/integration/test_metrics.py, test_json_logs.py), run in real worker
processes (`pgqueue work --app tests.apps.observe_app`)."""

from __future__ import annotations

import os
import time
import warnings

import psycopg

from pgqueue import Fixed, Queue, current_job

queue = Queue()


@queue.task(name="ok")
def ok(n: int = 0) -> int:
    return n


@queue.task(name="flaky", max_attempts=3, retry=Fixed(0))
def flaky() -> None:
    """Fails on its first attempt, then succeeds."""
    if current_job().attempt == 1:
        raise RuntimeError("first attempt fails")


@queue.task(name="boom", max_attempts=2, retry=Fixed(0))
def boom() -> None:
    raise ValueError("always fails")


@queue.task(name="hold")
def hold(flag: str) -> None:
    """Runs until a row with this flag is in `observe_flags` (or the job is cancelled): a job mid-run."""
    job = current_job()
    with psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True) as conn:
        while not job.cancelled:
            if conn.execute("SELECT 1 FROM observe_flags WHERE flag = %s", (flag,)).fetchone():
                return
            time.sleep(0.05)


@queue.task(name="warns")
def warns() -> None:
    warnings.warn("a library's deprecation\nwith a second line", UserWarning, stacklevel=1)


# A declared name with a quote, a backslash and a newline: valid, and each must come out escaped as a label.
@queue.task(name='odd "name"\\\nwith newline', queue="odd\tqueue")
def odd() -> None:
    pass
