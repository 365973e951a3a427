"""Queue control on a sync connection: concurrency and rate limits set at run time, pause and resume, the listing
of queues. Each call is one short transaction. The limits themselves are decided inside the claim (queries.sql)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

from pgqueue.store import statements
from pgqueue.store.rows import LimitListing
from pgqueue.store.run import fetch

UNCHANGED: Any = object()  # a setting the call leaves as it is


@dataclass(frozen=True)
class QueueInfo:
    name: str
    paused: bool
    concurrency: int | None  # the queue's limit, None when it has none
    jobs: dict[str, int]  # status -> count
    rate: str | None = None  # the queue's rate limit ("100/m"), None when it has none

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "paused": self.paused,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "jobs": self.jobs,
        }


def queue_known(conn: psycopg.Connection[Any], queue_name: str) -> bool:
    return bool(fetch(conn, statements.queue_known(queue_name))[0].known)


def set_paused(conn: psycopg.Connection[Any], queue_name: str, paused: bool) -> None:
    """Pause (no claims from the next one on; running jobs finish) or resume (its workers are woken at once)."""
    with conn.transaction():
        fetch(conn, statements.set_queue_paused(queue_name, paused))


def set_queue_limit(
    conn: psycopg.Connection[Any],
    queue_name: str,
    concurrency: int | None = UNCHANGED,
    rate: tuple[int, timedelta] | None = UNCHANGED,
) -> int:
    """Set (None: remove) a queue's concurrency limit and/or its rate limit (starts, period); what is not given
    stays as it is.
    Held jobs the new limit may let run are woken, and jobs waiting for the rate are due again now: the claim
    decides on them anew. Returns how many held jobs were woken."""
    name = f"queue:{queue_name}"
    with conn.transaction():
        found = fetch(conn, statements.limit_for_update(name))
        current = found[0] if found else None
        if concurrency is UNCHANGED:
            concurrency = current.concurrency if current else None
        if rate is UNCHANGED:
            rate_count = current.rate if current else None
            rate_period = timedelta(seconds=current.rate_seconds) if current and current.rate_seconds else None
        else:
            rate_count, rate_period = rate if rate else (None, None)
        if concurrency is None and rate_count is None:
            fetch(conn, statements.remove_limit(name))
        else:
            fetch(
                conn,
                statements.set_limit(
                    name=name,
                    scope="queue",
                    target=queue_name,
                    concurrency=concurrency,
                    key_arg=None,
                    rate=rate_count,
                    rate_period=rate_period,
                ),
            )
        # Held jobs of this limit go back for the claim to decide on again; all of them when it has no slots.
        woken = fetch(conn, statements.wake_held(names=[name], per_key=concurrency))
        fetch(conn, statements.release_deferred([name]))
    return sum(int(row.woken) for row in woken)


def list_queues(conn: psycopg.Connection[Any]) -> list[QueueInfo]:
    return [
        QueueInfo(
            row.name,
            bool(row.paused),
            row.concurrency,
            {k: int(v) for k, v in json.loads(row.jobs).items()},
            row.rate,
        )
        for row in fetch(conn, statements.list_queues())
    ]


def list_limits(conn: psycopg.Connection[Any]) -> list[LimitListing]:
    return fetch(conn, statements.list_limits())
