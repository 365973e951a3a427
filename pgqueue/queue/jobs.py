"""A job's parameters, checked before any I/O: the one place that says what makes a valid job. Pure code."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
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
COPY_COLUMNS = ("queues", "tasks", "args", "priorities", "max_attempts", "metas", "trace_contexts")
BATCH_COLUMNS = (
    "queues",
    "tasks",
    "args",
    "priorities",
    "max_attempts",
    "run_ats",
    "delays",
    "metas",
    "trace_contexts",
)
# A job's meta says what it is about (an order id, a tenant): small by nature, and indexed.
MAX_META_BYTES = 8_192
# Workflows: what a dependent does when a parent failed for good or was cancelled.
ON_FAILURE = ("cancel", "run")
# Parents of one job: each is an edge row and a countdown of the dependent's row, and all are named in one
# statement; beyond this a fan-in is better written as batches of batches.
MAX_PARENTS = 100_000
BIGINT_MAX = 2**63 - 1


@dataclass(frozen=True)
class InBatch:
    """A parent named by its position in the same `enqueue_many` call (`after=[InBatch(0)]`): its id is not
    known before the call."""

    index: int


ParentRef = int | InBatch


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
    meta: dict[str, Any] | None = None
    after: Sequence[ParentRef] = ()  # job ids, or InBatch(i) for a job of the same call
    on_failure: str = "cancel"  # "cancel" or "run": when a parent failed for good or was cancelled


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
    unique_for: timedelta | float | None = None,
    debounce: timedelta | float | None = None,
    debounce_max_wait: timedelta | float | None = None,
    meta: dict[str, Any] | None = None,
    trace_context: str | None = None,
) -> dict[str, Any]:
    """Validate one job of task `definition` and return the bound parameters of `insert_job`.

    `trace_context`: the enqueuing code's trace context as JSON text (pgqueue.queue.tracing), or None."""
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise InvalidJobError(f"args of task {definition.name!r} must be a dict of keyword arguments")
    args = definition.encode_args(args)  # pydantic models and dataclasses: checked, then as JSON
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
    uniqueness = _uniqueness(
        dedup_key, unique_for, debounce, debounce_max_wait, delay_given=run_at is not None or delay is not None
    )
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
        **uniqueness,
        "meta": meta_json(definition.name, meta),
        "trace_context": trace_context,
    }


# Keys are unique-indexed, and a btree entry holds at most about 2,700 bytes: a longer key would fail its insert
# with an index error; refused here, with a message saying what to do.
MAX_DEDUP_KEY_BYTES = 2000
# A debounced job runs at the latest this many debounce periods after its first enqueue, unless told otherwise.
DEBOUNCE_MAX_WAIT_FACTOR = 10


def _uniqueness(
    dedup_key: str | None,
    unique_for: timedelta | float | None,
    debounce: timedelta | float | None,
    max_wait: timedelta | float | None,
    *,
    delay_given: bool,
) -> dict[str, timedelta | None]:
    """The parameters of unique_for and debounce, checked: both need a dedup key, and they do not mix."""
    if dedup_key is not None and not isinstance(dedup_key, str):
        raise InvalidJobError(f"dedup_key must be a str, got {type(dedup_key).__name__}")
    if dedup_key is not None and "\x00" in dedup_key:
        raise InvalidJobError("dedup_key must not contain a NUL character")
    if dedup_key is not None and len(dedup_key.encode("utf-8", "surrogatepass")) > MAX_DEDUP_KEY_BYTES:
        raise InvalidJobError(
            f"dedup_key is too long ({len(dedup_key.encode('utf-8', 'surrogatepass')):,} bytes of UTF-8; the limit is "
            f"{MAX_DEDUP_KEY_BYTES:,}): use a hash of it"
        )
    if (unique_for is not None or debounce is not None) and dedup_key is None:
        raise InvalidJobError("unique_for and debounce need a dedup_key: the key that makes jobs the same")
    if unique_for is not None and debounce is not None:
        raise InvalidJobError("give either unique_for or debounce, not both")
    if max_wait is not None and debounce is None:
        raise InvalidJobError("debounce_max_wait goes with debounce")
    window = _positive(unique_for, "unique_for") if unique_for is not None else None
    debounce_td = _positive(debounce, "debounce") if debounce is not None else None
    max_wait_td = None
    if debounce_td is not None:
        if delay_given:
            raise InvalidJobError("debounce sets when the job runs: give no delay or run_at with it")
        max_wait_td = (
            _positive(max_wait, "debounce_max_wait") if max_wait is not None else debounce_td * DEBOUNCE_MAX_WAIT_FACTOR
        )
        if max_wait_td < debounce_td:
            raise InvalidJobError(
                f"debounce_max_wait ({max_wait_td}) must not be shorter than debounce ({debounce_td})"
            )
    return {"unique_for": window, "debounce": debounce_td, "debounce_max_wait": max_wait_td}


def _positive(value: timedelta | float, name: str) -> timedelta:
    """A duration above zero that a run_at can still hold (the year 9999 is the limit)."""
    try:
        duration = _as_timedelta(value)
    except InvalidJobError as exc:
        raise InvalidJobError(f"{name}: {exc}") from None
    if duration <= ZERO:
        raise InvalidJobError(f"{name} must be longer than zero (got {duration})")
    return duration


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
        columns["metas"].append(one["meta"])
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


def meta_json(task_name: str, meta: dict[str, Any] | None) -> str | None:
    """A job's meta as JSON text (None for none): a dict, JSON-serialisable, no NUL, at most MAX_META_BYTES."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise InvalidJobError(f"meta of task {task_name!r} must be a dict, e.g. {{'order_id': 42}}")
    try:
        text = json.dumps(meta, allow_nan=False)
    except RecursionError:
        raise InvalidJobError(f"meta of task {task_name!r} is nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise InvalidJobError(f"meta of task {task_name!r} is not JSON-serialisable: {exc}") from None
    if len(text.encode()) > MAX_META_BYTES:
        raise InvalidJobError(
            f"meta of task {task_name!r} is too big ({len(text.encode())} bytes, at most {MAX_META_BYTES}): "
            "keep it to what the job is about and put the rest in args"
        )
    if "\\u0000" in text:  # jsonb has no NUL character
        raise InvalidJobError(f"meta of task {task_name!r} contains a NUL character, which jsonb cannot hold")
    return text


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


def parents_of(after: Iterable[ParentRef] | None, *, batch_size: int, position: int) -> list[ParentRef]:
    """The parents of the job at `position` of a call enqueueing `batch_size` jobs, checked, duplicates dropped."""
    if after is None:
        return []
    if isinstance(after, int | InBatch | str | bytes):
        raise InvalidJobError("after must be a list of job ids")
    parents: dict[ParentRef, None] = {}
    for parent in after:
        if isinstance(parent, InBatch):
            if not isinstance(parent.index, int) or isinstance(parent.index, bool):
                raise InvalidJobError(f"InBatch index must be an int, got {parent.index!r}")
            if not 0 <= parent.index < batch_size:
                raise InvalidJobError(f"InBatch({parent.index}) names no job of this call ({batch_size} jobs)")
            if parent.index == position:
                raise InvalidJobError(f"job {position} of this call cannot depend on itself")
        elif isinstance(parent, bool) or not isinstance(parent, int):
            raise InvalidJobError(f"after takes job ids (ints), got {type(parent).__name__}: {str(parent)[:40]!r}")
        elif not 1 <= parent <= BIGINT_MAX:
            raise InvalidJobError(f"job {parent} does not exist: nothing was enqueued")
        parents[parent] = None
        if len(parents) > MAX_PARENTS:
            raise InvalidJobError(f"a job can depend on at most {MAX_PARENTS:,} jobs")
    return list(parents)


def check_policies(policies: Iterable[object]) -> None:
    for policy in policies:
        if policy not in ON_FAILURE:
            raise InvalidJobError(f"on_failure must be 'cancel' or 'run', got {str(policy)[:40]!r}")


def dependency_columns(parents: Sequence[Sequence[ParentRef]], on_failure: Sequence[str]) -> dict[str, list[Any]]:
    """The columns `insert_jobs_after` adds to a batch: each job's count of parents and the edges (positions
    1-based, as SQL's ordinality). Refuses a cycle among jobs of the batch, naming it, before any I/O."""
    check_policies(on_failure)
    _refuse_cycles(parents)
    columns: dict[str, list[Any]] = {
        "waiting_for": [len(p) for p in parents],
        "edge_children": [],
        "edge_parent_ids": [],
        "edge_parent_indexes": [],
        "edge_on_failure": [],
    }
    for position, (job_parents, policy) in enumerate(zip(parents, on_failure, strict=True), start=1):
        for parent in job_parents:
            columns["edge_children"].append(position)
            columns["edge_parent_ids"].append(None if isinstance(parent, InBatch) else parent)
            columns["edge_parent_indexes"].append(parent.index + 1 if isinstance(parent, InBatch) else None)
            columns["edge_on_failure"].append(policy)
    return columns


def _refuse_cycles(parents: Sequence[Sequence[ParentRef]]) -> None:
    """Jobs of one call that depend on each other in a circle would wait for ever: find one, walking without
    recursion (a chain of 100,000 must not exhaust the stack)."""
    edges = [[p.index for p in job_parents if isinstance(p, InBatch)] for job_parents in parents]
    if all(all(index < position for index in refs) for position, refs in enumerate(edges)):
        return  # every job names only earlier ones: no cycle possible (chains and batches are so)
    state = [0] * len(edges)  # 0 unseen, 1 on the current path, 2 done
    for start in range(len(edges)):
        if state[start]:
            continue
        path, stack = [start], [iter(edges[start])]
        state[start] = 1
        while stack:
            following = next(stack[-1], None)
            if following is None:
                state[path.pop()] = 2
                stack.pop()
            elif state[following] == 1:
                loop = [*path[path.index(following) :], following]
                shown = " -> ".join(str(i) for i in loop[:10]) + (" -> ..." if len(loop) > 10 else "")
                raise InvalidJobError(f"jobs of this call depend on each other in a cycle: {shown}")
            elif state[following] == 0:
                state[following] = 1
                path.append(following)
                stack.append(iter(edges[following]))
