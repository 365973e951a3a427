"""The dashboard's statements: typed functions over the named blocks of pgqueue/sql/dashboard.sql (and cancel_jobs /
notify_queue of queries.sql), each returning named rows, and the dashboard's connection pool.

pgqueue/dashboard/ builds its pages from these rows and runs no SQL itself. Every function takes a connection of
`open_pool` (autocommit, server-side prepares off, UTC, a statement timeout); an action is one short transaction.
Filters arrive as the mapping JobFilter.sql_params() gives (status, queue, task, args, created_from, created_to;
None: not filtered), bound as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from pgqueue.store import rows, statements
from pgqueue.store.queries import QUERIES
from pgqueue.store.run import count, fetch, first
from pgqueue.store.statements import Query
from pgqueue.text import first_line

Connection = psycopg.Connection[Any]
Pool = ConnectionPool
Filters = Mapping[str, Any]


# -- rows (fields in the order of their SELECT lists) ----------------------------------------------------------


class Clock(NamedTuple):
    now: datetime
    chart_start: datetime  # the first of the chart's 60 minutes


class QueueCount(NamedTuple):
    """Active jobs of one queue and kind (due, scheduled, running, failed); `oldest_seconds` for due ones only."""

    queue: str
    kind: str
    jobs: int
    oldest_seconds: float | None


class RecentFinished(NamedTuple):
    """Jobs of one queue and status that finished in one minute of the last hour."""

    queue: str
    status: str
    minute: datetime
    jobs: int
    oldest: datetime


class QueueSetting(NamedTuple):
    name: str
    paused: bool
    updated_at: datetime


class RegisteredWorker(NamedTuple):
    """A row of pgqueue.workers made safe to show (dashboard_workers says how)."""

    id: str
    host: str
    pid: int
    queues: list[str] | None
    queues_total: int
    concurrency: int
    running: int
    started_at: datetime | None
    heartbeat_at: datetime | None
    stopped_at: datetime | None
    silent_seconds: float | None
    heartbeat_interval: float | None


class ScheduleQueue(NamedTuple):
    queue: str


class JobListing(NamedTuple):
    """A row of the job list, names and args clipped."""

    id: int
    queue: str
    task: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    args_preview: str
    args_clipped: bool
    error: str | None


class JobRecord(NamedTuple):
    """One job for its page: each text clipped, with its full length beside it."""

    id: int
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    now: datetime
    queue: str
    queue_length: int
    task: str
    task_length: int
    dedup_key: str | None
    dedup_key_length: int | None
    schedule: str | None
    schedule_length: int | None
    worker_id: str | None
    worker_id_length: int | None
    args: str
    args_length: int
    result: str | None
    result_length: int | None
    error: str | None
    error_length: int | None
    error_count: int
    errors_type: str | None


class Relative(NamedTuple):
    """A job's parent or child in a workflow; `status` is None when the job was pruned since."""

    relation: str  # 'parent' or 'child'
    id: int
    task: str | None
    status: str | None
    on_failure: str


class Progress(NamedTuple):
    """A job's parents by outcome so far (failed counts cancelled ones too), and its number of children."""

    parents: int
    completed: int
    failed: int
    children: int


class AttemptEntry(NamedTuple):
    """One entry of a job's error history, its texts clipped; `raw` for an entry that is not an object."""

    ordinal: int
    kind: str
    attempt: str | None
    started_at: str | None
    at: str | None
    error: str | None
    error_length: int | None
    traceback: str | None
    traceback_length: int | None
    worker: str | None
    counted: str | None
    raw: str | None
    raw_length: int | None


class MatchingCount(NamedTuple):
    jobs: int
    max_id: int | None


class MatchingId(NamedTuple):
    id: int


class ScheduleRecord(NamedTuple):
    name: str  # clipped, for showing
    key: str  # whole, for looking up its fires
    cron: str
    timezone: str
    task: str
    queue: str
    enabled: bool
    skip_if_running: bool
    missed: str
    last_fire_at: datetime | None
    next_fire_at: datetime | None
    updated_at: datetime


class FireRecord(NamedTuple):
    schedule: str
    fire_at: datetime
    job_id: int | None
    skipped_reason: str | None
    created_at: datetime
    job_status: str | None


class RetryResult(NamedTuple):
    """A failed job asked to retry: `retried`, or held back by a job holding its `dedup_key`."""

    id: int
    queue: str | None
    retried: bool
    dedup_key: str | None


class PausedQueue(NamedTuple):
    name: str
    paused: bool


# -- the pool -------------------------------------------------------------------------------------------------


def open_pool(dsn: str, *, statement_timeout_ms: int, max_size: int = 4) -> ConnectionPool:
    """The dashboard's connections, opened in the background (a page waits for one, not the app's start).

    No server-side prepares: each statement is planned with its parameters' values, so an optional filter
    written `(%(x)s IS NULL OR ...)` folds away (see dashboard.sql)."""

    def configure(conn: Connection) -> None:
        fetch(conn, Query(QUERIES["dashboard_session"], {"timeout": f"{statement_timeout_ms}ms"}, _ignore))

    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        timeout=10,
        kwargs={
            "autocommit": True,
            "prepare_threshold": None,
            "application_name": "pgqueue-dashboard",
            "connect_timeout": 10,
        },
        configure=configure,
        open=False,
        name="pgqueue-dashboard",
    )
    pool.open(wait=False)
    return pool


def _ignore(*_columns: Any) -> None:
    return None


class Failure(NamedTuple):
    """A database failure as the dashboard reports it: `kind` is too_slow (the statement timeout), not_migrated,
    unavailable (connection or pool) or error (anything else the server refused); `detail` is one line."""

    kind: str
    detail: str


def failure(exc: BaseException) -> Failure | None:
    """What a driver or pool error means for a page; None for an exception that is not one."""
    detail = first_line(exc)
    if isinstance(exc, psycopg.errors.QueryCanceled):  # an OperationalError too: checked first
        return Failure("too_slow", detail)
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return Failure("not_migrated", detail)
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return Failure("unavailable", detail)
    if isinstance(exc, psycopg.Error):
        return Failure("error", detail)
    return None


# -- reads ----------------------------------------------------------------------------------------------------


def clock(conn: Connection) -> Clock:
    found = first(conn, Query(QUERIES["dashboard_clock"], None, Clock))
    assert found is not None  # a SELECT without FROM always has its row
    return found


def queue_counts(conn: Connection) -> list[QueueCount]:
    return fetch(conn, Query(QUERIES["dashboard_queue_counts"], None, QueueCount))


def recent_finished(conn: Connection, *, cap: int) -> list[RecentFinished]:
    return fetch(conn, Query(QUERIES["dashboard_recent_finished"], {"cap": cap}, RecentFinished))


def queue_settings(conn: Connection) -> list[QueueSetting]:
    return fetch(conn, Query(QUERIES["dashboard_queue_settings"], None, QueueSetting))


def schedule_queues(conn: Connection) -> list[ScheduleQueue]:
    return fetch(conn, Query(QUERIES["dashboard_schedule_queues"], None, ScheduleQueue))


def workers(conn: Connection, *, limit: int) -> list[RegisteredWorker]:
    return fetch(conn, Query(QUERIES["dashboard_workers"], {"limit": limit}, RegisteredWorker))


def jobs_newest(conn: Connection, filters: Filters, *, before_id: int | None, limit: int) -> list[JobListing]:
    params = {**filters, "before_id": before_id, "limit": limit}
    return fetch(conn, Query(QUERIES["dashboard_jobs_newest"], params, JobListing))


def jobs_by_run_at(
    conn: Connection, filters: Filters, *, after_run_at: datetime | None, after_id: int | None, limit: int
) -> list[JobListing]:
    params = {**filters, "after_run_at": after_run_at, "after_id": after_id, "limit": limit}
    return fetch(conn, Query(QUERIES["dashboard_jobs_by_run_at"], params, JobListing))


def job(conn: Connection, job_id: int, *, name_clip: int, json_clip: int, text_clip: int) -> JobRecord | None:
    params = {"id": job_id, "name_clip": name_clip, "json_clip": json_clip, "text_clip": text_clip}
    return first(conn, Query(QUERIES["dashboard_job"], params, JobRecord))


def job_relatives(conn: Connection, job_id: int, *, limit: int, name_clip: int) -> list[Relative]:
    params = {"id": job_id, "limit": limit, "name_clip": name_clip}
    return fetch(conn, Query(QUERIES["dashboard_job_relatives"], params, Relative))


def job_progress(conn: Connection, job_id: int) -> Progress:
    found = first(conn, Query(QUERIES["dashboard_job_progress"], {"id": job_id}, Progress))
    assert found is not None  # a SELECT without FROM always has its row
    return found


def job_attempts(
    conn: Connection, job_id: int, *, limit: int, text_clip: int, traceback_clip: int
) -> list[AttemptEntry]:
    """The newest `limit` entries of the job's error history, newest first."""
    params = {"id": job_id, "limit": limit, "text_clip": text_clip, "traceback_clip": traceback_clip}
    return fetch(conn, Query(QUERIES["dashboard_job_attempts"], params, AttemptEntry))


def count_matching(conn: Connection, filters: Filters, status: str) -> MatchingCount:
    params = {**filters, "status": status}
    found = first(conn, Query(QUERIES["dashboard_count_matching"], params, MatchingCount))
    assert found is not None  # an aggregate without GROUP BY always has its row
    return found


def matching_ids(
    conn: Connection, filters: Filters, *, status: str, max_id: int, after_id: int | None, limit: int
) -> list[int]:
    params = {**filters, "status": status, "max_id": max_id, "after_id": after_id, "limit": limit}
    return [row.id for row in fetch(conn, Query(QUERIES["dashboard_matching_ids"], params, MatchingId))]


def schedules(conn: Connection, *, limit: int) -> list[ScheduleRecord]:
    return fetch(conn, Query(QUERIES["dashboard_schedules"], {"limit": limit}, ScheduleRecord))


def schedule_fires(conn: Connection, names: Sequence[str], *, per_schedule: int) -> list[FireRecord]:
    params = {"names": list(names), "per_schedule": per_schedule}
    return fetch(conn, Query(QUERIES["dashboard_schedule_fires"], params, FireRecord))


# -- actions --------------------------------------------------------------------------------------------------


def retry_jobs(conn: Connection, ids: Sequence[int]) -> list[RetryResult]:
    """Failed jobs among `ids` back to pending, with one notification per queue, in one transaction; jobs whose
    dedup key a pending or running job holds stay failed (retried false). A job enqueued with such a key between
    the statement's check and its update makes the update fail: it is then tried once more."""
    query = Query(QUERIES["dashboard_retry_jobs"], {"ids": list(ids)}, RetryResult)
    for tries_left in (1, 0):
        try:
            with conn.transaction():
                results = fetch(conn, query)
                for queue in sorted({row.queue for row in results if row.retried and row.queue is not None}):
                    count(conn, statements.notify_queue(queue))
            return results
        except psycopg.errors.UniqueViolation:
            if not tries_left:
                raise
    raise AssertionError("unreachable")  # the loop returns or raises


def cancel_jobs(conn: Connection, ids: Sequence[int]) -> list[rows.Cancelled]:
    """Pending and running jobs among `ids` cancelled (running ones' workers told by NOTIFY: cancel_jobs)."""
    with conn.transaction():
        return fetch(conn, statements.cancel_jobs(list(ids)))


def set_paused(conn: Connection, queue: str, paused: bool) -> None:
    """Pause or resume a queue; on resume, idle workers are told at once (pgqueue_jobs, run_at 0)."""
    with conn.transaction():
        fetch(conn, Query(QUERIES["dashboard_set_paused"], {"queue": queue, "paused": paused}, PausedQueue))
        if not paused:
            count(conn, statements.notify_queue(queue))
