"""Enqueue and work through PgBouncer in transaction pooling mode, with and without a direct LISTEN connection."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import JobSpec, Queue
from tests.apps.jobs_app import queue as app_queue
from tests.faults.harness import (
    PGQUEUE,
    ROOT,
    FaultDatabase,
    PgBouncer,
    PrivateServer,
    Workers,
    runs_per_job,
    scalar,
    statuses,
    wait_until,
)

PGBOUNCER = shutil.which("pgbouncer") or next(
    (path for path in ("/usr/sbin/pgbouncer", "/usr/local/bin/pgbouncer") if Path(path).exists()), None
)


@pytest.fixture
def bouncer(pg_server: PrivateServer) -> Iterator[PgBouncer]:
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    running = PgBouncer(PGBOUNCER, pg_server.port)
    try:
        yield running
    finally:
        running.close()


def listen_backends(db: psycopg.Connection) -> int:
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'pgqueue listen'"
    )
    return int(scalar(db, query))


def enqueue_through(dsn: str, first: int, count: int) -> list[int]:
    """Through the API (one job per call, then a batch), as a web app behind PgBouncer would."""
    queue = Queue(dsn)
    queue.tasks = app_queue.tasks
    try:
        ids = [queue.enqueue("fault_record", {"n": n}) for n in range(first, first + count // 2)]
        batch = [JobSpec("fault_record", {"n": n}) for n in range(first + count // 2, first + count)]
        return ids + queue.enqueue_many(batch)
    finally:
        queue.close()


def cli_enqueue(dsn: str, n: int) -> int:
    command = [PGQUEUE, "enqueue", "fault_record", "--args", f'{{"n": {n}}}', "--app", "tests.apps.jobs_app"]
    done = subprocess.run([*command, "--dsn", dsn], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_pgbouncer_with_direct_listen(
    fault_db: FaultDatabase, db: psycopg.Connection, bouncer: PgBouncer, workers: Workers, figures: dict[str, Any]
) -> None:
    pooled = bouncer.dsn(fault_db.name)
    # A 60 s poll: jobs enqueued after start-up can only be picked up this soon because NOTIFY arrived.
    options = ("--listen-dsn", fault_db.dsn, "--poll-interval", "60", "--concurrency", "4")
    pool = workers.start_many(2, pooled, *options)
    wait_until(lambda: listen_backends(db) == 2, what="LISTEN on the direct connection")

    ids = [*enqueue_through(pooled, 0, 60), cli_enqueue(pooled, 60)]
    wait_until(lambda: statuses(db).get("completed") == len(ids), timeout=30, what="jobs woken by NOTIFY")

    runs = runs_per_job(db)
    assert set(runs) == set(ids) and max(runs.values()) == 1
    for worker in pool:
        log = worker.output()
        assert "connection pooler detected: prepared statements off" in log
        assert "LISTEN cannot work through a connection pooler" not in log
        assert "Traceback" not in log and "prepared statement" not in log.replace("prepared statements off", "")
    figures.update(
        enqueued=len(ids),
        completed=statuses(db)["completed"],
        lost=len(ids) - len(runs),
        **{"ran twice": 0},
        **{"recovery s": "-"},
        notes="PgBouncer 1.x transaction pooling for claims, acks and enqueues; LISTEN over --listen-dsn (direct)",
    )


def test_pgbouncer_without_direct_connection_polls(
    fault_db: FaultDatabase, db: psycopg.Connection, bouncer: PgBouncer, workers: Workers, figures: dict[str, Any]
) -> None:
    pooled = bouncer.dsn(fault_db.name)
    pool = workers.start_many(2, pooled, "--poll-interval", "0.5", "--concurrency", "4")
    for worker in pool:
        wait_until(lambda worker=worker: "LISTEN cannot work through a connection pooler" in worker.output())

    ids = enqueue_through(pooled, 0, 60)
    wait_until(lambda: statuses(db).get("completed") == len(ids), timeout=60, what="jobs found by polling")

    runs = runs_per_job(db)
    assert set(runs) == set(ids) and max(runs.values()) == 1
    # No LISTEN was run: it would stay behind on whichever server connection PgBouncer lent.
    assert not scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%'")
    assert all(worker.alive() and "Traceback" not in worker.output() for worker in pool)
    figures.update(
        enqueued=len(ids),
        completed=statuses(db)["completed"],
        lost=len(ids) - len(runs),
        **{"ran twice": 0},
        **{"recovery s": "-"},
        notes="PgBouncer transaction pooling, no direct connection: the pooler is detected, workers poll (0.5 s)",
    )
