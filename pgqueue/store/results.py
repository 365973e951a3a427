"""Waiting for a job to finish (Queue.result): LISTEN on the finished channel, then read the job's row, and read it
again after each notification until it is finished or the time is up.

The row decides, never a notification: a forged one costs one read, and since the row is read after LISTEN is
on, a job that finished before the wait began (its notification sent to nobody) is seen at once. The channel's
notifications carry nothing: the trigger of migration 0009 sends one per statement that changes job statuses
(a worker's batched acks ride on its next claim: one notification for all of them), so a waiter reads its row at
most once per such statement, and all notifications that arrived meanwhile are taken together. Without any
notification the row is read again every BACKSTOP seconds, for a job finished by a statement that fired no
trigger (hand-written SQL with triggers disabled, a restore).

The twins differ by `await` alone.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from pgqueue.errors import JobCancelled, JobFailed, JobNotFoundError
from pgqueue.store import statements
from pgqueue.store.connections import connect_kwargs
from pgqueue.store.errors import database_errors
from pgqueue.store.rows import JobState
from pgqueue.store.run import count, count_async, fetch, fetch_async
from pgqueue.store.schema import FINISHED_CHANNEL, JobStatus

FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
BACKSTOP = 10.0  # seconds between reads when no notification comes
APPLICATION_NAME = "pgqueue result"


def wait_for_job(dsn: str, job_id: int, timeout: float | None) -> JobState | None:
    """The job's state once it is finished, or as it is when `timeout` seconds have passed (None: no limit);
    None when there is no such job."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with database_errors(), psycopg.connect(dsn, autocommit=True, **connect_kwargs(dsn, APPLICATION_NAME)) as conn:
        count(conn, statements.listen(FINISHED_CHANNEL))
        while True:
            found = fetch(conn, statements.job_state(job_id))
            state = found[0] if found else None
            wait = _wait(state, deadline)
            if wait is None:
                return state
            woken = sum(1 for _ in conn.notifies(timeout=wait, stop_after=1))
            if woken:  # take whatever else came meanwhile too, so that one read answers them all
                sum(1 for _ in conn.notifies(timeout=0))


async def wait_for_job_async(dsn: str, job_id: int, timeout: float | None) -> JobState | None:
    deadline = None if timeout is None else time.monotonic() + timeout
    with database_errors():
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **connect_kwargs(dsn, APPLICATION_NAME))
        async with conn:
            await count_async(conn, statements.listen(FINISHED_CHANNEL))
            while True:
                found = await fetch_async(conn, statements.job_state(job_id))
                state = found[0] if found else None
                wait = _wait(state, deadline)
                if wait is None:
                    return state
                woken = [notice async for notice in conn.notifies(timeout=wait, stop_after=1)]
                if woken:
                    [notice async for notice in conn.notifies(timeout=0)]


def _wait(state: JobState | None, deadline: float | None) -> float | None:
    """How long to wait for a notification before reading again; None: the answer is `state` as it is."""
    if state is None or state.status in FINISHED:
        return None
    if deadline is None:
        return BACKSTOP
    remaining = deadline - time.monotonic()
    return None if remaining <= 0 else min(remaining, BACKSTOP)


def outcome(job_id: int, state: JobState | None, timeout: float | None) -> Any:
    """The stored result of a completed job; else the exception that says how the wait ended."""
    if state is None:
        raise JobNotFoundError(job_id)
    if state.status == JobStatus.COMPLETED:
        return state.result
    if state.status == JobStatus.FAILED:
        raise JobFailed(job_id, state.error)
    if state.status == JobStatus.CANCELLED:
        raise JobCancelled(job_id)
    raise TimeoutError(f"job {job_id} did not finish within {timeout:g} s (it is {state.status})")
