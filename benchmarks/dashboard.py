"""Dashboard page times at scale, and what its args index costs writers. Prints a table; never run as a test.

    .venv/bin/python benchmarks/dashboard.py [--dsn postgresql://postgres@127.0.0.1/postgres] [--runs 20]

Loads a fresh database with 1,000,000 finished jobs (a week of history, 60,000 of them in the last hour: busier than
the overview reads, so its bound is exercised) and 10,000 pending ones, plus running jobs, workers and schedules;
then times each page's server time (the Server-Timing header the dashboard sends: from the request's arrival to
the response's start) over real HTTP. Then the GIN index on args (migration 0006): single-enqueue rate and a
claim-and-complete drain, with and without it, in alternating rounds; and the args-filter page without it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgqueue.dashboard import create_app
from pgqueue.store import migrate
from pgqueue.store.queries import QUERIES
from tests.integration.dashboard_support import failed_errors, live_server, register_worker

DATABASE = "pgqueue_bench_dashboard"
ARGS_INDEX = "CREATE INDEX jobs_args_idx ON pgqueue.jobs USING gin (args jsonb_path_ops)"


def load(conn: psycopg.Connection) -> None:
    started = time.perf_counter()
    queues = "(ARRAY['emails','default','webhooks','reports'])[1 + g % 4]"
    tasks = "(ARRAY['send_email','generate_invoice','deliver_webhook','build_report'])[1 + g % 4]"
    conn.execute(
        f"""
        INSERT INTO pgqueue.jobs (queue, task, args, status, attempts, created_at, run_at, started_at, finished_at,
                                  error)
        SELECT {queues}, {tasks}, jsonb_build_object('order_id', g, 'customer', 'c-' || (g % 5000)),
               CASE WHEN g % 100 = 0 THEN 'failed' WHEN g % 50 = 1 THEN 'cancelled' ELSE 'completed' END,
               1, t - interval '2 seconds', t - interval '2 seconds', t - interval '1 second', t,
               CASE WHEN g % 100 = 0 THEN 'ConnectionError: upstream timed out' END
        FROM generate_series(1, 1000000) AS g
        CROSS JOIN LATERAL (
            SELECT CASE WHEN g > 940000 THEN now() - make_interval(secs => (1000000 - g) * 0.058)
                        ELSE now() - interval '1 hour' - make_interval(secs => (940000 - g) * 0.64) END AS t
        ) AS times
        """
    )
    conn.execute(
        "UPDATE pgqueue.jobs SET errors = %s::jsonb WHERE status = 'failed' AND id %% 1000 = 0",
        (json.dumps(failed_errors(3, "upstream timed out")),),
    )
    conn.execute(
        f"INSERT INTO pgqueue.jobs (queue, task, args, run_at) "
        f"SELECT {queues}, {tasks}, jsonb_build_object('order_id', 2000000 + g), "
        "now() + CASE WHEN g % 10 = 0 THEN interval '1 hour' ELSE -make_interval(secs => g % 600) END "
        "FROM generate_series(1, 10000) AS g"
    )
    conn.execute(
        f"INSERT INTO pgqueue.jobs (queue, task, args, status, attempts, started_at, worker_id, lease_expires_at) "
        f"SELECT {queues}, {tasks}, jsonb_build_object('order_id', 3000000 + g), 'running', 1, now(), "
        "'bench-' || (g % 4), now() + interval '30 seconds' FROM generate_series(1, 64) AS g"
    )
    for n in range(4):
        register_worker(conn, f"bench-{n}", host=f"app-{n}", pid=1000 + n, running=16)
    conn.execute(
        "INSERT INTO pgqueue.schedules (name, cron, task, queue, next_fire_at, last_fire_at) "
        "SELECT 'schedule_' || g, '*/5 * * * *', 'build_report', 'reports', now() + interval '5 minutes', now() "
        "FROM generate_series(1, 20) AS g"
    )
    conn.execute(
        "INSERT INTO pgqueue.schedule_fires (schedule, fire_at, job_id, skipped_reason) "
        "SELECT 'schedule_' || s, now() - make_interval(mins => 5 * f), CASE WHEN f % 3 = 0 THEN NULL ELSE f END, "
        "CASE WHEN f % 3 = 0 THEN 'previous job still running' END "
        "FROM generate_series(1, 20) AS s, generate_series(1, 500) AS f"
    )
    conn.execute("VACUUM ANALYZE")
    print(f"loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def page_times(base: str, pages: list[tuple[str, str]], runs: int) -> list[tuple[str, str, float, float]]:
    rows = []
    with httpx.Client(base_url=base, timeout=60) as http:
        http.get("/")  # the pool's first connection
        for label, path in pages:
            times = []
            for _ in range(runs):
                response = http.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
                times.append(float(response.headers["server-timing"].split("dur=")[1]))
            times.sort()
            rows.append((label, path, statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]))
    return rows


def enqueue_rate(conn: psycopg.Connection, count: int) -> float:
    params = {
        "queue": "default", "task": "t", "priority": 0, "max_attempts": 5, "run_at": None, "delay": "0",
        "dedup_key": None, "schedule": None,
    }  # fmt: skip
    started = time.perf_counter()
    for n in range(count):
        conn.execute(QUERIES["insert_job"], params | {"args": json.dumps({"order_id": n, "customer": "c-7"})})
    return count / (time.perf_counter() - started)


def insert_rate_in_one_transaction(conn: psycopg.Connection, count: int) -> float:
    """The same INSERT, `count` of them in one transaction: the index work without the commit's flush, which
    dominates (and swings) the one-per-transaction rate on a small machine."""
    params = {
        "queue": "default", "task": "t", "priority": 0, "max_attempts": 5, "run_at": None, "delay": "0",
        "dedup_key": None, "schedule": None,
    }  # fmt: skip
    started = time.perf_counter()
    with conn.transaction():
        for n in range(count):
            conn.execute(QUERIES["insert_job"], params | {"args": json.dumps({"order_id": n, "customer": "c-7"})})
    return count / (time.perf_counter() - started)


def drain_rate(conn: psycopg.Connection, count: int, batch: int = 100) -> float:
    conn.execute(
        "INSERT INTO pgqueue.jobs (queue, task, args) SELECT 'drain', 't', jsonb_build_object('order_id', g) "
        "FROM generate_series(1, %s) AS g",
        (count,),
    )
    conn.execute("VACUUM ANALYZE pgqueue.jobs")
    done = 0
    started = time.perf_counter()
    while done < count:
        claimed = conn.execute(
            QUERIES["claim_from_queues"],
            {"limit": batch, "free": batch, "worker_id": "bench", "lease": "30 seconds", "queues": ["drain"]},
        ).fetchall()
        if not claimed:
            break
        conn.execute(
            QUERIES["record_outcomes"],
            {
                "started_ids": [],
                "started_attempts": [],
                "ids": [row[0] for row in claimed],
                "attempts": [row[4] for row in claimed],
                "results": [None] * len(claimed),
                "worker_id": "bench",
            },
        )
        done += len(claimed)
    rate = done / (time.perf_counter() - started)
    conn.execute("DELETE FROM pgqueue.jobs WHERE queue = 'drain'")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating rounds with and without the GIN index (0: page times only)"
    )
    options = parser.parse_args()
    with psycopg.connect(options.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    dsn = make_conninfo(options.dsn, dbname=DATABASE)
    migrate.upgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        load(conn)
        total, finished = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE finished_at IS NOT NULL) FROM pgqueue.jobs"
        ).fetchone()
        failed_id = conn.execute(
            "SELECT max(id) FROM pgqueue.jobs WHERE status = 'failed' AND errors <> '[]'"
        ).fetchone()[0]
        middle = conn.execute("SELECT id FROM pgqueue.jobs ORDER BY id OFFSET 500000 LIMIT 1").fetchone()[0]
    print(f"{total:,} jobs, {finished:,} finished, {total - finished:,} pending or running", file=sys.stderr)
    pages = [
        ("overview", "/"),
        ("overview fragment (the 5 s refresh)", "/fragment/overview"),
        ("jobs, newest", "/jobs"),
        ("jobs, a page 500,000 jobs deep", f"/jobs?cursor={middle}"),
        ("jobs, failed", "/jobs?status=failed"),
        ("jobs, pending by run_at", "/jobs?status=pending&sort=run_at"),
        ("jobs, one queue's completed", "/jobs?status=completed&queue=webhooks"),
        ("jobs, task filter", "/jobs?task=build_report"),
        ("jobs, args filter (GIN)", "/jobs?args=%7B%22order_id%22%3A+123456%7D"),
        ("jobs, args + last-hour time range", "/jobs?args=%7B%22customer%22%3A+%22c-42%22%7D&from=" + _hour_ago()),
        ("job", f"/jobs/{failed_id}"),
        ("schedules (20, 10 fires each)", "/schedules"),
        ("bulk retry: count failed matching", "/bulk?op=retry&queue=default"),
    ]
    with live_server(create_app(dsn)) as base:
        rows = page_times(base, pages, options.runs)

    with psycopg.connect(dsn, autocommit=True) as conn:
        rates: dict[bool, dict[str, list[float]]] = {
            True: {"enqueue": [], "insert": [], "drain": []},
            False: {"enqueue": [], "insert": [], "drain": []},
        }
        args_without: list[tuple[str, str, float, float]] = []
        for round_ in range(options.rounds):
            for with_gin in (True, False) if round_ % 2 == 0 else (False, True):
                conn.execute("DROP INDEX IF EXISTS pgqueue.jobs_args_idx")
                if with_gin:
                    conn.execute(ARGS_INDEX)
                conn.execute("CHECKPOINT")
                rates[with_gin]["enqueue"].append(enqueue_rate(conn, 3000))
                rates[with_gin]["insert"].append(insert_rate_in_one_transaction(conn, 10000))
                rates[with_gin]["drain"].append(drain_rate(conn, 20000))
                if not with_gin and not args_without:
                    conn.execute("ANALYZE pgqueue.jobs")
                    with live_server(create_app(dsn)) as base:
                        args_without = page_times(base, [pages[8]], 5)
        conn.execute("DROP INDEX IF EXISTS pgqueue.jobs_args_idx")
        conn.execute(ARGS_INDEX)

    print(f"\npage server time, {total:,} jobs ({finished:,} finished, 60,000 of them in the last hour), "
          f"median and p95 of {options.runs} requests")  # fmt: skip
    print("| page | median ms | p95 ms |\n|---|---|---|")
    for label, _path, median, p95 in rows:
        print(f"| {label} | {median:.1f} | {p95:.1f} |")
    for label, _path, median, p95 in args_without:
        print(f"| {label.replace('(GIN)', 'WITHOUT the GIN index')} | {median:.1f} | {p95:.1f} |")
    if not options.rounds:  # --rounds 0: the page times only
        return
    print(f"\nGIN index on args (jsonb_path_ops), median of {options.rounds} alternating rounds")
    print("| | with | without | with/without |\n|---|---|---|---|")
    for key, label in (("enqueue", "single enqueue, one per transaction (jobs/s)"),
                       ("insert", "single-row INSERTs, 10,000 in one transaction (rows/s)"),
                       ("drain", "claim 100 + complete, 20,000 jobs (jobs/s)")):  # fmt: skip
        with_, without = statistics.median(rates[True][key]), statistics.median(rates[False][key])
        print(f"| {label} | {with_:,.0f} | {without:,.0f} | {with_ / without:.2f} |")
    print("each round (with | without):")
    for key in ("enqueue", "insert", "drain"):
        print(f"  {key}: {[round(r) for r in rates[True][key]]} | {[round(r) for r in rates[False][key]]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        size = conn.execute("SELECT pg_size_pretty(pg_relation_size('pgqueue.jobs_args_idx'))").fetchone()[0]
        table = conn.execute("SELECT pg_size_pretty(pg_relation_size('pgqueue.jobs'))").fetchone()[0]
    print(f"\nGIN index size {size} (table {table})")


def _hour_ago() -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")


if __name__ == "__main__":
    main()
