"""Every statement pgqueue sends, as a function returning a Statement: its SQL (a named block of pgqueue/sql/),
its bound parameters and the named row it returns. Pure: nothing here does I/O, so one statement runs on a sync
or an async connection, psycopg's or SQLAlchemy's (see store/run.py and store/connections.py).

Parameters are always bound, never formatted into the text; identifiers that vary are quoted with psycopg.sql
(store/grants.py). Arrays of ids travel as one array literal (`int_array`) rather than one adapted element each:
the acks of a drain carry thousands of ids a second.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, LiteralString, TypeVar

from psycopg import sql

from pgqueue.store import rows
from pgqueue.store.queries import QUERIES
from pgqueue.store.rows import Attempt

R = TypeVar("R")
SqlText = LiteralString | sql.Composable


@dataclass(frozen=True, slots=True)
class Query(Generic[R]):
    """A statement whose rows are read, each turned into `row(*columns)`."""

    sql: SqlText
    params: Mapping[str, Any] | None
    row: Callable[..., R]


@dataclass(frozen=True, slots=True)
class Command:
    """A statement whose rows are not read; running it gives the number of rows it changed."""

    sql: SqlText
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    """COPY ... FROM STDIN with these rows (psycopg connections only)."""

    sql: LiteralString
    rows: Iterable[Sequence[Any]]


def int_array(values: Iterable[int]) -> str:
    """An array literal for `::bigint[]`/`::int[]`: one string to send instead of adapting each element."""
    return "{" + ",".join(map(str, values)) + "}"


# -- enqueue --------------------------------------------------------------------------------------------------


# Statements that return job ids give them as ints: `int(id)` per row is what a batch of 50,000 can afford.


def insert_job(params: Mapping[str, Any]) -> Query[int]:
    """One job (params as pgqueue.queue.jobs.job_params builds them); with a dedup key, unless one holds it."""
    name = "insert_job_once" if params.get("dedup_key") is not None else "insert_job"
    return Query(QUERIES[name], params, int)


def insert_jobs(columns: Mapping[str, list[Any]]) -> Query[int]:
    """A batch as parallel arrays, one INSERT."""
    params: dict[str, Any] = dict(columns)
    if not any(params["trace_contexts"]):  # without tracing: a NULL array (unnest pads it out), nothing to send
        params["trace_contexts"] = None
    return Query(QUERIES["insert_jobs"], params, int)


def reserve_job_ids(count: int) -> Query[int]:
    return Query(QUERIES["reserve_job_ids"], {"count": count}, int)


def copy_jobs(table_rows: Iterable[Sequence[Any]]) -> Copy:
    """Rows of (id, queue, task, args, priority, max_attempts): a batch of jobs due now, ids reserved first."""
    return Copy(QUERIES["copy_jobs"], table_rows)


# -- the worker's hot path ------------------------------------------------------------------------------------


def _outcome_params(
    worker_id: str, started: Collection[Attempt], completed: Sequence[tuple[int, int, str | None]]
) -> dict[str, Any]:
    values = [value for _id, _attempt, value in completed]
    return {
        "started_ids": int_array(job_id for job_id, _attempt in started),
        "started_attempts": int_array(attempt for _job_id, attempt in started),
        "ids": int_array(job_id for job_id, _attempt, _value in completed),
        "attempts": int_array(attempt for _job_id, attempt, _value in completed),
        # Most handlers return nothing: a NULL array is padded out by unnest, and costs nothing to send.
        "results": values if any(value is not None for value in values) else None,
        "worker_id": worker_id,
    }


def record_outcomes_and_claim(
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    queues: Sequence[str] | None,
    started: Collection[Attempt] = (),
    completed: Sequence[tuple[int, int, str | None]] = (),
) -> Query[rows.ClaimedJob]:
    """Record handler starts and completions, and claim up to `limit` jobs (of `queues`; None: all): one statement."""
    params: dict[str, Any] = {"limit": limit, "lease": lease, **_outcome_params(worker_id, started, completed)}
    if queues:
        params["queues"] = queues
        return Query(QUERIES["record_outcomes_and_claim_from_queues"], params, rows.ClaimedJob)
    return Query(QUERIES["record_outcomes_and_claim"], params, rows.ClaimedJob)


def record_outcomes(
    *, worker_id: str, started: Collection[Attempt], completed: Sequence[tuple[int, int, str | None]]
) -> Command:
    return Command(QUERIES["record_outcomes"], _outcome_params(worker_id, started, completed))


@dataclass(frozen=True)
class Failure:
    """A failed attempt to write: back to pending after `delay` (retry) or failed for good."""

    id: int
    attempt: int
    retry: bool
    delay: timedelta
    error: str
    traceback: str | None
    trace_id: str | None = None  # the attempt's trace (with tracing), kept in its error history entry


def fail_jobs(*, worker_id: str, failures: Sequence[Failure]) -> Query[rows.FailedJob]:
    params = {
        "ids": [f.id for f in failures],
        "attempts": [f.attempt for f in failures],
        "retry": [f.retry for f in failures],
        "delays": [f.delay for f in failures],
        "errors": [f.error for f in failures],
        "tracebacks": [f.traceback for f in failures],
        "trace_ids": [f.trace_id for f in failures] if any(f.trace_id for f in failures) else None,
        "worker_id": worker_id,
    }
    return Query(QUERIES["fail_jobs"], params, rows.FailedJob)


def _attempt_arrays(attempts: Sequence[Attempt]) -> dict[str, list[int]]:
    """Attempts as the parallel arrays `ids` and `attempts` that the statements unnest."""
    return {"ids": [job_id for job_id, _attempt in attempts], "attempts": [attempt for _job_id, attempt in attempts]}


def release_jobs(*, worker_id: str, attempts: Sequence[Attempt], reason: str | None) -> Query[rows.Released]:
    """Held attempts back to pending, uncharged; `reason` None for jobs that never started (nothing recorded)."""
    params = {**_attempt_arrays(attempts), "worker_id": worker_id, "reason": reason}
    return Query(QUERIES["release_jobs"], params, rows.Released)


def release_unknown_jobs(*, worker_id: str, held: Iterable[int]) -> Query[rows.Released]:
    return Query(QUERIES["release_unknown_jobs"], {"worker_id": worker_id, "held": int_array(held)}, rows.Released)


def renew_leases(*, worker_id: str, held: Sequence[Attempt], lease: timedelta) -> Query[rows.Renewed]:
    params = {**_attempt_arrays(held), "worker_id": worker_id, "lease": lease}
    return Query(QUERIES["renew_leases"], params, rows.Renewed)


def next_run_at(queues: Sequence[str] | None) -> Query[rows.NextRunAt]:
    return Query(QUERIES["next_run_at"], {"queues": queues}, rows.NextRunAt)


def check_schema() -> Command:
    """Fails with UndefinedTable when the database has no pgqueue schema."""
    return Command(QUERIES["check_schema"])


def listen(channel: str) -> Command:
    """LISTEN on a channel (an identifier: quoted, never formatted in as text)."""
    return Command(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def probe() -> Command:
    """The cheapest round trip: is the connection still alive?"""
    return Command(QUERIES["probe"])


def backend_pid() -> Query[rows.BackendPid]:
    return Query(QUERIES["backend_pid"], None, rows.BackendPid)


# -- maintenance ----------------------------------------------------------------------------------------------


def rescue_lost_jobs() -> Query[rows.Rescued]:
    return Query(QUERIES["rescue_lost_jobs"], None, rows.Rescued)


def notify_queue(queue_name: str) -> Command:
    """Wake the workers of a queue (jobs became runnable without an INSERT)."""
    return Command(QUERIES["notify_queue"], {"queue": queue_name})


def prune_finished(*, retention: timedelta | str, batch: int) -> Command:
    return Command(QUERIES["prune_finished"], {"retention": retention, "batch": batch})


# -- operator actions -----------------------------------------------------------------------------------------


def retry_failed(
    *, task: str | None, queue_name: str | None, ids: list[int] | None, dry_run: bool
) -> Query[rows.RetryCandidate]:
    params = {"task": task, "queue": queue_name, "ids": ids, "dry_run": dry_run}
    return Query(QUERIES["retry_failed"], params, rows.RetryCandidate)


def cancel_jobs(ids: list[int]) -> Query[rows.Cancelled]:
    return Query(QUERIES["cancel_jobs"], {"ids": ids}, rows.Cancelled)


def queue_status() -> Query[rows.StatusCount]:
    return Query(QUERIES["queue_status"], None, rows.StatusCount)


def oldest_runnable() -> Query[rows.OldestRunnable]:
    return Query(QUERIES["oldest_runnable"], None, rows.OldestRunnable)


# -- cron -----------------------------------------------------------------------------------------------------


def sync_schedules(declared: Mapping[str, list[Any]]) -> Query[rows.ScheduleChange]:
    """Register the declared schedules (parallel arrays, sorted by name) and disable the others."""
    return Query(QUERIES["sync_schedules"], declared, rows.ScheduleChange)


def schedule_states(names: list[str]) -> Query[rows.ScheduleState]:
    return Query(QUERIES["schedule_states"], {"names": names}, rows.ScheduleState)


def fire_schedule(fire: Mapping[str, Any]) -> Query[rows.Fire]:
    return Query(QUERIES["fire_schedule"], fire, rows.Fire)


def prune_schedule_fires(*, retention: timedelta | str, batch: int) -> Query[rows.PrunedFire]:
    return Query(QUERIES["prune_schedule_fires"], {"retention": retention, "batch": batch}, rows.PrunedFire)


def list_schedules(names: list[str]) -> Query[rows.ScheduleListing]:
    return Query(QUERIES["list_schedules"], {"names": names}, rows.ScheduleListing)


# -- the demo (`pgqueue demo`) --------------------------------------------------------------------------------


def demo_setup() -> list[Command]:
    return [Command(QUERIES["demo_create_schema"]), Command(QUERIES["demo_create_orders"])]


def demo_insert_order(customer: str, total: float) -> Query[rows.OrderId]:
    return Query(QUERIES["demo_insert_order"], {"customer": customer, "total": total}, rows.OrderId)


def demo_jobs_of_order(order_id: int) -> Query[rows.Count]:
    return Query(QUERIES["demo_jobs_of_order"], {"order_id": str(order_id)}, rows.Count)


def demo_unfinished(ids: list[int]) -> Query[rows.Count]:
    return Query(QUERIES["demo_unfinished"], {"ids": ids}, rows.Count)


def demo_history(order_id: int) -> Query[tuple[Any, ...]]:
    """The history of an order's jobs, as the demo prints it (its columns are shown, not named here)."""
    return Query(QUERIES["demo_history"], {"order_id": str(order_id)}, _as_tuple)


def _as_tuple(*columns: Any) -> tuple[Any, ...]:
    return columns


# -- metrics (pgqueue/sql/metrics.sql) -------------------------------------------------------------------------


def metrics_try_reporter_lock() -> Query[rows.ReporterLock]:
    return Query(QUERIES["metrics_try_reporter_lock"], None, rows.ReporterLock)


def metrics_queue_depth(*, limit: int) -> Query[rows.QueueDepth]:
    return Query(QUERIES["metrics_queue_depth"], {"limit": limit}, rows.QueueDepth)


def metrics_schedules(*, names: Sequence[str]) -> Query[rows.ScheduleTimes]:
    return Query(QUERIES["metrics_schedules"], {"names": list(names)}, rows.ScheduleTimes)
