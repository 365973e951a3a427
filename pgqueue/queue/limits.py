"""Concurrency limits as declared in code: `@queue.task(concurrency=4)`, per argument with `concurrency_key`,
and `queue.limit_queue("pdf", concurrency=4)`. Pure: checked here, synced to pgqueue.limits by each worker at
start (pgqueue/store/limits.py), and decided inside the claim by the database."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

INT_MAX = 2**31 - 1
MAX_NAME = 200  # a queue name longer than this is a mistake, not a name


@dataclass(frozen=True)
class Limit:
    """At most `concurrency` running jobs of a task or a queue (of a task: per value of `key_arg` when set)."""

    scope: str  # 'task' or 'queue'
    target: str
    concurrency: int
    key_arg: str | None = None

    @property
    def name(self) -> str:
        return f"{self.scope}:{self.target}"


def check_concurrency(value: Any, what: str) -> int:
    """`value` as a concurrency limit (a whole number from 1 to 2**31-1), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number of jobs, got {value!r}")
    if not 1 <= value <= INT_MAX:
        raise ValueError(f"{what} must be between 1 and {INT_MAX}, got {value}")
    return value


def check_queue_name(name: Any) -> str:
    """A queue name an operator can see and type: not empty, no control characters, not at any length."""
    if not isinstance(name, str) or not name:
        raise ValueError("a queue name must be a non-empty string")
    if len(name) > MAX_NAME:
        raise ValueError(f"a queue name must be at most {MAX_NAME} characters")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in name):
        raise ValueError("a queue name must not contain control characters")
    return name


def declared_columns(limits: Iterable[Limit]) -> dict[str, list[Any]]:
    """The parallel arrays of `sync_limits`, sorted by name (so that all workers lock rows in one order)."""
    ordered = sorted(limits, key=lambda limit: limit.name)
    return {
        "names": [limit.name for limit in ordered],
        "scopes": [limit.scope for limit in ordered],
        "targets": [limit.target for limit in ordered],
        "concurrencies": [limit.concurrency for limit in ordered],
        "key_args": [limit.key_arg for limit in ordered],
    }
