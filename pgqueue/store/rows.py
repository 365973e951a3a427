"""Named rows: one type for each statement that returns rows, its fields in the order of the SELECT list.

NamedTuples are built from a result tuple as cheaply as a tuple is unpacked; the claim's row is a frozen
dataclass (as before the store existed), built once per claimed job; statements returning job ids return ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

Attempt = tuple[int, int]  # (job id, attempt number): what an outcome, a lease or a release is keyed by


@dataclass(frozen=True)
class ClaimedJob:
    """A row of the claim: the job's args still as text, parsed when it starts (an unreadable one fails alone)."""

    id: int
    queue: str
    task: str
    args_text: str
    attempt: int
    max_attempts: int
    waited: float = 0.0  # seconds it was runnable before this claim
    trace_context: str | None = None  # the enqueuing trace context (JSON text), as stored: anyone could write it

    @property
    def key(self) -> Attempt:
        return (self.id, self.attempt)


class FailedJob(NamedTuple):
    """A failure written: `status` is 'pending' for a retry (due at `run_at`, epoch seconds) or 'failed'."""

    id: int
    status: str
    run_at: float


class Released(NamedTuple):
    """Jobs of one queue sent back to pending (and the queue's workers notified)."""

    queue: str
    released: int
    notified: str


class Renewed(NamedTuple):
    """An attempt still held by its worker; `renewed` is false when its row was locked and skipped this time."""

    id: int
    renewed: bool


class Rescued(NamedTuple):
    """A job of a vanished worker: now `status` (pending or failed); `counted` says whether the attempt counted."""

    id: int
    queue: str
    status: str
    attempts: int
    counted: bool
    task: str = ""


class NextRunAt(NamedTuple):
    run_at: float | None  # epoch seconds of the earliest future job, None when there is none


class RetryCandidate(NamedTuple):
    """A failed job retry_failed matched: `holder_id` is None for one that goes back, else the job holding its key."""

    id: int
    queue: str
    dedup_key: str | None
    holder_id: int | None
    holder_status: str | None
    retried: bool


class Cancelled(NamedTuple):
    id: int
    worker_id: str | None
    notified: str


class StatusCount(NamedTuple):
    queue: str
    status: str
    jobs: int


class OldestRunnable(NamedTuple):
    queue: str
    age_seconds: float


class BackendPid(NamedTuple):
    pid: int


class ScheduleChange(NamedTuple):
    change: str  # 'registered' or 'disabled'
    name: str


class ScheduleState(NamedTuple):
    name: str
    enabled: bool
    next_fire_at: datetime | None


class Fire(NamedTuple):
    """A fire this call made: the job it inserted, or why it inserted none."""

    job_id: int | None
    skipped_reason: str | None


class PrunedFire(NamedTuple):
    schedule: str


class ScheduleListing(NamedTuple):
    name: str
    enabled: bool
    last_fire_at: datetime | None
    next_fire_at: datetime | None


class Granted(NamedTuple):
    granted: bool


class OrderId(NamedTuple):
    id: int


class Count(NamedTuple):
    count: int


class ReporterLock(NamedTuple):
    locked: bool


class QueueDepth(NamedTuple):
    """One queue's jobs by state, and how long its oldest runnable job has waited (seconds)."""

    queue: str
    ready: int
    scheduled: int
    running: int
    failed: int
    oldest_wait: float


class ScheduleTimes(NamedTuple):
    name: str
    last_fire_at: float | None  # epoch seconds
    next_fire_at: float | None
