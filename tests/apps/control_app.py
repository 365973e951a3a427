"""Tasks for the retry-control and result tests, run in real worker processes
(`pgqueue work --app tests.apps.control_app`)."""

from __future__ import annotations

import asyncio
import time

from pgqueue import Discard, Fixed, Queue, Snooze, current_job

queue = Queue()


@queue.task(name="snooze_once", retry=Fixed(0))
def snooze_once(seconds: float) -> str:
    """Snoozes on its first run (no snooze yet recorded on the context: the first attempt number), then returns."""
    if not _snoozed_before():
        raise Snooze(seconds)
    return "woke"


@queue.task(name="snooze_once_async", retry=Fixed(0))
async def snooze_once_async(seconds: float) -> str:
    await asyncio.sleep(0)
    if not _snoozed_before():
        raise Snooze(seconds)
    return "woke"


_seen: set[int] = set()


def _snoozed_before() -> bool:
    # A worker process runs each job of these tests; the second run of a job in it is the one after the snooze.
    job_id = current_job().id
    if job_id in _seen:
        return True
    _seen.add(job_id)
    return False


@queue.task(name="discard", retry=Fixed(0))
def discard(reason: str) -> None:
    raise Discard(reason)


@queue.task(name="flaky_connection", retry=Fixed(0), max_attempts=3, retry_on=(ConnectionError, TimeoutError))
def flaky_connection(fail_times: int) -> int:
    if current_job().attempt <= fail_times:
        raise ConnectionError("service unreachable")
    return current_job().attempt


@queue.task(name="wrong_value", retry=Fixed(0), max_attempts=3, retry_on=(ConnectionError, TimeoutError))
def wrong_value() -> None:
    raise ValueError("bad input")


@queue.task(name="add")
def add(a: int, b: int) -> int:
    return a + b


@queue.task(name="fail", retry=Fixed(0), max_attempts=1)
def fail(message: str) -> None:
    raise RuntimeError(message)


@queue.task(name="sleep_then_add")
def sleep_then_add(a: int, b: int, seconds: float) -> int:
    time.sleep(seconds)
    return a + b
