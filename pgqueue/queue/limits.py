"""Limits as declared in code: `@queue.task(concurrency=4)`, per argument with `concurrency_key`; rates with
`@queue.task(rate_limit="10/s")`, per argument with `rate_key`; `queue.limit_queue("pdf", concurrency=4,
rate_limit="100/m")`. Pure: checked here, synced to pgqueue.limits by each worker at start
(pgqueue/store/limits.py), and decided inside the claim by the database."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

INT_MAX = 2**31 - 1
MAX_NAME = 200  # a queue name longer than this is a mistake, not a name


MAX_RATE = 10_000  # starts per period: the window is counted row by row, so it stays small
PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_RATE = re.compile(r"\s*(\d+)\s*/\s*([a-z]+)\s*")


@dataclass(frozen=True)
class Rate:
    """At most `starts` starts in any window of `period_seconds` seconds."""

    starts: int
    period_seconds: int

    @property
    def period(self) -> timedelta:
        return timedelta(seconds=self.period_seconds)

    def __str__(self) -> str:
        unit = {1: "s", 60: "m", 3600: "h"}[self.period_seconds]
        return f"{self.starts}/{unit}"


def parse_rate(value: Any, what: str = "rate_limit") -> Rate:
    """`"10/s"`, `"100/m"`, `"5/h"` (also `/second`, `/min`, `/hour`) as a Rate, else ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string such as '10/s', '100/m' or '5/h', got {value!r:.40}")
    match = _RATE.fullmatch(value.lower())
    if not match or match.group(2) not in PERIODS:
        raise ValueError(f"{what} must look like '10/s', '100/m' or '5/h', got {value!r:.40}")
    digits = match.group(1)
    starts = int(digits) if len(digits) <= 9 else MAX_RATE + 1  # never int() of thousands of digits
    if not 1 <= starts <= MAX_RATE:
        raise ValueError(f"{what} must allow between 1 and {MAX_RATE} starts per period, got {starts}")
    return Rate(starts, PERIODS[match.group(2)])


@dataclass(frozen=True)
class Limit:
    """At most `concurrency` running jobs of a task or a queue (of a task: per value of `key_arg` when set), and/or
    at most `rate` starts per period (of a task: per value of `rate_key` when set)."""

    scope: str  # 'task' or 'queue'
    target: str
    concurrency: int | None = None
    key_arg: str | None = None
    rate: Rate | None = None
    rate_key: str | None = None

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
        "rates": [limit.rate.starts if limit.rate else None for limit in ordered],
        "rate_periods": [limit.rate.period if limit.rate else None for limit in ordered],
        "rate_key_args": [limit.rate_key for limit in ordered],
    }
