"""A worker's stop request, read by its parts: stop claiming; past the grace period, stop waiting."""

from __future__ import annotations

import time


class Stopping:
    def __init__(self, grace_period: float) -> None:
        self._grace_period = grace_period
        self.requested = False  # no new jobs
        self.forced = False  # a second request: hand running jobs back at once
        self.deadline: float | None = None  # epoch; past it, a stopping worker stops waiting for the database

    def request(self) -> None:
        if self.requested:
            self.forced = True
        else:
            self.deadline = time.time() + self._grace_period
        self.requested = True

    def past_deadline(self) -> bool:
        return self.forced or (self.deadline is not None and time.time() >= self.deadline)

    def clip(self, pause: float) -> float:
        """`pause`, shortened so as not to sleep past the deadline."""
        if self.deadline is None:
            return pause
        return min(pause, max(0.0, self.deadline - time.time()))
