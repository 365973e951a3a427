"""Operator actions on jobs: retry failed ones, cancel, prune, report status, list and show jobs. Each action is
one short transaction, or (bulk cancel, prune) a series of short ones over bounded batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

from pgqueue.store import statements
from pgqueue.store.rows import ErrorEntry, JobDetail, JobListing, StatusCount
from pgqueue.store.run import count, fetch, first
from pgqueue.store.statements import JobFilters


@dataclass(frozen=True)
class QueueStatus:
    counts: list[StatusCount]  # (queue, status, jobs)
    oldest_runnable: dict[str, float]  # queue name -> age in seconds of its oldest runnable job
    all_history: bool = False  # the completed and cancelled counts cover every age, not the last hour

    def as_dict(self) -> dict[str, Any]:
        queues: dict[str, dict[str, Any]] = {}
        for queue_name, status, jobs in self.counts:
            queues.setdefault(queue_name, {"jobs": {}, "oldest_runnable_seconds": None})["jobs"][status] = jobs
        for queue_name, age in self.oldest_runnable.items():
            entry = queues.setdefault(queue_name, {"jobs": {}, "oldest_runnable_seconds": None})
            entry["oldest_runnable_seconds"] = age
        return {"queues": queues, "finished_counted": "all" if self.all_history else "last hour"}


# Job ids are bigint: a number outside that range names no job.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def _job_ids(ids: Sequence[int] | None) -> list[int] | None:
    """None (no filter) stays None; ids that cannot exist are dropped, so they match nothing."""
    return None if ids is None else [i for i in ids if BIGINT_MIN <= i <= BIGINT_MAX]


@dataclass(frozen=True)
class RetryRefusal:
    """A failed job that stays failed: its dedup key is held by another job (one pending or running per key)."""

    job_id: int
    dedup_key: str
    holder_id: int
    # 'pending' or 'running'; 'failed' for a failed job with the same key that goes back in its place.
    holder_status: str

    @property
    def reason(self) -> str:
        if self.holder_status == "failed":
            return (
                f"job {self.job_id}: dedup key {self.dedup_key!r} is shared with failed job {self.holder_id}, "
                "the newest, which goes back instead"
            )
        return f"job {self.job_id}: dedup key {self.dedup_key!r} is held by {self.holder_status} job {self.holder_id}"


@dataclass(frozen=True)
class RetryResult:
    """What retry_failed did (or, with dry_run, would do): the ids sent back and the jobs that stay failed."""

    retried: list[int]
    refused: list[RetryRefusal]
    dry_run: bool = False

    @property
    def complete(self) -> bool:
        """True when every matching failed job went back."""
        return not self.refused


# A pending or running job committed with a dedup key between the statement's snapshot and its update makes
# the update violate the unique index; run again, the statement sees that job and leaves the failed one alone.
_RETRY_ATTEMPTS = 3


def retry_failed(
    conn: psycopg.Connection[Any],
    *,
    task: str | None = None,
    queue: str | None = None,
    ids: Sequence[int] | None = None,
    dry_run: bool = False,
    since: timedelta | None = None,
    args: str | None = None,
    meta: str | None = None,
) -> RetryResult:
    """Failed jobs back to pending (attempts reset, error history kept), but for those whose dedup key is held.

    One statement decides and updates; nothing changes with dry_run. Returns the ids retried and the refusals.
    """
    query = statements.retry_failed(
        task=task, queue_name=queue, ids=_job_ids(ids), dry_run=dry_run, since=since, args=args, meta=meta
    )
    for attempt in range(1, _RETRY_ATTEMPTS + 1):
        try:
            with conn.transaction():
                candidates = fetch(conn, query)
                for queue_name in sorted({c.queue for c in candidates if c.retried}):
                    count(conn, statements.notify_queue(queue_name))
            break
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != "jobs_dedup_key_idx" or attempt == _RETRY_ATTEMPTS:
                raise
    # Dry run: what the update would take; otherwise what it took (the same rows: they are locked).
    retried = [int(c.id) for c in candidates if (c.holder_id is None if dry_run else c.retried)]
    refused = [
        RetryRefusal(int(c.id), str(c.dedup_key), int(c.holder_id), str(c.holder_status))
        for c in candidates
        if c.holder_id is not None
    ]
    return RetryResult(retried=retried, refused=refused, dry_run=dry_run)


def cancel(conn: psycopg.Connection[Any], ids: Sequence[int]) -> list[int]:
    """Cancel pending or running jobs; returns the ids that were cancelled."""
    with conn.transaction():
        cancelled = fetch(conn, statements.cancel_jobs(_job_ids(ids) or []))
    return sorted(int(c.id) for c in cancelled)


def status(conn: psycopg.Connection[Any], *, all_history: bool = False) -> QueueStatus:
    """Jobs per queue and status (completed and cancelled: of the last hour, unless `all_history`)."""
    found = fetch(conn, statements.queue_status(all_history=all_history))
    counts = [StatusCount(q, s, int(n)) for q, s, n in found]
    oldest = {q: float(age) for q, age in fetch(conn, statements.oldest_runnable())}
    return QueueStatus(counts=counts, oldest_runnable=oldest, all_history=all_history)


# -- listing and showing jobs ---------------------------------------------------------------------------------


def list_jobs(
    conn: psycopg.Connection[Any], filters: JobFilters, *, status: str | None, limit: int, args_clip: int = 200
) -> list[JobListing]:
    """The newest `limit` jobs matching the filters (and `status`), args clipped to `args_clip` characters."""
    return fetch(conn, statements.list_jobs(filters, status=status, limit=limit, args_clip=args_clip))


@dataclass(frozen=True)
class JobReport:
    """One job and the newest entries of its error history (oldest first); `errors_shown` < `job.error_count`
    when older entries were left out."""

    job: JobDetail
    errors: list[ErrorEntry]

    @property
    def errors_left_out(self) -> int:
        return max(0, self.job.error_count - len(self.errors))


def show_job(conn: psycopg.Connection[Any], job_id: int, *, clip: int, errors_limit: int) -> JobReport | None:
    """Job `job_id` (None when there is none), each text clipped to `clip` characters, its newest
    `errors_limit` error entries. Both reads in one transaction, so they see the same row."""
    if not BIGINT_MIN <= job_id <= BIGINT_MAX:
        return None
    with conn.transaction():
        count(conn, statements.read_only_snapshot())
        job = first(conn, statements.job_detail(job_id, clip=clip))
        if job is None:
            return None
        errors = fetch(conn, statements.job_errors(job_id, clip=clip, limit=errors_limit))
    return JobReport(job=job, errors=errors)


# -- bulk actions by filter -----------------------------------------------------------------------------------

BULK_BATCH = 1_000  # jobs per statement of a bulk action: each one a short transaction, its locks brief


def cancel_matching(
    conn: psycopg.Connection[Any],
    filters: JobFilters,
    *,
    statuses: Sequence[str] = ("pending", "running"),
    batch: int = BULK_BATCH,
) -> list[int]:
    """Cancel the pending and running jobs that match, a batch at a time; returns the ids cancelled. Only jobs
    that existed when it started: one enqueued meanwhile is left alone."""
    max_id = first(conn, statements.max_job_id()) or 0
    cancelled: list[int] = []
    for status in statuses:
        after: int | None = None
        while True:
            ids = fetch(
                conn, statements.matching_ids(filters, status=status, max_id=max_id, after_id=after, limit=batch)
            )
            if not ids:
                break
            cancelled += cancel(conn, ids)
            after = ids[-1]
    return sorted(cancelled)


PRUNABLE_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class PrunePlan:
    """What `prune` would delete: per status, the jobs finished more than `older_than` ago, up to `max_id`."""

    filters: JobFilters
    older_than: timedelta
    max_id: int
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def plan_prune(
    conn: psycopg.Connection[Any], filters: JobFilters, *, statuses: Sequence[str], older_than: timedelta
) -> PrunePlan:
    for status in statuses:
        if status not in PRUNABLE_STATUSES:
            raise ValueError(f"only finished jobs are pruned ({', '.join(PRUNABLE_STATUSES)}), not {status!r}")
    max_id = first(conn, statements.max_job_id()) or 0
    counts: dict[str, int] = {}
    for status in statuses:
        found = first(conn, statements.count_prunable(filters, status=status, older_than=older_than, max_id=max_id))
        counts[status] = int(found.count) if found else 0
    return PrunePlan(filters=filters, older_than=older_than, max_id=max_id, counts=counts)


def prune(
    conn: psycopg.Connection[Any],
    plan: PrunePlan,
    *,
    batch: int = BULK_BATCH,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Delete what `plan` covers, a batch per transaction (`conn` in autocommit); `progress` gets each batch's
    count. Returns the jobs deleted per status (fewer than planned when some were retried or locked meanwhile;
    a row locked right now is skipped, never waited for)."""
    deleted: dict[str, int] = {}
    for status, planned in plan.counts.items():
        deleted[status] = 0
        while planned:
            command = statements.prune_batch(
                plan.filters, status=status, older_than=plan.older_than, max_id=plan.max_id, batch=batch
            )
            gone = count(conn, command)
            if gone <= 0:
                break
            deleted[status] += gone
            if progress is not None:
                progress(gone)
    return deleted
