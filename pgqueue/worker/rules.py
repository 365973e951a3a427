"""The worker's rules as pure functions: how many jobs to claim ahead, how long to sleep, how long to wait
before reconnecting. No I/O, no clock of their own: each takes the time it needs (tests/unit/test_rules.py)."""

from __future__ import annotations

import random
from collections.abc import Iterator

# Claim ahead only while handlers take less than this on average: longer jobs are better left in the table,
# where an idle worker elsewhere can take them.
PREFETCH_BELOW_SECONDS = 0.01
# ... and no more than about this much work per process: the last job claimed ahead starts within it.
PREFETCH_AHEAD_SECONDS = 0.05
# Reconnect pauses: from this, doubling up to the setting's maximum, each spread by +/- 20 % so that the
# workers of a restarted server do not all knock at once.
FIRST_RECONNECT_DELAY = 0.5
RECONNECT_JITTER = 0.2
# The moving average of handler run times moves this far towards each new sample.
JOB_SECONDS_WEIGHT = 0.2


def prefetch_room(*, job_seconds: float, concurrency: int, prefetch: int, prefetched: int) -> int:
    """How many more jobs to claim ahead of free slots, with `prefetched` claimed ahead already.

    None while handlers average PREFETCH_BELOW_SECONDS or more; else about PREFETCH_AHEAD_SECONDS of work for
    all slots at the average run time, at most `prefetch`."""
    if job_seconds >= PREFETCH_BELOW_SECONDS:
        return 0
    worth = int(concurrency * PREFETCH_AHEAD_SECONDS / max(job_seconds, 1e-6))
    return max(0, min(prefetch, worth) - prefetched)


def average_job_seconds(average: float, sample: float) -> float:
    """The moving average of handler run times after one more run of `sample` seconds."""
    return average + (sample - average) * JOB_SECONDS_WEIGHT


def idle_timeout(*, now: float, next_poll: float, next_due: float | None) -> float:
    """Seconds an idle worker sleeps (unless woken): until the next poll or the earliest known due job."""
    deadline = next_poll if next_due is None else min(next_poll, next_due)
    return max(0.0, deadline - now)


def starts_due_in(*, oldest_start: float | None, now: float, ack_delay: float) -> float | None:
    """Seconds until the oldest unreported handler start must be written (0: now); None when there is none."""
    if oldest_start is None:
        return None
    return max(0.0, oldest_start + ack_delay - now)


def reconnect_delays(max_delay: float, rng: random.Random | None = None) -> Iterator[float]:
    """The pauses between attempts to reconnect: 0.5 s doubling up to `max_delay`, each with jitter."""
    delay = FIRST_RECONNECT_DELAY
    uniform = (rng or random).uniform
    while True:
        yield delay * uniform(1 - RECONNECT_JITTER, 1 + RECONNECT_JITTER)
        delay = min(delay * 2, max_delay)
