"""Tasks the integration tests run in real worker processes (`pgqueue work --app tests.apps.jobs_app`).

Handlers that must prove exactly-once execution write a row to `test_results` on their own connection.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

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


# -- tasks of the fault-injection tests (tests/faults) ------------------------------------------------
# They write to `fault_results` through PGQUEUE_RESULTS_DSN, a direct connection that bypasses whatever
# fault sits between the worker and the database, and retry that write across a server restart: a row
# then means "this attempt of this job ran its handler", exactly once per (job, attempt, outcome).

FAULT_RESULTS_DDL = """
CREATE TABLE IF NOT EXISTS fault_results (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    outcome text NOT NULL,
    n int,
    pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (job_id, attempt, outcome)
)
"""


def _fault_write(outcome: str, n: int | None = None, job: Any = None) -> None:
    job = job or current_job()
    deadline = time.monotonic() + 60
    while True:
        conn = getattr(_local, "fault_conn", None)
        try:
            if conn is None or conn.closed:
                dsn = os.environ.get("PGQUEUE_RESULTS_DSN") or os.environ["PGQUEUE_DSN"]
                conn = _local.fault_conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
            conn.execute(
                "INSERT INTO fault_results (job_id, attempt, outcome, n, pid) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (job.id, job.attempt, outcome, n, os.getpid()),
            )
            return
        except psycopg.OperationalError:
            _local.fault_conn = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@queue.task(name="fault_record", retry=Fixed(0.2), max_attempts=10)
def fault_record(n: int, seconds: float = 0.0) -> None:
    time.sleep(seconds)
    _fault_write("done", n)


@queue.task(name="fault_sleep_sync", timeout=1, max_attempts=3, retry=Fixed(0.1))
def fault_sleep_sync(seconds: float, only_attempt: int | None = None, heed_flag: bool = True) -> None:
    """Over its timeout on every attempt (or only on `only_attempt`); notes when it sees the cancel flag."""
    job = current_job()
    if only_attempt is None or job.attempt == only_attempt:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if heed_flag and job.cancelled:
                _fault_write("saw_flag", job=job)
                return
            time.sleep(0.05)
    _fault_write("done", job=job)


@queue.task(name="fault_sleep_async", timeout=1, max_attempts=3, retry=Fixed(0.1))
async def fault_sleep_async(seconds: float, only_attempt: int | None = None) -> None:
    job = current_job()
    if only_attempt is None or job.attempt == only_attempt:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await asyncio.to_thread(_fault_write, "cancelled", None, job)
            raise
    await asyncio.to_thread(_fault_write, "done", None, job)


class _NotAnException(BaseException):
    """A BaseException subclass a careless library might raise."""


_RAISES: dict[str, type[BaseException]] = {
    "base": _NotAnException,
    "system_exit": SystemExit,
    "keyboard_interrupt": KeyboardInterrupt,
    "generator_exit": GeneratorExit,
    "timeout": TimeoutError,  # its own, with no task timeout set
    "nul_message": ValueError,  # the message carries a NUL byte, which PostgreSQL text cannot hold
}


def _raise(kind: str) -> None:
    raise _RAISES[kind](f"raised by the handler ({kind})" + ("\x00" if kind == "nul_message" else ""))


@queue.task(name="fault_raise", max_attempts=1)
def fault_raise(kind: str) -> None:
    _raise(kind)


@queue.task(name="fault_raise_async", max_attempts=1, timeout=30)
async def fault_raise_async(kind: str) -> None:
    await asyncio.sleep(0)
    _raise(kind)


@queue.task(name="fault_typed", max_attempts=1)
def fault_typed(n: int) -> int:
    return n + 1  # a str from hand-written JSON makes this a TypeError


@queue.task(name="fault_unserialisable", max_attempts=1)
def fault_unserialisable(kind: str) -> Any:
    return {"object": object(), "set": {1, 2}, "nan": float("nan"), "bytes": b"x", "nul": "a\x00b"}[kind]


@queue.task(name="fault_cancellable_sync", retry=Fixed(0.1))
def fault_cancellable_sync(seconds: float) -> None:
    job = current_job()
    _fault_write("started", job=job)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if job.cancelled:
            _fault_write("saw_flag", job=job)
            return
        time.sleep(0.05)
    _fault_write("done", job=job)


@queue.task(name="fault_cancellable_async", retry=Fixed(0.1))
async def fault_cancellable_async(seconds: float) -> None:
    job = current_job()
    await asyncio.to_thread(_fault_write, "started", None, job)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await asyncio.to_thread(_fault_write, "cancelled", None, job)
        raise
    await asyncio.to_thread(_fault_write, "done", None, job)


# -- tasks of the hostile-input tests (tests/faults/test_hostile.py) --------------------------------------


@queue.task(name="fault_started_record", retry=Fixed(0.2), max_attempts=10)
def fault_started_record(n: int) -> None:
    """Notes that its handler started, then that it finished: tells a job that never ran from one cut short.

    The start goes first to FAULT_STARTS_FILE, with one write(2) that a kill -9 cannot undo: a row inserted over
    a connection could still be in flight when the worker's own record of the start has committed."""
    job = current_job()
    starts_file = os.environ.get("FAULT_STARTS_FILE")
    if starts_file:
        descriptor = os.open(starts_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, f"{job.id}\n".encode())
        finally:
            os.close(descriptor)
    _fault_write("started", n, job)
    _fault_write("done", n, job)


@queue.task(name="fault_block_loop", max_attempts=3)
async def fault_block_loop(seconds: float) -> None:
    """Sync code inside `async def`: blocks the worker's event loop for `seconds`."""
    time.sleep(seconds)
    _fault_write("done")


@queue.task(name="fault_stubborn", max_attempts=1)
def fault_stubborn(seconds: float) -> None:
    """Ignores the cancel flag: still running when the grace period ends."""
    job = current_job()
    _fault_write("started", job=job)
    time.sleep(seconds)
    _fault_write("done", job=job)


@queue.task(name="fault_traced", max_attempts=1)
async def fault_traced(seconds: float) -> None:
    """Writes 'started TOKEN' / 'done TOKEN' (or 'cancelled TOKEN') with a token per run, so that two runs of the
    same attempt number are told apart."""
    job = current_job()
    token = os.urandom(3).hex()
    await asyncio.to_thread(_fault_write, f"started {token}", None, job)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await asyncio.to_thread(_fault_write, f"cancelled {token}", None, job)
        raise
    await asyncio.to_thread(_fault_write, f"done {token}", None, job)


@queue.task(name="fault_fail_once", retry=Fixed(2.0), max_attempts=3)
def fault_fail_once() -> None:
    if current_job().attempt == 1:
        raise RuntimeError("the first attempt fails")
    _fault_write("done")


@queue.task(name="fault_raise_big", max_attempts=1)
def fault_raise_big(size: int) -> None:
    raise RuntimeError("x" * size)


@queue.task(name="fault_big_result", max_attempts=1)
def fault_big_result(size: int) -> str:
    return "x" * size


@queue.task(name="fault_return", max_attempts=1)
def fault_return(value: Any) -> Any:
    """Returns its argument as the job's result."""
    return value
