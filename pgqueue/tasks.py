"""Task objects: a registered handler with its defaults (queue, attempts, backoff, timeout)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgqueue.errors import InvalidJobError
from pgqueue.retry import DEFAULT_BACKOFF, RetryPolicy

if TYPE_CHECKING:
    from pgqueue.queue import Queue


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
    owner: Queue | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.fn)
        self.signature = inspect.signature(self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def check_args(self, args: dict[str, Any]) -> None:
        """Raise InvalidJobError when `args` cannot be passed to the handler as keywords."""
        try:
            self.signature.bind(**args)
        except TypeError as exc:
            raise InvalidJobError(f"arguments do not fit task {self.name!r}: {exc}") from None

    def enqueue(self, args: dict[str, Any] | None = None, **options: Any) -> int:
        """Queue a job for this task; options as for `Queue.enqueue`."""
        return self._queue().enqueue(self.name, args, **options)

    async def enqueue_async(self, args: dict[str, Any] | None = None, **options: Any) -> int:
        return await self._queue().enqueue_async(self.name, args, **options)

    def _queue(self) -> Queue:
        if self.owner is None:
            raise InvalidJobError(f"task {self.name!r} is not registered on a Queue")
        return self.owner
