"""The jobs table stays cheap to claim from: autovacuum cleans up after claimed jobs even when the table is big.

Runs on the suite's private server because it shortens autovacuum's nap (a server setting) for its duration.
"""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg

from pgqueue import JobSpec, Queue
from pgqueue.worker import Worker, WorkerSettings
from tests.apps.jobs_app import queue as app_queue
from tests.faults.harness import FaultDatabase, scalar, statuses, wait_until

CLAIM_SCAN = (
    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM pgqueue.jobs WHERE status = 'pending' AND run_at <= now() "
    "ORDER BY priority DESC, run_at, id LIMIT 64 FOR UPDATE SKIP LOCKED"
)


def claim_scan_pages(db: psycopg.Connection) -> int:
    """Index pages an empty claim reads: it steps over every dead entry left by claimed jobs."""
    plan = "\n".join(row[0] for row in db.execute(CLAIM_SCAN))
    scan = plan[plan.index("Index Scan using jobs_claim_idx") :]
    return int(re.search(r"shared hit=(\d+)", scan).group(1))


def vacuums(db: psycopg.Connection) -> int:
    return scalar(db, "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass")


def test_autovacuum_cleans_up_after_claimed_jobs_in_a_big_table(
    fault_db: FaultDatabase, db: psycopg.Connection, figures: dict[str, Any]
) -> None:
    kept, processed = 1_000_000, 20_000
    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, attempts, started_at, finished_at) "
        "SELECT 'noop', 'completed', 1, now(), now() FROM generate_series(1, %s)",
        (kept,),
    )
    db.execute("VACUUM ANALYZE pgqueue.jobs")
    queue = Queue(fault_db.dsn)
    queue.tasks = app_queue.tasks
    try:
        queue.enqueue_many([JobSpec("noop", {"n": n}) for n in range(processed)])
        Worker(queue, WorkerSettings(burst=True, concurrency=16)).run()
    finally:
        queue.close()
    assert statuses(db).get("completed") == kept + processed

    before, vacuumed = claim_scan_pages(db), vacuums(db)
    dead = scalar(db, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass")
    rows = scalar(db, "SELECT reltuples FROM pg_class WHERE oid = 'pgqueue.jobs'::regclass")
    assert dead < 50 + 0.2 * rows  # PostgreSQL's default rule would not vacuum yet: this test needs the table's own
    db.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
    db.execute("SELECT pg_reload_conf()")
    started = time.monotonic()
    try:
        wait_until(lambda: vacuums(db) > vacuumed, timeout=60, what="autovacuum of pgqueue.jobs")
    finally:
        db.execute("ALTER SYSTEM RESET autovacuum_naptime")
        db.execute("SELECT pg_reload_conf()")
    waited = time.monotonic() - started
    after = claim_scan_pages(db)
    assert before > 20 and after <= 2, (before, after)
    figures.update(
        enqueued=processed,
        completed=processed,
        lost=0,
        **{"ran twice": 0},
        **{"recovery s": f"{waited:.1f}"},
        notes=f"{kept:,} finished jobs kept, {processed:,} processed ({dead:,} dead rows): autovacuum came at its "
        f"next round (nap 1 s); an empty claim read {before} index pages before it, {after} after",
    )
