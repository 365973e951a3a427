"""What a job's meta and its index (jobs_meta_idx, migration 0011) cost writers, and what they buy readers. Prints
a table; never run as a test.

    .venv/bin/python benchmarks/meta.py [--dsn postgresql://postgres@127.0.0.1/postgres] [--jobs 2000] [--rounds 3]

In a fresh database: single enqueues (each its own transaction, through Queue.enqueue) without meta, with meta, and
with meta but the index dropped, in alternating rounds; then status updates of jobs with meta (a job's status
changes are not HOT updates, so each one adds an index entry) with and without the index; then "all jobs of
order 42" among 1,000,000 jobs with and without the index.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgqueue import Queue
from pgqueue.store import migrate

DATABASE = "pgqueue_bench_meta"
META_INDEX = "CREATE INDEX jobs_meta_idx ON pgqueue.jobs USING gin (meta jsonb_path_ops) WHERE meta IS NOT NULL"


def enqueue_rate(queue: Queue, jobs: int, with_meta: bool) -> float:
    started = time.perf_counter()
    for n in range(jobs):
        meta = {"order_id": n, "tenant": "acme"} if with_meta else None
        queue.enqueue("invoice", {"order_id": n, "lines": [1, 2, 3]}, meta=meta)
    return jobs / (time.perf_counter() - started)


def update_rate(conn: psycopg.Connection, jobs: int) -> float:
    """Claim-like then complete-like updates of `jobs` pending jobs with meta, 100 per statement."""
    conn.execute(
        "INSERT INTO pgqueue.jobs (task, args, meta) SELECT 'invoice', '{}', jsonb_build_object('order_id', g) "
        "FROM generate_series(1, %s) g",
        (jobs,),
    )
    ids = [row[0] for row in conn.execute("SELECT id FROM pgqueue.jobs WHERE status = 'pending' ORDER BY id")]
    started = time.perf_counter()
    for first in range(0, len(ids), 100):
        batch = ids[first : first + 100]
        conn.execute("UPDATE pgqueue.jobs SET status = 'running', attempts = 1 WHERE id = ANY(%s)", (batch,))
        conn.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now() WHERE id = ANY(%s)", (batch,))
    elapsed = time.perf_counter() - started
    conn.execute("DELETE FROM pgqueue.jobs")
    return 2 * len(ids) / elapsed


def lookup_ms(conn: psycopg.Connection, runs: int = 20) -> float:
    times = []
    for n in range(runs):
        started = time.perf_counter()
        conn.execute(
            "SELECT id FROM pgqueue.jobs WHERE meta @> %s::jsonb", (f'{{"order_id": {4_000 + n}}}',)
        ).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with psycopg.connect(options.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    dsn = make_conninfo(options.dsn, dbname=DATABASE)
    try:
        migrate.upgrade(dsn)
        queue = Queue(dsn)

        @queue.task
        def invoice(order_id: int, lines: list[int]) -> None: ...

        rates: dict[str, list[float]] = {"no meta (index present)": [], "meta, index": [], "meta, no index": []}
        updates: dict[str, list[float]] = {"index": [], "no index": []}
        with psycopg.connect(dsn, autocommit=True) as conn:
            enqueue_rate(queue, 200, True)  # warm the pool and the caches
            for _ in range(options.rounds):
                for name, with_meta, indexed in (
                    ("no meta (index present)", False, True),
                    ("meta, index", True, True),
                    ("meta, no index", True, False),
                ):
                    conn.execute("DROP INDEX IF EXISTS pgqueue.jobs_meta_idx")
                    if indexed:
                        conn.execute(META_INDEX)
                    rates[name].append(enqueue_rate(queue, options.jobs, with_meta))
                    conn.execute("DELETE FROM pgqueue.jobs")
                    conn.execute("VACUUM pgqueue.jobs")
                for name, indexed in (("index", True), ("no index", False)):
                    conn.execute("DROP INDEX IF EXISTS pgqueue.jobs_meta_idx")
                    if indexed:
                        conn.execute(META_INDEX)
                    updates[name].append(update_rate(conn, options.jobs * 5))
                    conn.execute("VACUUM pgqueue.jobs")
            queue.close()

            conn.execute("DROP INDEX IF EXISTS pgqueue.jobs_meta_idx")
            conn.execute(
                "INSERT INTO pgqueue.jobs (task, args, meta, status, finished_at) "
                "SELECT 'invoice', jsonb_build_object('n', g), "
                "CASE WHEN g % 10 = 0 THEN jsonb_build_object('order_id', g / 10) END, 'completed', now() "
                "FROM generate_series(1, 1000000) g"
            )
            conn.execute("ANALYZE pgqueue.jobs")
            without = lookup_ms(conn)
            started = time.perf_counter()
            conn.execute(META_INDEX)
            build = time.perf_counter() - started
            conn.execute("ANALYZE pgqueue.jobs")
            with_index = lookup_ms(conn)
            size = conn.execute("SELECT pg_size_pretty(pg_relation_size('pgqueue.jobs_meta_idx'))").fetchone()
    finally:
        with psycopg.connect(options.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")

    print(f"single enqueues, {options.jobs} per round, {options.rounds} rounds (median jobs/s):")
    for name, values in rates.items():
        print(f"  {name:<26} {statistics.median(values):>8.0f}   rounds: {', '.join(f'{v:.0f}' for v in values)}")
    print(f"status updates of jobs with meta, {options.jobs * 5} jobs x 2 updates, 100 per statement (median rows/s):")
    for name, values in updates.items():
        print(f"  {name:<26} {statistics.median(values):>8.0f}   rounds: {', '.join(f'{v:.0f}' for v in values)}")
    print("jobs of one order among 1,000,000 jobs (100,000 with meta), median of 20 lookups:")
    print(f"  without jobs_meta_idx      {without:>8.2f} ms")
    print(f"  with jobs_meta_idx         {with_index:>8.2f} ms   (built in {build:.1f} s, {size[0] if size else '?'})")


if __name__ == "__main__":
    main()
