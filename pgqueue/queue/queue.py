"""Queue: the task registry and enqueueing, into the caller's transaction or pgqueue's own connection.

Every enqueue is a plan (store/run.py) written once; the sync and async methods are its thin twins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, overload

from pgqueue.cron.schedule import Schedule, declare
from pgqueue.errors import InvalidJobError, UnknownTaskError
from pgqueue.queue import jobs, tracing
from pgqueue.queue.jobs import JobSpec
from pgqueue.queue.retry import DEFAULT_BACKOFF, RetryPolicy
from pgqueue.queue.tasks import Task
from pgqueue.settings import resolve_dsn
from pgqueue.store import admin, statements
from pgqueue.store.database import Database
from pgqueue.store.run import Plan

DEFAULT_QUEUE = "default"
# The job holding a dedup key may finish between the insert's two looks: then insert again, this many times.
DEDUP_TRIES = 3


class Queue:
    """Registers tasks and enqueues jobs for them.

    `dsn` defaults to PGQUEUE_DSN, then DATABASE_URL, else the embedded server, resolved on first use.
    """

    def __init__(self, dsn: str | None = None, *, max_attempts: int = 5, pool_size: int = 4) -> None:
        self._dsn = dsn
        self.default_max_attempts = max_attempts
        self.tasks: dict[str, Task] = {}
        self.schedules: list[Schedule] = []  # declared by @periodic; run by every worker's scheduler
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
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a handler (sync or async) as a task: `@queue.task` or `@queue.task(name=...)`."""

        def register(handler: Callable[..., Any]) -> Task:
            task_name = name or handler.__name__
            if task_name in self.tasks:
                raise ValueError(f"task {task_name!r} is already registered")
            if max_attempts is not None and max_attempts < 1:
                raise ValueError("max_attempts must be at least 1")
            if timeout is not None and timeout <= 0:
                raise ValueError("timeout must be positive")
            registered = Task(
                name=task_name,
                fn=handler,
                queue_name=queue,
                priority=priority,
                max_attempts=max_attempts,
                retry=retry,
                timeout=timeout,
                enqueuer=self,
            )
            self.tasks[task_name] = registered
            return registered

        return register(fn) if fn is not None else register

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
    ) -> int:
        """Insert one job and return its id.

        With `connection` (a psycopg Connection, a SQLAlchemy Connection or Session) the job joins that
        transaction: it exists only if the caller commits. Without it, pgqueue commits on its own.
        With `dedup_key`, no second job is made while one with that key is pending or running: the
        existing job's id is returned instead.
        """
        params = self.job_params(
            task, args, queue=queue, delay=delay, run_at=run_at, priority=priority, max_attempts=max_attempts,
            dedup_key=dedup_key, trace_context=tracing.current_context(),
        )  # fmt: skip
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
    ) -> int:
        """`enqueue` for asyncio code: psycopg AsyncConnection, SQLAlchemy AsyncConnection/AsyncSession."""
        params = self.job_params(
            task, args, queue=queue, delay=delay, run_at=run_at, priority=priority, max_attempts=max_attempts,
            dedup_key=dedup_key, trace_context=tracing.current_context(),
        )  # fmt: skip
        return await self._database.run_async(_insert_one(params), connection)

    def enqueue_many(
        self, jobs: Iterable[JobSpec | tuple[str, dict[str, Any]]], *, connection: Any = None
    ) -> list[int]:
        """Insert a batch of jobs in one statement (all or none); returns their ids in order."""
        columns = self._batch_columns(jobs)
        return self._database.run(_insert_batch(columns), connection) if columns["tasks"] else []

    async def enqueue_many_async(
        self, jobs: Iterable[JobSpec | tuple[str, dict[str, Any]]], *, connection: Any = None
    ) -> list[int]:
        columns = self._batch_columns(jobs)
        return await self._database.run_async(_insert_batch(columns), connection) if columns["tasks"] else []

    def _batch_columns(self, specs: Iterable[JobSpec | tuple[str, dict[str, Any]]]) -> dict[str, list[Any]]:
        trace_context = tracing.current_context()  # one call, one context for the batch

        def params(job: JobSpec | tuple[str, dict[str, Any]]) -> dict[str, Any]:
            spec = job if isinstance(job, JobSpec) else JobSpec(task=job[0], args=job[1])
            return jobs.job_params(
                self.get_task(spec.task), spec.args, default_max_attempts=self.default_max_attempts,
                queue_name=spec.queue, delay=spec.delay, run_at=spec.run_at, priority=spec.priority,
                max_attempts=spec.max_attempts, trace_context=trace_context,
            )  # fmt: skip

        return jobs.batch_columns(map(params, specs))

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
