"""Queue: the task registry and enqueueing, into the caller's transaction or pgqueue's own connection."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString, overload

import psycopg
import psycopg.errors
from psycopg_pool import PoolTimeout

from pgqueue import admin, connections
from pgqueue.errors import InvalidJobError, SchemaMissingError, UnknownTaskError
from pgqueue.execution import args_fit
from pgqueue.retry import DEFAULT_BACKOFF, RetryPolicy
from pgqueue.scheduler import Schedule, declare
from pgqueue.settings import resolve_dsn
from pgqueue.sql import QUERIES
from pgqueue.tasks import Task

DEFAULT_QUEUE = "default"
ZERO = timedelta(0)
# Deeper args could not be parsed back by a worker at every depth of its call stack.
MAX_ARGS_NESTING = 256


@dataclass(frozen=True)
class JobSpec:
    """One job for `enqueue_many`."""

    task: str
    args: dict[str, Any] | None = None
    queue: str | None = None
    delay: timedelta | float | None = None
    run_at: datetime | None = None
    priority: int | None = None
    max_attempts: int | None = None


class Queue:
    """Registers tasks and enqueues jobs for them.

    `dsn` defaults to PGQUEUE_DSN, then DATABASE_URL, else the embedded server, resolved on first use.
    """

    def __init__(self, dsn: str | None = None, *, max_attempts: int = 5, pool_size: int = 4) -> None:
        self._dsn = dsn
        self.default_max_attempts = max_attempts
        self.pool_size = pool_size
        self.tasks: dict[str, Task] = {}
        self.periodic_tasks: list[Schedule] = []
        self._pool: Any = None
        self._async_pool: Any = None
        self._lock = threading.Lock()

    # -- configuration --------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            self._dsn = resolve_dsn(None)
        return self._dsn

    @dsn.setter
    def dsn(self, value: str) -> None:
        self._dsn = value

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
                owner=self,
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
        pgqueue.scheduler for the missed-fire and overlap policies.
        """

        def register(target: Callable[..., Any] | Task) -> Task:
            registered_here = not isinstance(target, Task)
            task = self.task(target) if registered_here else target
            if task.owner is not self:
                raise ValueError(f"task {task.name!r} belongs to another Queue")
            try:
                schedule = declare(
                    self,
                    task,
                    cron=cron,
                    name=name,
                    timezone=timezone,
                    args=args,
                    missed=missed,
                    backfill_limit=backfill_limit,
                    skip_if_running=skip_if_running,
                    queue_name=queue,
                    priority=priority,
                )
                if any(existing.name == schedule.name for existing in self.periodic_tasks):
                    raise ValueError(f"schedule {schedule.name!r} is already declared")
            except Exception:
                if registered_here:  # a rejected declaration leaves no half-registered task behind
                    del self.tasks[task.name]
                raise
            self.periodic_tasks.append(schedule)
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
    ) -> dict[str, Any]:
        """Validate one job and return the bound parameters of `insert_job`; raises before any I/O."""
        definition = self.get_task(task.name if isinstance(task, Task) else task)
        args = {} if args is None else args
        if not isinstance(args, dict):
            raise InvalidJobError(f"args of task {definition.name!r} must be a dict of keyword arguments")
        try:
            args_json = json.dumps(args, allow_nan=False)
        except RecursionError:
            raise InvalidJobError(f"args of task {definition.name!r} are nested too deeply") from None
        except (TypeError, ValueError) as exc:
            raise InvalidJobError(f"args of task {definition.name!r} are not JSON-serialisable: {exc}") from None
        # A job whose args a worker could not read back would only fail there: refuse it now. Nesting is the one
        # way valid JSON can be unreadable, and JSON shorter than two brackets per level cannot nest that deep.
        if len(args_json) > 2 * MAX_ARGS_NESTING and _nesting(args) > MAX_ARGS_NESTING:
            raise InvalidJobError(
                f"args of task {definition.name!r} are nested too deeply (more than {MAX_ARGS_NESTING} levels)"
            )
        if not args_fit(definition, args):  # a set check; Signature.bind only to word the error
            definition.check_args(args)
        if run_at is not None and delay is not None:
            raise InvalidJobError("give either delay or run_at, not both")
        if run_at is not None and run_at.tzinfo is None:
            raise InvalidJobError("run_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
        delay_td = _as_timedelta(delay)
        attempts = max_attempts if max_attempts is not None else definition.max_attempts
        attempts = attempts if attempts is not None else self.default_max_attempts
        if attempts < 1:
            raise InvalidJobError("max_attempts must be at least 1")
        return {
            "queue": queue or definition.queue_name,
            "task": definition.name,
            "args": args_json,
            "priority": definition.priority if priority is None else int(priority),
            "max_attempts": attempts,
            "run_at": run_at,
            "delay": delay_td,
            "dedup_key": dedup_key,
            "schedule": schedule,
        }

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
            task,
            args,
            queue=queue,
            delay=delay,
            run_at=run_at,
            priority=priority,
            max_attempts=max_attempts,
            dedup_key=dedup_key,
        )
        query = QUERIES["insert_job_once" if dedup_key is not None else "insert_job"]
        for _ in range(3):  # the job holding the key may finish between our two looks: then insert again
            rows = self._execute(connection, query, params)
            if rows:
                return int(rows[0][0])
        raise InvalidJobError(f"dedup key {dedup_key!r} is contended; try again")

    def enqueue_many(
        self, jobs: Iterable[JobSpec | tuple[str, dict[str, Any]]], *, connection: Any = None
    ) -> list[int]:
        """Insert a batch of jobs in one statement (all or none); returns their ids in order."""
        params = self._batch_params(jobs)
        if not params["tasks"]:
            return []
        if _copyable(params) and (connection is None or isinstance(connection, psycopg.Connection)):
            return self._copy(connection, params)
        rows = self._execute(connection, QUERIES["insert_jobs"], params)
        return [int(row[0]) for row in rows]

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
            task,
            args,
            queue=queue,
            delay=delay,
            run_at=run_at,
            priority=priority,
            max_attempts=max_attempts,
            dedup_key=dedup_key,
        )
        query = QUERIES["insert_job_once" if dedup_key is not None else "insert_job"]
        for _ in range(3):
            rows = await self._execute_async(connection, query, params)
            if rows:
                return int(rows[0][0])
        raise InvalidJobError(f"dedup key {dedup_key!r} is contended; try again")

    async def enqueue_many_async(
        self, jobs: Iterable[JobSpec | tuple[str, dict[str, Any]]], *, connection: Any = None
    ) -> list[int]:
        params = self._batch_params(jobs)
        if not params["tasks"]:
            return []
        if _copyable(params) and (connection is None or isinstance(connection, psycopg.AsyncConnection)):
            return await self._copy_async(connection, params)
        rows = await self._execute_async(connection, QUERIES["insert_jobs"], params)
        return [int(row[0]) for row in rows]

    def _copy(self, connection: psycopg.Connection[Any] | None, params: dict[str, list[Any]]) -> list[int]:
        try:
            if connection is not None:
                return _copy_jobs(connection, params)
            with self._sync_pool().connection() as own:
                return _copy_jobs(own, params)
        except psycopg.errors.UndefinedTable:
            raise SchemaMissingError() from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise connections.unavailable(exc) from exc

    async def _copy_async(
        self, connection: psycopg.AsyncConnection[Any] | None, params: dict[str, list[Any]]
    ) -> list[int]:
        try:
            if connection is not None:
                return await _copy_jobs_async(connection, params)
            pool = await self._async_pool_open()
            async with pool.connection() as own:
                return await _copy_jobs_async(own, params)
        except psycopg.errors.UndefinedTable:
            raise SchemaMissingError() from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise connections.unavailable(exc) from exc

    def _batch_params(self, jobs: Iterable[JobSpec | tuple[str, dict[str, Any]]]) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {
            key: [] for key in ("queues", "tasks", "args", "priorities", "max_attempts", "run_ats", "delays")
        }
        for job in jobs:
            spec = job if isinstance(job, JobSpec) else JobSpec(task=job[0], args=job[1])
            one = self.job_params(
                spec.task,
                spec.args,
                queue=spec.queue,
                delay=spec.delay,
                run_at=spec.run_at,
                priority=spec.priority,
                max_attempts=spec.max_attempts,
            )
            columns["queues"].append(one["queue"])
            columns["tasks"].append(one["task"])
            columns["args"].append(one["args"])
            columns["priorities"].append(one["priority"])
            columns["max_attempts"].append(one["max_attempts"])
            columns["run_ats"].append(one["run_at"])
            columns["delays"].append(one["delay"])
        return columns

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
        try:
            with self._sync_pool().connection() as conn:
                return admin.retry_failed(conn, task=task, queue=queue, ids=ids, dry_run=dry_run)
        except psycopg.errors.UndefinedTable:
            raise SchemaMissingError() from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise connections.unavailable(exc) from exc

    def cancel(self, *ids: int) -> list[int]:
        """Cancel jobs: pending ones at once, running ones are asked to stop. Returns those cancelled."""
        try:
            with self._sync_pool().connection() as conn:
                return admin.cancel(conn, ids)
        except psycopg.errors.UndefinedTable:
            raise SchemaMissingError() from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise connections.unavailable(exc) from exc

    # -- connections ----------------------------------------------------------------------------

    def _execute(self, connection: Any, query: LiteralString, params: dict[str, Any]) -> Sequence[Any]:
        try:
            if connection is not None:
                return connections.execute_in(connection, query, params)
            with self._sync_pool().connection() as own:
                return own.execute(query, params).fetchall()
        except psycopg.errors.UndefinedTable:
            raise SchemaMissingError() from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise connections.unavailable(exc) from exc

    async def _execute_async(self, connection: Any, query: LiteralString, params: dict[str, Any]) -> Sequence[Any]:
        try:
            if connection is not None:
                return await connections.execute_in_async(connection, query, params)
            pool = await self._async_pool_open()
            async with pool.connection() as own:
                cursor = await own.execute(query, params)
                return await cursor.fetchall()
        except psycopg.errors.UndefinedTable:
            raise SchemaMissingError() from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise connections.unavailable(exc) from exc

    def _sync_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = connections.open_pool(self.dsn, self.pool_size)
            return self._pool

    async def _async_pool_open(self) -> Any:
        if self._async_pool is None:
            self._async_pool = await connections.open_async_pool(self.dsn, self.pool_size)
        return self._async_pool

    def close(self) -> None:
        """Close pgqueue's own connections (the caller's are never touched)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    async def aclose(self) -> None:
        if self._async_pool is not None:
            await self._async_pool.close()
            self._async_pool = None
        self.close()


# From this many jobs on, a batch is written with COPY (about 3x quicker on the server than INSERT from
# arrays, measured at 50,000) after reserving its ids; smaller ones are one INSERT, one round trip.
COPY_AT_LEAST = 500
COPY_COLUMNS = ("queues", "tasks", "args", "priorities", "max_attempts")


def _copyable(params: dict[str, list[Any]]) -> bool:
    """COPY cannot compute run_at on the server: only batches of jobs due now, which take the column default."""
    return (
        len(params["tasks"]) >= COPY_AT_LEAST
        and all(run_at is None for run_at in params["run_ats"])
        and all(delay == ZERO for delay in params["delays"])
    )


def _copy_jobs(conn: psycopg.Connection[Any], params: dict[str, list[Any]]) -> list[int]:
    # One COPY statement: all jobs or none, as with the INSERT. Ids reserved first keep the order.
    ids = [int(row[0]) for row in conn.execute(QUERIES["reserve_job_ids"], {"count": len(params["tasks"])})]
    with conn.cursor() as cursor, cursor.copy(QUERIES["copy_jobs"]) as copy:
        for row in zip(ids, *(params[column] for column in COPY_COLUMNS), strict=True):
            copy.write_row(row)
    return ids


async def _copy_jobs_async(conn: psycopg.AsyncConnection[Any], params: dict[str, list[Any]]) -> list[int]:
    reserved = await conn.execute(QUERIES["reserve_job_ids"], {"count": len(params["tasks"])})
    ids = [int(row[0]) for row in await reserved.fetchall()]
    async with conn.cursor() as cursor, cursor.copy(QUERIES["copy_jobs"]) as copy:
        for row in zip(ids, *(params[column] for column in COPY_COLUMNS), strict=True):
            await copy.write_row(row)
    return ids


def _nesting(value: Any) -> int:
    """How many levels of objects and arrays `value` nests (walked without recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_ARGS_NESTING:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _as_timedelta(delay: timedelta | float | None) -> timedelta:
    if delay is None:
        return ZERO
    too_far = f"delay {delay!r} is out of range: the job would run after the year 9999"
    try:
        value = delay if isinstance(delay, timedelta) else timedelta(seconds=float(delay))
    except OverflowError:  # inf, or beyond timedelta's 999999999 days
        raise InvalidJobError(too_far) from None
    except (TypeError, ValueError):  # nan, or not a number
        raise InvalidJobError(f"delay {delay!r} is not a duration: pass a timedelta or seconds") from None
    if value < ZERO:
        raise InvalidJobError(f"delay must not be negative (got {value})")
    try:
        datetime.now(UTC) + value  # the job's run_at must be a time Python (and so the job row) can hold
    except OverflowError:
        raise InvalidJobError(too_far) from None
    return value
