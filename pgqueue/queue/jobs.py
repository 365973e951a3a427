"""A job's parameters, checked before any I/O: the one place that says what makes a valid job. Pure code."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pgqueue.errors import InvalidJobError
from pgqueue.queue.tasks import Task

ZERO = timedelta(0)
# Deeper args could not be parsed back by a worker at every depth of its call stack.
MAX_ARGS_NESTING = 256
# From this many jobs on, a batch is written with COPY (about 3x quicker on the server than INSERT from
# arrays, measured at 50,000) after reserving its ids; smaller ones are one INSERT, one round trip.
COPY_AT_LEAST = 500
COPY_COLUMNS = ("queues", "tasks", "args", "priorities", "max_attempts", "trace_contexts")
BATCH_COLUMNS = ("queues", "tasks", "args", "priorities", "max_attempts", "run_ats", "delays", "trace_contexts")


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


def job_params(
    definition: Task,
    args: dict[str, Any] | None,
    *,
    default_max_attempts: int,
    queue_name: str | None = None,
    delay: timedelta | float | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    dedup_key: str | None = None,
    schedule: str | None = None,
    trace_context: str | None = None,
) -> dict[str, Any]:
    """Validate one job of task `definition` and return the bound parameters of `insert_job`.

    `trace_context`: the enqueuing code's trace context as JSON text (pgqueue.queue.tracing), or None."""
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
    if not definition.fits(args):  # a set check; Signature.bind only to word the error
        definition.check_args(args)
    if run_at is not None and delay is not None:
        raise InvalidJobError("give either delay or run_at, not both")
    if run_at is not None and run_at.tzinfo is None:
        raise InvalidJobError("run_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
    delay_td = _as_timedelta(delay)
    attempts = max_attempts if max_attempts is not None else definition.max_attempts
    attempts = attempts if attempts is not None else default_max_attempts
    if attempts < 1:
        raise InvalidJobError("max_attempts must be at least 1")
    return {
        "queue": queue_name or definition.queue_name,
        "task": definition.name,
        "args": args_json,
        "priority": definition.priority if priority is None else int(priority),
        "max_attempts": attempts,
        "run_at": run_at,
        "delay": delay_td,
        "dedup_key": dedup_key,
        "schedule": schedule,
        "trace_context": trace_context,
    }


def batch_columns(jobs: Iterable[dict[str, Any]]) -> dict[str, list[Any]]:
    """The parameters of `insert_jobs` (parallel arrays) from each job's `job_params`."""
    columns: dict[str, list[Any]] = {key: [] for key in BATCH_COLUMNS}
    for one in jobs:
        columns["queues"].append(one["queue"])
        columns["tasks"].append(one["task"])
        columns["args"].append(one["args"])
        columns["priorities"].append(one["priority"])
        columns["max_attempts"].append(one["max_attempts"])
        columns["run_ats"].append(one["run_at"])
        columns["delays"].append(one["delay"])
        columns["trace_contexts"].append(one["trace_context"])
    return columns


def copyable(columns: dict[str, list[Any]]) -> bool:
    """COPY cannot compute run_at on the server: only big batches of jobs due now, which take the column default."""
    return (
        len(columns["tasks"]) >= COPY_AT_LEAST
        and all(run_at is None for run_at in columns["run_ats"])
        and all(delay == ZERO for delay in columns["delays"])
    )


def copy_rows(ids: list[int], columns: dict[str, list[Any]]) -> Iterable[tuple[Any, ...]]:
    """The rows COPY writes: each reserved id with its job's columns."""
    return zip(ids, *(columns[column] for column in COPY_COLUMNS), strict=True)


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
