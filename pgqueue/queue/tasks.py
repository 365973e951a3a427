"""Task objects: a registered handler with its defaults (queue, attempts, backoff, timeout)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pgqueue.errors import InvalidJobError
from pgqueue.queue import typed
from pgqueue.queue.limits import Limit
from pgqueue.queue.retry import DEFAULT_BACKOFF, RetryPolicy


class Enqueuer(Protocol):
    """What a Task enqueues through (its Queue), so that a task needs no reference to the Queue class."""

    def enqueue(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> int: ...

    async def enqueue_async(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> int: ...

    def parents(self, job_id: int) -> list[Any]: ...

    async def parents_async(self, job_id: int) -> list[Any]: ...


@dataclass(eq=False)
class Task:
    """A job type. Calling it runs the handler directly; `.enqueue(...)` queues a job for it."""

    name: str
    fn: Callable[..., Any]
    queue_name: str = "default"
    priority: int = 0
    max_attempts: int | None = None
    retry: RetryPolicy = DEFAULT_BACKOFF
    timeout: float | None = None
    limit: Limit | None = None  # concurrency and rate limits across all workers (pgqueue.limits)
    enqueuer: Enqueuer | None = field(default=None, repr=False)
    # None: every exception is retried (while attempts are left); else only these, the others fail at once.
    retry_on: tuple[type[BaseException], ...] | None = None

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.fn)
        self.signature = inspect.signature(self.fn)
        # Parameters annotated with a pydantic model or a dataclass: checked at enqueue, rebuilt at run.
        self.typed = typed.converters(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def fits(self, args: dict[str, Any]) -> bool:
        """True when `args` certainly bind to the handler: a set check per job instead of Signature.bind (~8 us)."""
        keywords = _keywords(self)
        if keywords is None:
            return False
        accepted, required = keywords
        return required <= args.keys() <= accepted

    def check_args(self, args: dict[str, Any]) -> None:
        """Raise InvalidJobError when `args` cannot be passed to the handler as keywords."""
        try:
            self.signature.bind(**args)
        except TypeError as exc:
            raise InvalidJobError(f"arguments do not fit task {self.name!r}: {exc}") from None

    def retries(self, exc: BaseException) -> bool:
        """Whether an attempt that raised `exc` may be retried (attempts permitting), by `retry_on`."""
        return self.retry_on is None or isinstance(exc, self.retry_on)

    def encode_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """`args` with its typed values checked and made JSON-ready; raises InvalidJobError naming what is wrong."""
        if not self.typed:
            return args
        try:
            return typed.encode_args(self.typed, args)
        except typed.ArgumentTypeError as exc:
            raise InvalidJobError(f"arguments do not fit the types of task {self.name!r}: {exc}") from None

    def decode_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """A job's args as the handler takes them: typed values rebuilt (models validated again: the row may have
        been written by hand, or by an older version of the model); raises InvalidJobError."""
        if not self.typed:
            return args
        try:
            return typed.decode_args(self.typed, args)
        except typed.ArgumentTypeError as exc:
            raise InvalidJobError(f"arguments do not fit the types of task {self.name!r}: {exc}") from None

    def enqueue(self, args: dict[str, Any] | None = None, **options: Any) -> int:
        """Queue a job for this task; options as for `Queue.enqueue`."""
        return self._enqueuer().enqueue(self.name, args, **options)

    async def enqueue_async(self, args: dict[str, Any] | None = None, **options: Any) -> int:
        return await self._enqueuer().enqueue_async(self.name, args, **options)

    def _enqueuer(self) -> Enqueuer:
        if self.enqueuer is None:
            raise InvalidJobError(f"task {self.name!r} is not registered on a Queue")
        return self.enqueuer


@functools.cache
def _keywords(task: Task) -> tuple[frozenset[str], frozenset[str]] | None:
    """The argument names a handler accepts and those it requires, when it takes plain keywords only."""
    accepted, required = set(), set()
    for parameter in task.signature.parameters.values():
        if parameter.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            return None  # *args, **kwargs or positional-only: Signature.bind decides
        accepted.add(parameter.name)
        if parameter.default is inspect.Parameter.empty:
            required.add(parameter.name)
    return frozenset(accepted), frozenset(required)


def exception_classes(value: object) -> tuple[type[BaseException], ...]:
    """`retry_on` as a tuple of exception classes: one class or an iterable of them; TypeError for anything else.

    Checked when the task is declared: a typo such as `retry_on=ConnectionError()` (an instance) or
    `retry_on="ConnectionError"` must fail at import, not turn every failure of the task permanent."""
    items = (value,) if isinstance(value, type) else value
    if isinstance(items, str | bytes) or not isinstance(items, tuple | list | set | frozenset):
        raise TypeError(f"retry_on must be an exception class or a tuple of them, got {_kind(value)}")
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"retry_on must be an exception class or a tuple of them, got {_kind(item)}")
    return tuple(items)


def _kind(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__!r}, which is not an exception"
    return f"{type(value).__name__} {value!r:.60}"
