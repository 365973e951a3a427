"""Operator actions on jobs: retry failed ones, cancel, report status. Each is one short transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue.sql import QUERIES


@dataclass(frozen=True)
class QueueStatus:
    counts: list[tuple[str, str, int]]  # (queue, status, jobs)
    oldest_runnable: dict[str, float]  # queue -> age in seconds of its oldest runnable job

    def as_dict(self) -> dict[str, Any]:
        queues: dict[str, dict[str, Any]] = {}
        for queue, status, jobs in self.counts:
            queues.setdefault(queue, {"jobs": {}, "oldest_runnable_seconds": None})["jobs"][status] = jobs
        for queue, age in self.oldest_runnable.items():
            queues.setdefault(queue, {"jobs": {}, "oldest_runnable_seconds": None})["oldest_runnable_seconds"] = age
        return {"queues": queues}


def _filters(task: str | None, queue: str | None, ids: Sequence[int] | None) -> dict[str, Any]:
    return {"task": task, "queue": queue, "ids": list(ids) if ids else None}


def retry_failed(
    conn: psycopg.Connection[Any],
    *,
    task: str | None = None,
    queue: str | None = None,
    ids: Sequence[int] | None = None,
    dry_run: bool = False,
) -> int:
    """Failed jobs back to pending (attempts reset, error history kept); returns how many."""
    params = _filters(task, queue, ids)
    if dry_run:
        row = conn.execute(QUERIES["count_failed"], params).fetchone()
        return int(row[0]) if row else 0
    with conn.transaction():
        rows = conn.execute(QUERIES["retry_failed"], params).fetchall()
        for retried_queue in sorted({queue_name for _id, queue_name in rows}):
            conn.execute(QUERIES["notify_queue"], {"queue": retried_queue})
    return len(rows)


def cancel(conn: psycopg.Connection[Any], ids: Sequence[int]) -> list[int]:
    """Cancel pending or running jobs; returns the ids that were cancelled."""
    with conn.transaction():
        rows = conn.execute(QUERIES["cancel_jobs"], {"ids": list(ids)}).fetchall()
    return sorted(int(row[0]) for row in rows)


def status(conn: psycopg.Connection[Any]) -> QueueStatus:
    counts = [(q, s, int(n)) for q, s, n in conn.execute(QUERIES["queue_status"]).fetchall()]
    oldest = {q: float(age) for q, age in conn.execute(QUERIES["oldest_runnable"]).fetchall()}
    return QueueStatus(counts=counts, oldest_runnable=oldest)
