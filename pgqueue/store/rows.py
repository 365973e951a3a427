"""Named rows: one type for each statement that returns rows, its fields in the order of the SELECT list.

NamedTuples are built from a result tuple as cheaply as a tuple is unpacked; the claim's row is a frozen
dataclass (as before the store existed), built once per claimed job; statements returning job ids return ints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

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
    held: bool = False  # not to be run: denied a slot (parked as `held`), a rate start, or not claimed (no_slot)
    waited: float = 0.0  # seconds it was runnable before this claim
    trace_context: str | None = None  # the enqueuing trace context (JSON text), as stored: anyone could write it
    due_at: float | None = None  # held because a rate's window is full: pending again, due then (epoch seconds)
    no_slot: bool = False  # rate-limited, not claimed: this worker had no free slot to start it in at once
    rated: bool = False  # under a rate limit (granted, moved on or not claimed)
    slotted: bool = False  # under a concurrency limit: granted a slot or held for one

    @property
    def key(self) -> Attempt:
        return (self.id, self.attempt)


def unlimited_claim(job_id: int | None, *columns: Any) -> ClaimedJob | None:
    """A row of claim_unlimited: a claimed job, or None, its whole answer while a limit exists (nothing claimed)."""
    return None if job_id is None else ClaimedJob(job_id, *columns)


class FailedJob(NamedTuple):
    """A failure written: `status` is 'pending' for a retry (due at `run_at`, epoch seconds) or 'failed'."""

    id: int
    status: str
    run_at: float


class SnoozedJob(NamedTuple):
    """A snooze written: the job is pending again, due at `run_at` (epoch seconds)."""

    id: int
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


class JobState(NamedTuple):
    """What Queue.result() reads: the status, the stored result (parsed JSON) and the last error."""

    status: str
    result: Any
    error: str | None


class EnqueuedJob(NamedTuple):
    """A job as Queue.enqueued() lists it."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    status: str
    attempts: int
    run_at: datetime
    dedup_key: str | None
    debounce_key: str | None


class DrainedJob(NamedTuple):
    """A job a drain ran, as it is afterwards: `status` completed, failed, or pending (a retry or a snooze due
    later), with the stored result or the last error."""

    id: int
    task: str
    args: dict[str, Any]
    status: str
    attempts: int
    result: Any
    error: str | None


class StatusCount(NamedTuple):
    queue: str
    status: str
    jobs: int


class OldestRunnable(NamedTuple):
    queue: str
    age_seconds: float


class BackendPid(NamedTuple):
    pid: int


class SchemaRevision(NamedTuple):
    version_num: str


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


class LimitName(NamedTuple):
    name: str


class Woken(NamedTuple):
    """Held jobs of one queue sent back to pending (and the queue's workers notified)."""

    queue: str
    woken: int
    notified: str


class QueuePaused(NamedTuple):
    name: str
    paused: bool
    notified: str | None


class Known(NamedTuple):
    known: bool


class QueueListing(NamedTuple):
    name: str
    paused: bool
    concurrency: int | None  # the queue's concurrency limit, None when it has none
    jobs: str  # JSON object: status -> count
    rate: str | None  # the queue's rate limit as written ("100/m"), None when it has none


class LimitListing(NamedTuple):
    name: str
    scope: str
    target: str
    concurrency: int | None
    key_arg: str | None
    running: int
    held: int
    rate: str | None  # "10/s"
    rate_key_arg: str | None
    deferred: int  # pending jobs waiting for a start of the rate's window


class LimitSettings(NamedTuple):
    concurrency: int | None
    key_arg: str | None
    rate: int | None
    rate_seconds: float | None
    rate_key_arg: str | None


class OrderId(NamedTuple):
    id: int


class Count(NamedTuple):
    count: int


class JobListing(NamedTuple):
    """A row of `pgqueue jobs`: texts clipped by the statement (`args_length` is the args' full length)."""

    id: int
    queue: str
    task: str
    status: str
    attempts: int
    max_attempts: int
    priority: int
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    args: str
    args_length: int
    error: str | None
    meta: str | None
    meta_length: int | None


class JobDetail(NamedTuple):
    """One job for `pgqueue show`: texts clipped by the statement, with the full lengths of the long ones."""

    id: int
    queue: str
    task: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    now: datetime
    worker_id: str | None
    dedup_key: str | None
    schedule: str | None
    args: str
    args_length: int
    result: str | None
    result_length: int | None
    error: str | None
    error_length: int | None
    error_count: int
    meta: str | None
    meta_length: int | None


class ErrorEntry(NamedTuple):
    """One entry of a job's error history; `kind` is its JSON type, `raw` its text when it is not an object."""

    ordinal: int
    kind: str
    attempt: str | None
    started_at: str | None
    at: str | None
    error: str | None
    traceback: str | None
    worker: str | None
    counted: str | None
    raw: str | None


class Parent(NamedTuple):
    """A job's parent (workflows): its outcome so far, and its result as JSON text when it completed with one.
    `resolved` is true once it has finished as far as the dependent is concerned."""

    id: int
    task: str
    status: str
    result_json: str | None
    error: str | None
    resolved: bool

    @property
    def result(self) -> Any:
        """The parent's stored result (None when it returned none or has not completed)."""
        return None if self.result_json is None else json.loads(self.result_json)


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
