"""Queue control on a sync connection: concurrency limits set at run time, pause and resume, the listing of
queues. Each call is one short transaction. The limits themselves are decided inside the claim (queries.sql)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue.store import statements
from pgqueue.store.rows import LimitListing
from pgqueue.store.run import fetch


@dataclass(frozen=True)
class QueueInfo:
    name: str
    paused: bool
    concurrency: int | None  # the queue's limit, None when it has none
    jobs: dict[str, int]  # status -> count

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "paused": self.paused, "concurrency": self.concurrency, "jobs": self.jobs}


def queue_known(conn: psycopg.Connection[Any], queue_name: str) -> bool:
    return bool(fetch(conn, statements.queue_known(queue_name))[0].known)


def set_paused(conn: psycopg.Connection[Any], queue_name: str, paused: bool) -> None:
    """Pause (no claims from the next one on; running jobs finish) or resume (its workers are woken at once)."""
    with conn.transaction():
        fetch(conn, statements.set_queue_paused(queue_name, paused))


def set_queue_limit(conn: psycopg.Connection[Any], queue_name: str, concurrency: int | None) -> int:
    """Set (None: remove) a queue's concurrency limit; held jobs it may now let run are woken. Returns how many."""
    name = f"queue:{queue_name}"
    with conn.transaction():
        if concurrency is None:
            fetch(conn, statements.remove_limit(name))
        else:
            fetch(
                conn,
                statements.set_limit(
                    name=name, scope="queue", target=queue_name, concurrency=concurrency, key_arg=None
                ),
            )
        # Held jobs of this limit go back for the claim to decide on again; none at all when the limit is gone.
        woken = fetch(conn, statements.wake_held(names=[name], per_key=concurrency))
    return sum(int(row.woken) for row in woken)


def list_queues(conn: psycopg.Connection[Any]) -> list[QueueInfo]:
    return [
        QueueInfo(row.name, bool(row.paused), row.concurrency, {k: int(v) for k, v in json.loads(row.jobs).items()})
        for row in fetch(conn, statements.list_queues())
    ]


def list_limits(conn: psycopg.Connection[Any]) -> list[LimitListing]:
    return fetch(conn, statements.list_limits())
