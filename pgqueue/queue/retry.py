"""Backoff policies: how long a failed job waits before its next attempt. Pure code."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: `base ** attempt` seconds, capped, with +/- `jitter` spread.

    The spread keeps a burst of jobs that failed together (a flaky API) from retrying together.
    """

    base: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.base < 1 or self.max_delay < 0 or not 0 <= self.jitter < 1:
            raise ValueError("backoff needs base >= 1, max_delay >= 0 and 0 <= jitter < 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 for the first run)."""
        raw = min(self.max_delay, self.base ** max(attempt, 0))
        spread = raw * self.jitter
        return max(0.0, raw + (rng or random).uniform(-spread, spread))


@dataclass(frozen=True)
class Fixed:
    """The same delay before every retry."""

    seconds: float

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return self.seconds


RetryPolicy = Backoff | Fixed
DEFAULT_BACKOFF = Backoff()
