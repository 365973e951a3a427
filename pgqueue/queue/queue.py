"""Queue: the task registry and enqueueing, into the caller's transaction or pgqueue's own connection.

Every enqueue is a plan (store/run.py) written once; the sync and async methods are its thin twins.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, overload

from pgqueue.cron.schedule import Schedule, declare
from pgqueue.errors import InvalidJobError, JobNotFoundError, UnknownTaskError
from pgqueue.queue import jobs, tracing
from pgqueue.queue.jobs import InBatch, JobSpec, ParentRef
from pgqueue.queue.limits import Limit, check_concurrency, check_queue_name, parse_rate
from pgqueue.queue.retry import DEFAULT_BACKOFF, RetryPolicy
from pgqueue.queue.tasks import Task, exception_classes
from pgqueue.settings import resolve_dsn
from pgqueue.store import admin, results, statements
from pgqueue.store import limits as limit_store
from pgqueue.store.database import Database
from pgqueue.store.rows import DrainedJob, EnqueuedJob, Parent
from pgqueue.store.run import Plan, fetch
from pgqueue.store.schema import JOB_STATUSES

DEFAULT_QUEUE = "default"
# The job holding a dedup key may finish between the insert's two looks: then insert again, this many times.
DEDUP_TRIES = 3
JobLike = JobSpec | tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Batch:
    """What `Queue.batch` enqueued: the batch's jobs, in order, and the callback that runs after all of them."""

    ids: list[int]
    callback: int


class Queue:
    """Registers tasks and enqueues jobs for them.

    `dsn` defaults to PGQUEUE_DSN, then DATABASE_URL, else the embedded server, resolved on first use.
    """

    def __init__(self, dsn: str | None = None, *, max_attempts: int = 5, pool_size: int = 4) -> None:
        self._dsn = dsn
        self.default_max_attempts = max_attempts
        self.tasks: dict[str, Task] = {}
        self.schedules: list[Schedule] = []  # declared by @periodic; run by every worker's scheduler
        self.queue_limits: dict[str, Limit] = {}  # declared by limit_queue; synced by every worker at start
        self._database = Database(lambda: self.dsn, pool_size)

    # -- configuration --------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            self._dsn = resolve_dsn(None)
        return self._dsn

    @dsn.setter
    def dsn(self, value: str) -> None:
        self._dsn = value

    @property
    def configured_dsn(self) -> str | None:
        """The DSN given to this Queue (or set on it), None when it would fall back to the environment."""
        return self._dsn

    # -- registry -------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        retry: RetryPolicy = DEFAULT_BACKOFF,
        timeout: float | None = None,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
        rate_key: str | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        retry: RetryPolicy = DEFAULT_BACKOFF,
        timeout: float | None = None,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
        rate_key: str | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a handler (sync or async) as a task: `@queue.task` or `@queue.task(name=...)`.

        `concurrency=N`: at most N jobs of this task run at once across all workers and hosts (exact, decided
        inside the claim); with `concurrency_key="customer_id"`, at most N per value of that argument.
        `rate_limit="10/s"` (or `/m`, `/h`): at most 10 starts in any one-second window, across all workers and
        hosts, counted by the database at the claim; with `rate_key="customer_id"`, per value of that argument.
        `retry_on`: only these exceptions are retried; any other fails the job at once (default: all retried).
        """
        retry_classes = exception_classes(retry_on) if retry_on is not None else None

        def register(handler: Callable[..., Any]) -> Task:
            task_name = name or handler.__name__
            if task_name in self.tasks:
                raise ValueError(f"task {task_name!r} is already registered")
            if max_attempts is not None and max_attempts < 1:
                raise ValueError("max_attempts must be at least 1")
            if timeout is not None and timeout <= 0:
                raise ValueError("timeout must be positive")
            limit = _task_limit(task_name, handler, concurrency, concurrency_key, rate_limit, rate_key)
            registered = Task(
                name=task_name,
                fn=handler,
                queue_name=queue,
                priority=priority,
                max_attempts=max_attempts,
                retry=retry,
                timeout=timeout,
                limit=limit,
                enqueuer=self,
                retry_on=retry_classes,
            )
            self.tasks[task_name] = registered
            return registered

        return register(fn) if fn is not None else register

    def limit_queue(self, queue_name: str, *, concurrency: int | None = None, rate_limit: str | None = None) -> None:
        """Declare that at most `concurrency` jobs of queue `queue_name` run at once, and/or that at most
        `rate_limit` ("100/m") of them start per period, across all workers.

        Synced by every worker when it starts (a run-time `set_queue_limit` or `pgqueue queues limit` holds
        until the next worker start declares this again)."""
        check_queue_name(queue_name)
        if concurrency is None and rate_limit is None:
            raise ValueError("limit_queue needs concurrency, rate_limit or both")
        self.queue_limits[queue_name] = Limit(
            "queue",
            queue_name,
            None if concurrency is None else check_concurrency(concurrency, "concurrency"),
            rate=None if rate_limit is None else parse_rate(rate_limit),
        )

    @property
    def limits(self) -> list[Limit]:
        """Every limit this app declares: its tasks' and its queues'."""
        declared = [task.limit for task in self.tasks.values() if task.limit is not None]
        return declared + list(self.queue_limits.values())

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UnknownTaskError(f"unknown task {name!r} (registered: {known})") from None

    def periodic(
        self,
        *,
        cron: str,
        name: str | None = None,
        timezone: str | None = None,
        args: dict[str, Any] | None = None,
        missed: str = "latest",
        backfill_limit: int = 10,
        skip_if_running: bool = False,
        queue: str | None = None,
        priority: int | None = None,
    ) -> Callable[[Callable[..., Any] | Task], Task]:
        """Fire a task on a cron schedule: `@queue.periodic(cron="0 9 * * 1-5", timezone="Europe/Berlin")`.

        Put it above `@queue.task` (or use it alone: the function is registered as a task). `name`
        defaults to the task's. Checked now: a bad expression or zone raises CronError. See
        pgqueue.cron.scheduler for the missed-fire and overlap policies.
        """

        def register(target: Callable[..., Any] | Task) -> Task:
            registered_here = not isinstance(target, Task)
            task = self.task(target) if registered_here else target
            if self.tasks.get(task.name) is not task:
                raise ValueError(f"task {task.name!r} belongs to another Queue")
            try:
                schedule = declare(
                    task.name,
                    cron=cron,
                    name=name,
                    timezone=timezone,
                    missed=missed,
                    backfill_limit=backfill_limit,
                    skip_if_running=skip_if_running,
                    job=lambda schedule_name: self.job_params(
                        task, args, queue=queue, priority=priority, schedule=schedule_name
                    ),
                )
                if any(existing.name == schedule.name for existing in self.schedules):
                    raise ValueError(f"schedule {schedule.name!r} is already declared")
            except Exception:
                if registered_here:  # a rejected declaration leaves no half-registered task behind
                    del self.tasks[task.name]
                raise
            self.schedules.append(schedule)
            return task

        return register

    # -- enqueue --------------------------------------------------------------------------------

    def job_params(
        self,
        task: str | Task,
        args: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        delay: timedelta | float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        dedup_key: str | None = None,
        schedule: str | None = None,
        unique_for: timedelta | float | None = None,
        debounce: timedelta | float | None = None,
        debounce_max_wait: timedelta | float | None = None,
        meta: dict[str, Any] | None = None,
        trace_context: str | None = None,
    ) -> dict[str, Any]:
        """Validate one job and return the bound parameters of `insert_job`; raises before any I/O."""
        return jobs.job_params(
            self.get_task(task.name if isinstance(task, Task) else task),
            args,
            default_max_attempts=self.default_max_attempts,
            queue_name=queue,
            delay=delay,
            run_at=run_at,
            priority=priority,
            max_attempts=max_attempts,
            dedup_key=dedup_key,
            schedule=schedule,
            unique_for=unique_for,
            debounce=debounce,
            debounce_max_wait=debounce_max_wait,
            meta=meta,
            trace_context=trace_context,
        )

    def enqueue(
        self,
        task: str | Task,
        args: dict[str, Any] | None = None,
        *,
        connection: Any = None,
        queue: str | None = None,
        delay: timedelta | float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        dedup_key: str | None = None,
        unique_for: timedelta | float | None = None,
        debounce: timedelta | float | None = None,
        debounce_max_wait: timedelta | float | None = None,
        meta: dict[str, Any] | None = None,
        after: Iterable[int] | None = None,
        on_failure: str = "cancel",
    ) -> int:
        """Insert one job and return its id.

        With `connection` (a psycopg Connection, a SQLAlchemy Connection or Session) the job joins that
        transaction: it exists only if the caller commits. Without it, pgqueue commits on its own.
        With `dedup_key`, no second job is made while one with that key is pending or running: the
        existing job's id is returned instead. With `unique_for` (a timedelta or seconds) also while a job
        with that key completed less than that long ago. With `debounce`, a pending job with that key is
        updated in place (these args; run_at pushed to now + debounce, but at most `debounce_max_wait`,
        default 10 x debounce, after its first enqueue) and its id returned.
        `meta` (a small dict: an order id, a tenant) is stored with the job and indexed, so that
        `WHERE meta @> '{"order_id": 42}'` finds an order's jobs whatever their args.
        With `after` (job ids), the job waits until all of them have completed; `on_failure` says what it does
        when one fails for good or is cancelled: "cancel" (itself, and its own dependents) or "run" anyway.
        """
        params = self.job_params(
            task, args, queue=queue, delay=delay, run_at=run_at, priority=priority, max_attempts=max_attempts,
            dedup_key=dedup_key, unique_for=unique_for, debounce=debounce, debounce_max_wait=debounce_max_wait,
            meta=meta, trace_context=tracing.current_context(),
        )  # fmt: skip
        dependent = _dependent_one(params, after, on_failure)
        if dependent is not None:
            return self._database.run(dependent, connection)[0]
        return self._database.run(_insert_one(params), connection)

    async def enqueue_async(
        self,
        task: str | Task,
        args: dict[str, Any] | None = None,
        *,
        connection: Any = None,
        queue: str | None = None,
        delay: timedelta | float | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        dedup_key: str | None = None,
        unique_for: timedelta | float | None = None,
        debounce: timedelta | float | None = None,
        debounce_max_wait: timedelta | float | None = None,
        meta: dict[str, Any] | None = None,
        after: Iterable[int] | None = None,
        on_failure: str = "cancel",
    ) -> int:
        """`enqueue` for asyncio code: psycopg AsyncConnection, SQLAlchemy AsyncConnection/AsyncSession."""
        params = self.job_params(
            task, args, queue=queue, delay=delay, run_at=run_at, priority=priority, max_attempts=max_attempts,
            dedup_key=dedup_key, unique_for=unique_for, debounce=debounce, debounce_max_wait=debounce_max_wait,
            meta=meta, trace_context=tracing.current_context(),
        )  # fmt: skip
        dependent = _dependent_one(params, after, on_failure)
        if dependent is not None:
            return (await self._database.run_async(dependent, connection))[0]
        return await self._database.run_async(_insert_one(params), connection)

    def enqueue_many(self, jobs: Iterable[JobLike], *, connection: Any = None) -> list[int]:
        """Insert a batch of jobs in one statement (all or none); returns their ids in order.

        A JobSpec's `after` may name existing jobs by id and jobs of this call by position (`InBatch(i)`)."""
        return self._database.run(self._many(jobs), connection)

    async def enqueue_many_async(self, jobs: Iterable[JobLike], *, connection: Any = None) -> list[int]:
        return await self._database.run_async(self._many(jobs), connection)

    def chain(self, *jobs: JobLike, connection: Any = None) -> list[int]:
        """Jobs that run one after the other: each waits for the previous one to complete (one statement).
        Returns their ids in order; a job reads its parent's result with `current_job().parent_results()`."""
        return self._database.run(self._many(_chained(jobs)), connection)

    async def chain_async(self, *jobs: JobLike, connection: Any = None) -> list[int]:
        return await self._database.run_async(self._many(_chained(jobs)), connection)

    def batch(self, jobs: Iterable[JobLike], *, on_complete: JobLike, connection: Any = None) -> Batch:
        """Jobs and a callback that runs once after every one of them has finished, whatever the outcome
        (`current_job().parents()` tells it how each went). One statement."""
        specs = _with_callback(jobs, on_complete)
        ids = self._database.run(self._many(specs), connection)
        return Batch(ids=ids[:-1], callback=ids[-1])

    async def batch_async(self, jobs: Iterable[JobLike], *, on_complete: JobLike, connection: Any = None) -> Batch:
        specs = _with_callback(jobs, on_complete)
        ids = await self._database.run_async(self._many(specs), connection)
        return Batch(ids=ids[:-1], callback=ids[-1])

    def parents(self, job_id: int) -> list[Parent]:
        """The jobs `job_id` depends on, with their status (and result or error) now."""
        return self._database.run(_parents(job_id))

    async def parents_async(self, job_id: int) -> list[Parent]:
        return await self._database.run_async(_parents(job_id))

    def _many(self, batch: Iterable[JobLike]) -> Callable[[bool], Plan[list[int]]]:
        """The plan for a batch: plain (INSERT or COPY) or, when any job has parents, with its edges. Every
        job is checked before any I/O."""
        specs = [_spec(job) for job in batch]
        columns = self._batch_columns(specs)
        if not specs:
            return _nothing
        parents = [
            jobs.parents_of(spec.after, batch_size=len(specs), position=i) if spec.after else []
            for i, spec in enumerate(specs)
        ]
        if not any(parents):
            jobs.check_policies(spec.on_failure for spec in specs)
            return _insert_batch(columns)
        columns.update(jobs.dependency_columns(parents, [spec.on_failure for spec in specs]))
        return _insert_after(columns)

    def _batch_columns(self, specs: Iterable[JobSpec | tuple[str, dict[str, Any]]]) -> dict[str, list[Any]]:
        trace_context = tracing.current_context()  # one call, one context for the batch

        def params(job: JobSpec | tuple[str, dict[str, Any]]) -> dict[str, Any]:
            spec = job if isinstance(job, JobSpec) else JobSpec(task=job[0], args=job[1])
            return jobs.job_params(
                self.get_task(spec.task), spec.args, default_max_attempts=self.default_max_attempts,
                queue_name=spec.queue, delay=spec.delay, run_at=spec.run_at, priority=spec.priority,
                max_attempts=spec.max_attempts, meta=spec.meta, trace_context=trace_context,
            )  # fmt: skip

        return jobs.batch_columns(map(params, specs))

    # -- results --------------------------------------------------------------------------------

    def result(self, job_id: int, timeout: float | None = 30) -> Any:
        """Wait until the job is finished and return its stored result (None when the handler returned none).

        Raises JobFailed (its `.error` is the last error), JobCancelled, JobNotFoundError, or TimeoutError when
        the job is not finished within `timeout` seconds (None: no limit). Waits with LISTEN on a connection of
        its own, re-reading the job's row on each notification: the row decides.
        """
        job_id, seconds = _result_request(job_id, timeout)
        return results.outcome(job_id, results.wait_for_job(self.dsn, job_id, seconds), seconds)

    async def result_async(self, job_id: int, timeout: float | None = 30) -> Any:
        """`result` for asyncio code."""
        job_id, seconds = _result_request(job_id, timeout)
        return results.outcome(job_id, await results.wait_for_job_async(self.dsn, job_id, seconds), seconds)

    # -- test mode ------------------------------------------------------------------------------

    def enqueued(
        self,
        task: str | Task | None = None,
        args: dict[str, Any] | None = None,
        *,
        status: str | Iterable[str] | None = None,
        limit: int = 1000,
    ) -> list[EnqueuedJob]:
        """The jobs in the table of `task` (any: None) whose args contain `args` (a subset match, as
        `args @> ...`), with `status` (one or several; any: None), oldest first: for an app's tests to assert
        what it enqueued, e.g. `assert queue.enqueued("send_email", {"to": "a@b.c"})`."""
        query = statements.enqueued_jobs(**_enqueued_filter(task, args, status, limit))
        with self._database.connection() as conn:
            return fetch(conn, query)

    def drain(self, *, concurrency: int = 1) -> list[DrainedJob]:
        """Test mode: run every runnable job now in this process, against the database; see pgqueue.testing."""
        # The one import of a layer above: the worker runs the jobs. Kept out of the module's imports so that
        # importing pgqueue.queue never loads the worker.
        from pgqueue.testing import drain

        return drain(self, concurrency=concurrency)

    async def drain_async(self, *, concurrency: int = 1) -> list[DrainedJob]:
        from pgqueue.testing import drain_async

        return await drain_async(self, concurrency=concurrency)

    # -- operator actions -----------------------------------------------------------------------

    def retry_failed(
        self,
        *,
        task: str | None = None,
        queue: str | None = None,
        ids: Sequence[int] | None = None,
        dry_run: bool = False,
    ) -> admin.RetryResult:
        """Send failed jobs back to pending (attempts reset, error history kept).

        A job whose dedup key a pending or running job holds stays failed, as do all but the newest of failed
        jobs sharing a key: the result lists the ids retried and, for the others, which job holds the key.
        With `dry_run` nothing changes and the result says what would.
        """
        with self._database.connection() as conn:
            return admin.retry_failed(conn, task=task, queue=queue, ids=ids, dry_run=dry_run)

    def cancel(self, *ids: int) -> list[int]:
        """Cancel jobs: pending ones at once, running ones are asked to stop. Returns those cancelled."""
        with self._database.connection() as conn:
            return admin.cancel(conn, ids)

    def pause(self, queue_name: str) -> None:
        """Pause a queue: no job of it is claimed from the next claim on; running jobs finish."""
        with self._database.connection() as conn:
            limit_store.set_paused(conn, check_queue_name(queue_name), True)

    def resume(self, queue_name: str) -> None:
        """Resume a paused queue; its idle workers are woken at once."""
        with self._database.connection() as conn:
            limit_store.set_paused(conn, check_queue_name(queue_name), False)

    def set_queue_limit(self, queue_name: str, concurrency: int | None) -> None:
        """Set a queue's concurrency limit now, in the database (None removes it), for every worker at once."""
        check_queue_name(queue_name)
        value = None if concurrency is None else check_concurrency(concurrency, "concurrency")
        with self._database.connection() as conn:
            limit_store.set_queue_limit(conn, queue_name, value)

    def set_queue_rate(self, queue_name: str, rate_limit: str | None) -> None:
        """Set a queue's rate limit now ("100/m"; None removes it), for every worker at once; its concurrency
        limit, if any, stays."""
        check_queue_name(queue_name)
        rate = None if rate_limit is None else parse_rate(rate_limit)
        with self._database.connection() as conn:
            limit_store.set_queue_limit(conn, queue_name, rate=None if rate is None else (rate.starts, rate.period))

    def queues(self) -> list[limit_store.QueueInfo]:
        """Every queue with jobs, settings or a limit: job counts per status, paused or not, its limit."""
        with self._database.connection() as conn:
            return limit_store.list_queues(conn)

    # -- connections ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close pgqueue's own sync connections (the caller's are never touched).

        Connections opened by `enqueue_async` belong to their event loop: close them with `aclose()` there.
        Called while some are open, this closes the sync ones and raises PgQueueError saying so.
        """
        self._database.close()

    async def aclose(self) -> None:
        """Close all of pgqueue's own connections, sync and async."""
        await self._database.aclose()


def _task_limit(
    task_name: str,
    handler: Callable[..., Any],
    concurrency: int | None,
    concurrency_key: str | None,
    rate_limit: str | None,
    rate_key: str | None,
) -> Limit | None:
    if concurrency is None and concurrency_key is not None:
        raise ValueError("concurrency_key needs concurrency (how many jobs per key may run at once)")
    if rate_limit is None and rate_key is not None:
        raise ValueError("rate_key needs rate_limit (how many jobs per key may start per period)")
    if concurrency is None and rate_limit is None:
        return None
    if concurrency is not None:
        check_concurrency(concurrency, "concurrency")
    rate = None if rate_limit is None else parse_rate(rate_limit)
    for option, key in (("concurrency_key", concurrency_key), ("rate_key", rate_key)):
        if key is not None:
            _check_argument_name(task_name, handler, option, key)
    return Limit("task", task_name, concurrency, concurrency_key, rate, rate_key)


def _check_argument_name(task_name: str, handler: Callable[..., Any], option: str, key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"{option} must be the name of one of the task's arguments")
    parameters = inspect.signature(handler).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not takes_any and key not in parameters:
        raise ValueError(f"{option} {key!r} is not an argument of task {task_name!r}")


def _enqueued_filter(
    task: str | Task | None, args: dict[str, Any] | None, status: str | Iterable[str] | None, limit: int
) -> dict[str, Any]:
    """The parameters of `enqueued_jobs`, checked before any I/O."""
    if args is not None and not isinstance(args, dict):
        raise InvalidJobError("args must be a dict (the job's args must contain it)")
    try:
        args_json = None if args is None else json.dumps(args, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidJobError(f"args are not JSON-serialisable: {exc}") from None
    statuses = None if status is None else [status] if isinstance(status, str) else list(status)
    unknown = sorted(set(statuses or ()) - set(JOB_STATUSES))
    if unknown:
        raise InvalidJobError(f"unknown status {unknown[0]!r} (one of: {', '.join(JOB_STATUSES)})")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidJobError(f"limit must be a positive int, got {limit!r:.40}")
    name = task.name if isinstance(task, Task) else task
    return {"task": name, "args_json": args_json, "statuses": statuses, "limit": limit}


def _result_request(job_id: int, timeout: float | None) -> tuple[int, float | None]:
    """Checked before any I/O: a job id (an int that a bigint can hold) and a timeout (finite, not negative)."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise InvalidJobError(f"job id must be an int, got {type(job_id).__name__}")
    if not admin.BIGINT_MIN <= job_id <= admin.BIGINT_MAX:
        raise JobNotFoundError(job_id)
    if timeout is None:
        return job_id, None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a finite number of seconds, 0 or more, or None (got {timeout!r:.40})")
    return job_id, float(timeout)


def _insert_one(params: dict[str, Any]) -> Callable[[bool], Plan[int]]:
    def plan(can_copy: bool) -> Plan[int]:
        insert = statements.insert_job(params)
        for _ in range(DEDUP_TRIES):
            inserted = yield insert
            if inserted:
                return int(inserted[0])
        raise InvalidJobError(f"dedup key {params['dedup_key']!r} is contended; try again")

    return plan


def _insert_batch(columns: dict[str, list[Any]]) -> Callable[[bool], Plan[list[int]]]:
    def plan(can_copy: bool) -> Plan[list[int]]:
        if can_copy and jobs.copyable(columns):
            # One COPY statement: all jobs or none, as with the INSERT. Ids reserved first keep the order.
            ids: list[int] = yield statements.reserve_job_ids(len(columns["tasks"]))
            yield statements.copy_jobs(jobs.copy_rows(ids, columns))
            return ids
        inserted: list[int] = yield statements.insert_jobs(columns)
        return inserted

    return plan


def _dependent_one(
    params: dict[str, Any], after: Iterable[int] | None, on_failure: str
) -> Callable[[bool], Plan[list[int]]] | None:
    """The plan for one job with parents, None when it has none (checked before any I/O)."""
    parents = jobs.parents_of(after, batch_size=1, position=0)
    if not parents:
        jobs.check_policies([on_failure])
        return None
    if params["dedup_key"] is not None:
        raise InvalidJobError("dedup_key and after cannot be combined")
    columns = jobs.batch_columns([params])
    columns.update(jobs.dependency_columns([parents], [on_failure]))
    return _insert_after(columns)


def _insert_after(columns: dict[str, list[Any]]) -> Callable[[bool], Plan[list[int]]]:
    def plan(can_copy: bool) -> Plan[list[int]]:
        inserted: list[int] = yield statements.insert_jobs_after(columns)
        return inserted

    return plan


def _nothing(can_copy: bool) -> Plan[list[int]]:
    return []
    yield  # a plan that sends nothing


def _parents(job_id: int) -> Callable[[bool], Plan[list[Parent]]]:
    def plan(can_copy: bool) -> Plan[list[Parent]]:
        found: list[Parent] = yield statements.job_parents(job_id)
        return found

    return plan


def _spec(job: JobLike) -> JobSpec:
    return job if isinstance(job, JobSpec) else JobSpec(task=job[0], args=job[1])


def _chained(jobs: Sequence[JobLike]) -> list[JobSpec]:
    specs = [_spec(job) for job in jobs]
    return [spec if i == 0 else replace(spec, after=[*spec.after, InBatch(i - 1)]) for i, spec in enumerate(specs)]


def _with_callback(jobs: Iterable[JobLike], on_complete: JobLike) -> list[JobSpec]:
    specs = [_spec(job) for job in jobs]
    callback = _spec(on_complete)
    refs: list[ParentRef] = [InBatch(i) for i in range(len(specs))]
    return [*specs, replace(callback, after=[*callback.after, *refs], on_failure="run")]
