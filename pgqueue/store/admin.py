"""Operator actions on jobs: retry failed ones, cancel, report status. Each is one short transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue.store import statements
from pgqueue.store.rows import StatusCount
from pgqueue.store.run import count, fetch


@dataclass(frozen=True)
class QueueStatus:
    counts: list[StatusCount]  # (queue, status, jobs)
    oldest_runnable: dict[str, float]  # queue name -> age in seconds of its oldest runnable job

    def as_dict(self) -> dict[str, Any]:
        queues: dict[str, dict[str, Any]] = {}
        for queue_name, status, jobs in self.counts:
            queues.setdefault(queue_name, {"jobs": {}, "oldest_runnable_seconds": None})["jobs"][status] = jobs
        for queue_name, age in self.oldest_runnable.items():
            entry = queues.setdefault(queue_name, {"jobs": {}, "oldest_runnable_seconds": None})
            entry["oldest_runnable_seconds"] = age
        return {"queues": queues}


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
) -> RetryResult:
    """Failed jobs back to pending (attempts reset, error history kept), but for those whose dedup key is held.

    One statement decides and updates; nothing changes with dry_run. Returns the ids retried and the refusals.
    """
    query = statements.retry_failed(task=task, queue_name=queue, ids=_job_ids(ids), dry_run=dry_run)
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


def status(conn: psycopg.Connection[Any]) -> QueueStatus:
    counts = [StatusCount(q, s, int(n)) for q, s, n in fetch(conn, statements.queue_status())]
    oldest = {q: float(age) for q, age in fetch(conn, statements.oldest_runnable())}
    return QueueStatus(counts=counts, oldest_runnable=oldest)
