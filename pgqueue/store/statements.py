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
T = TypeVar("T")
SqlText = LiteralString | sql.Composable


@dataclass(frozen=True, slots=True)
class Query(Generic[R]):
    """A statement whose rows are read, each turned into `row(*columns)`. `prepare` False: planned with its
    values every time, never as a prepared statement (None: the connection's rule)."""

    sql: SqlText
    params: Mapping[str, Any] | None
    row: Callable[..., R]
    prepare: bool | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """A statement whose rows are not read; running it gives the number of rows it changed. `prepare` as for
    Query."""

    sql: SqlText
    params: Mapping[str, Any] | None = None
    prepare: bool | None = None


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
    """One job (params as pgqueue.queue.jobs.job_params builds them); with a dedup key, unless one holds it (or,
    with unique_for, completed within the window); with debounce, merged into the pending job of its key."""
    if params.get("debounce") is not None:
        name = "insert_job_debounced"
    elif params.get("unique_for") is not None:
        name = "insert_job_unique_for"
    else:
        name = "insert_job_once" if params.get("dedup_key") is not None else "insert_job"
    return Query(QUERIES[name], params, int)


def insert_jobs(columns: Mapping[str, list[Any]]) -> Query[int]:
    """A batch as parallel arrays, one INSERT."""
    params: dict[str, Any] = dict(columns)
    if not any(params["trace_contexts"]):  # without tracing: a NULL array (unnest pads it out), nothing to send
        params["trace_contexts"] = None
    return Query(QUERIES["insert_jobs"], params, int)


def insert_jobs_after(columns: Mapping[str, list[Any]]) -> Query[int]:
    """A batch with dependencies (parallel arrays of jobs and of edges, see workflows.sql), one statement."""
    return Query(QUERIES["insert_jobs_after"], columns, int)


def job_parents(job_id: int) -> Query[rows.Parent]:
    return Query(QUERIES["job_parents"], {"job_id": job_id}, rows.Parent)


def reserve_job_ids(count: int) -> Query[int]:
    return Query(QUERIES["reserve_job_ids"], {"count": count}, int)


def copy_jobs(table_rows: Iterable[Sequence[Any]]) -> Copy:
    """Rows of (id, queue, task, args, priority, max_attempts): a batch of jobs due now, ids reserved first."""
    return Copy(QUERIES["copy_jobs"], table_rows)


# -- the worker's hot path ------------------------------------------------------------------------------------


def latest_attempts(outcomes: Collection[T], attempt_of: Callable[[T], Attempt]) -> Collection[T]:
    """`outcomes` with one entry per job, its latest attempt's. The batch statements find a job's values at the
    first position of its id in the arrays, so two attempts of one job in a batch (an old attempt's outcome kept
    across a reconnect beside the new attempt's) would be read as the first. An older attempt can never match the
    row anyway (its attempt number is at least the newer one's), so leaving it out loses nothing."""
    if len({attempt_of(outcome)[0] for outcome in outcomes}) == len(outcomes):
        return outcomes  # the usual case: one attempt per job
    latest: dict[int, T] = {}
    for outcome in outcomes:
        job_id, attempt = attempt_of(outcome)
        kept = latest.get(job_id)
        if kept is None or attempt_of(kept)[1] < attempt:
            latest[job_id] = outcome
    return list(latest.values())


def _outcome_params(
    worker_id: str, started: Collection[Attempt], completed: Sequence[tuple[int, int, str | None]]
) -> dict[str, Any]:
    starts = latest_attempts(started, lambda key: key)
    done = latest_attempts(completed, lambda outcome: (outcome[0], outcome[1]))
    values = [value for _id, _attempt, value in done]
    return {
        "started_ids": int_array(job_id for job_id, _attempt in starts),
        "started_attempts": int_array(attempt for _job_id, attempt in starts),
        "ids": int_array(job_id for job_id, _attempt, _value in done),
        "attempts": int_array(attempt for _job_id, attempt, _value in done),
        # Most handlers return nothing: a NULL array reads as NULL at every position, and costs nothing to send.
        "results": values if any(value is not None for value in values) else None,
        "worker_id": worker_id,
    }


def record_outcomes_and_claim(
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    queues: Sequence[str] | None,
    free: int | None = None,
    started: Collection[Attempt] = (),
    completed: Sequence[tuple[int, int, str | None]] = (),
) -> Query[rows.ClaimedJob]:
    """Record handler starts and completions, and claim up to `limit` jobs (of `queues`; None: all): one statement.
    `free`: how many of them the worker can start at once (None: all); rate-limited jobs past those stay unclaimed."""
    params: dict[str, Any] = {"limit": limit, "free": limit if free is None else free, "lease": lease}
    if queues:
        params["queues"] = queues
    if not started and not completed:
        # An idle worker's claim carries no outcome: the claim alone, prepared. With the outcomes' statements in it
        # (empty arrays), its plan, made once for any values and kept, could read the table twice for nothing:
        # made beside a near-empty table it scans the whole table for the jobs to ack, and keeps doing so as the
        # table fills (0.44 and 0.73 ms at 5,000 rows).
        params["worker_id"] = worker_id
        return Query(QUERIES["claim_from_queues" if queues else "claim"], params, rows.ClaimedJob)
    # Prepared like the idle claim: the acks' writes are planned inside pgqueue.record_outcomes and the claim's in
    # pgqueue.claim_picked, by primary key whatever the statistics, so the plan kept for any values stays right.
    params.update(_outcome_params(worker_id, started, completed))
    name = "record_outcomes_and_claim_from_queues" if queues else "record_outcomes_and_claim"
    return Query(QUERIES[name], params, rows.ClaimedJob)


def claim_unlimited(
    *, worker_id: str, limit: int, lease: timedelta, queues: Sequence[str] | None
) -> Query[rows.ClaimedJob | None]:
    """An idle worker's claim while no limit exists: up to `limit` jobs (of `queues`; None: all). While a limit
    exists it claims nothing and its answer is [None]: send record_outcomes_and_claim, which decides the limits."""
    params = {"limit": limit, "lease": lease, "queues": list(queues) if queues else None, "worker_id": worker_id}
    return Query(QUERIES["claim_unlimited"], params, rows.unlimited_claim)


def record_outcomes(
    *, worker_id: str, started: Collection[Attempt], completed: Sequence[tuple[int, int, str | None]]
) -> Command:
    """The acks alone (prepared: see record_outcomes_and_claim)."""
    return Command(QUERIES["record_outcomes"], _outcome_params(worker_id, started, completed))


# The batch statements below are never prepared: a prepared statement's plan, made once for any values and kept until
# the table's statistics change, is made for the table as it was. Made beside a near-empty table (a fresh install,
# a worker started before a burst), it finds the batch's jobs by a sequential scan, and keeps reading the whole table
# for each batch as the table fills (10,080 rows read to write the outcomes of 10 jobs in a table of 5,040). Planned
# for its arrays each time, a batch statement finds its jobs by primary key (a fraction of a millisecond of planning,
# once per batch). They are rarer than acks (failures, snoozes, lease renewals), so they were left as statements
# rather than functions like pgqueue.record_outcomes.
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
    failures = list(latest_attempts(failures, lambda failure: (failure.id, failure.attempt)))
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
    return Query(QUERIES["fail_jobs"], params, rows.FailedJob, prepare=False)


@dataclass(frozen=True)
class Snoozed:
    """An attempt whose handler raised Snooze: back to pending, due in `seconds`, the attempt not charged."""

    id: int
    attempt: int
    seconds: float


def snooze_jobs(*, worker_id: str, snoozed: Sequence[Snoozed]) -> Query[rows.SnoozedJob]:
    snoozed = list(latest_attempts(snoozed, lambda snooze: (snooze.id, snooze.attempt)))
    params = {
        "ids": [s.id for s in snoozed],
        "attempts": [s.attempt for s in snoozed],
        "delays": [timedelta(seconds=s.seconds) for s in snoozed],
        "worker_id": worker_id,
    }
    return Query(QUERIES["snooze_jobs"], params, rows.SnoozedJob, prepare=False)


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
    return Query(QUERIES["renew_leases"], params, rows.Renewed, prepare=False)


def next_run_at(queues: Sequence[str] | None) -> Query[rows.NextRunAt]:
    return Query(QUERIES["next_run_at"], {"queues": queues}, rows.NextRunAt)


def check_schema() -> Query[rows.SchemaRevision]:
    """The database's migration; fails with UndefinedTable when it has no pgqueue schema."""
    return Query(QUERIES["check_schema"], None, rows.SchemaRevision)


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


# -- the workers registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerEntry:
    """What a worker writes of itself in pgqueue.workers (sql/workers.sql)."""

    worker_id: str
    host: str
    pid: int
    queues: Sequence[str] | None
    concurrency: int
    heartbeat_interval: float  # seconds

    def params(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues) if self.queues is not None else None,
            "concurrency": self.concurrency,
            "heartbeat_interval": self.heartbeat_interval,
        }


def register_worker(entry: WorkerEntry) -> Command:
    return Command(QUERIES["register_worker"], entry.params())


def heartbeat_and_rescue_lost_jobs(entry: WorkerEntry, *, running: int) -> Query[rows.Rescued]:
    """rescue_lost_jobs with the worker's heartbeat (`running`: its busy slots) in the same statement."""
    return Query(QUERIES["heartbeat_and_rescue_lost_jobs"], {**entry.params(), "running": running}, rows.Rescued)


def worker_stopped(worker_id: str) -> Command:
    return Command(QUERIES["worker_stopped"], {"worker_id": worker_id})


def prune_workers(*, keep: timedelta, batch: int) -> Command:
    return Command(QUERIES["prune_workers"], {"keep": keep, "batch": batch})


# -- operator actions -----------------------------------------------------------------------------------------


def retry_failed(
    *,
    task: str | None,
    queue_name: str | None,
    ids: list[int] | None,
    dry_run: bool,
    since: timedelta | None = None,
    args: str | None = None,
    meta: str | None = None,
) -> Query[rows.RetryCandidate]:
    """`since`: created that recently; `args`, `meta`: JSON text the args (the meta) must contain."""
    params = {
        "task": task, "queue": queue_name, "ids": ids, "dry_run": dry_run, "since": since, "args": args, "meta": meta,
    }  # fmt: skip
    return Query(QUERIES["retry_failed"], params, rows.RetryCandidate)


def cancel_jobs(ids: list[int]) -> Query[rows.Cancelled]:
    return Query(QUERIES["cancel_jobs"], {"ids": ids}, rows.Cancelled)


def job_state(job_id: int) -> Query[rows.JobState]:
    return Query(QUERIES["job_state"], {"id": job_id}, rows.JobState)


def enqueued_jobs(
    *, task: str | None, args_json: str | None, statuses: list[str] | None, limit: int
) -> Query[rows.EnqueuedJob]:
    params = {"task": task, "args": args_json, "statuses": statuses, "limit": limit}
    return Query(QUERIES["enqueued_jobs"], params, rows.EnqueuedJob)


def drained_jobs(*, ids: Iterable[int], worker_id: str) -> Query[rows.DrainedJob]:
    return Query(QUERIES["drained_jobs"], {"ids": int_array(ids), "worker_id": worker_id}, rows.DrainedJob)


def runnable_job_ids(limit: int) -> Query[int]:
    return Query(QUERIES["runnable_job_ids"], {"limit": limit}, int)


def queue_status(*, all_history: bool = False) -> Query[rows.StatusCount]:
    """Jobs per queue and status: finished ones of the last hour only, unless `all_history`."""
    return Query(QUERIES["queue_status_all" if all_history else "queue_status"], None, rows.StatusCount)


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


# -- queue control: concurrency and rate limits, pause and resume ------------------------------------------------


def sync_limits(declared: Mapping[str, list[Any]], tasks: list[str]) -> Query[rows.LimitName]:
    """Register the declared limits (parallel arrays, sorted by name); drop those `tasks` no longer declare."""
    return Query(QUERIES["sync_limits"], {**declared, "tasks": tasks}, rows.LimitName)


def limit_for_update(name: str) -> Query[rows.LimitSettings]:
    return Query(QUERIES["limit_for_update"], {"name": name}, rows.LimitSettings)


def set_limit(
    *,
    name: str,
    scope: str,
    target: str,
    concurrency: int | None,
    key_arg: str | None,
    rate: int | None = None,
    rate_period: timedelta | None = None,
    rate_key_arg: str | None = None,
) -> Query[rows.LimitName]:
    params = {
        "name": name,
        "scope": scope,
        "target": target,
        "concurrency": concurrency,
        "key_arg": key_arg,
        "rate": rate,
        "rate_period": rate_period,
        "rate_key_arg": rate_key_arg,
    }
    return Query(QUERIES["set_limit"], params, rows.LimitName)


def release_deferred(names: list[str]) -> Query[rows.Woken]:
    """Jobs waiting for a start of these limits' rates due now (after the limits changed)."""
    return Query(QUERIES["release_deferred"], {"names": names}, rows.Woken)


def remove_limit(name: str) -> Query[rows.LimitName]:
    return Query(QUERIES["remove_limit"], {"name": name}, rows.LimitName)


def wake_held(*, names: list[str] | None, per_key: int | None) -> Query[rows.Woken]:
    """Held jobs of these limits (None: all) back to pending, up to `per_key` per key (None: all)."""
    return Query(QUERIES["wake_held"], {"names": names, "per_key": per_key}, rows.Woken)


def set_queue_paused(queue_name: str, paused: bool) -> Query[rows.QueuePaused]:
    return Query(QUERIES["set_queue_paused"], {"queue": queue_name, "paused": paused}, rows.QueuePaused)


def queue_known(queue_name: str) -> Query[rows.Known]:
    return Query(QUERIES["queue_known"], {"queue": queue_name}, rows.Known)


def list_queues() -> Query[rows.QueueListing]:
    return Query(QUERIES["list_queues"], None, rows.QueueListing)


def list_limits() -> Query[rows.LimitListing]:
    return Query(QUERIES["list_limits"], None, rows.LimitListing)


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


# -- the operator commands (`pgqueue jobs`, `show`, `cancel`, `prune`: pgqueue/sql/admin.sql) -----------------


@dataclass(frozen=True)
class JobFilters:
    """What the operator commands select jobs by; None: no filter. `args` and `meta` are JSON text the job's args
    (its meta) must contain."""

    task: str | None = None
    queue: str | None = None
    since: timedelta | None = None  # created at most this long ago
    args: str | None = None
    meta: str | None = None

    def params(self) -> dict[str, Any]:
        return {"task": self.task, "queue": self.queue, "since": self.since, "args": self.args, "meta": self.meta}


def list_jobs(filters: JobFilters, *, status: str | None, limit: int, args_clip: int) -> Query[rows.JobListing]:
    params = {**filters.params(), "status": status, "limit": limit, "args_clip": args_clip}
    return Query(QUERIES["admin_jobs"], params, rows.JobListing)


def read_only_snapshot() -> Command:
    return Command(QUERIES["admin_read_only_snapshot"])


def job_detail(job_id: int, *, clip: int) -> Query[rows.JobDetail]:
    return Query(QUERIES["admin_job"], {"id": job_id, "clip": clip}, rows.JobDetail)


def job_errors(job_id: int, *, clip: int, limit: int) -> Query[rows.ErrorEntry]:
    return Query(QUERIES["admin_job_errors"], {"id": job_id, "clip": clip, "limit": limit}, rows.ErrorEntry)


def max_job_id() -> Query[int]:
    return Query(QUERIES["admin_max_job_id"], None, int)


def matching_ids(filters: JobFilters, *, status: str, max_id: int, after_id: int | None, limit: int) -> Query[int]:
    params = {**filters.params(), "status": status, "max_id": max_id, "after_id": after_id, "limit": limit}
    return Query(QUERIES["admin_matching_ids"], params, int)


def count_prunable(filters: JobFilters, *, status: str, older_than: timedelta, max_id: int) -> Query[rows.Count]:
    params = {**filters.params(), "status": status, "older_than": older_than, "max_id": max_id}
    return Query(QUERIES["admin_count_prunable"], params, rows.Count)


def prune_batch(filters: JobFilters, *, status: str, older_than: timedelta, max_id: int, batch: int) -> Command:
    params = {**filters.params(), "status": status, "older_than": older_than, "max_id": max_id, "batch": batch}
    return Command(QUERIES["admin_prune_batch"], params)


# -- metrics (pgqueue/sql/metrics.sql) -------------------------------------------------------------------------


def metrics_try_reporter_lock() -> Query[rows.ReporterLock]:
    return Query(QUERIES["metrics_try_reporter_lock"], None, rows.ReporterLock)


def metrics_queue_depth(*, limit: int) -> Query[rows.QueueDepth]:
    return Query(QUERIES["metrics_queue_depth"], {"limit": limit}, rows.QueueDepth)


def metrics_schedules(*, names: Sequence[str]) -> Query[rows.ScheduleTimes]:
    return Query(QUERIES["metrics_schedules"], {"names": list(names)}, rows.ScheduleTimes)
