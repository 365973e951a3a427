"""A history of millions: what a big jobs table costs the hot paths and the operator's views, and what a prune of
millions of rows costs pick-up while a worker runs. Prints a table; never run as a test.

    .venv/bin/python benchmarks/history.py [--dsn DSN] [--finished 10000000] [--drain 20000]

In one fresh database, the same measurements first on an empty table, then with `--finished` completed jobs kept
(loaded with the table's indexes dropped and rebuilt afterwards: the same end state as years of work, in minutes):

    worker start     `pgqueue work --burst` on an empty queue: launch to exit (Python's start-up included)
    status           `pgqueue status`: launch to exit
    overview, jobs   the dashboard's overview and jobs pages: server time (its Server-Timing header)
    drain            `--drain` no-op jobs through one `pgqueue work` process (concurrency 64): jobs/s
    idle pick-up     200 jobs enqueued 20-50 ms apart to an idle worker: p50 / p99 from the enqueue call

then the idle pick-up again while the worker itself prunes the finished rows (its `--retention` set to 1 s), with the
rate it deleted at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import load_records, percentile, wait_until  # noqa: E402
from recorder import RESULTS_DDL  # noqa: E402
from target_pgqueue import Pgqueue  # noqa: E402
from workers import Workers  # noqa: E402

from pgqueue.store import migrate  # noqa: E402

DATABASE = "pgqueue_bench_history"
LOG = HERE / "results" / "history-workers.log"
LOAD_CHUNK = 1_000_000


def load_finished(conn: psycopg.Connection[Any], count: int) -> float:
    """`count` completed jobs, indexes rebuilt after the load; the seconds it took."""
    started = time.perf_counter()
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'pgqueue' AND tablename = 'jobs' "
        "AND indexname <> 'jobs_pkey'"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX pgqueue."{name}"')
    for low in range(0, count, LOAD_CHUNK):
        high = min(count, low + LOAD_CHUNK)
        conn.execute(
            "INSERT INTO pgqueue.jobs (task, queue, args, status, attempts, created_at, run_at, started_at, "
            "finished_at) "
            "SELECT 'noop', (ARRAY['default','emails','webhooks'])[1 + g %% 3], "
            "jsonb_build_object('n', -g, 'order_id', g), 'completed', 1, t, t, t, t + interval '5 ms' "
            "FROM generate_series(%s::bigint, %s::bigint) AS g, "
            "LATERAL (SELECT now() - interval '30 days' + make_interval(secs => g * 0.25) AS t) AS times",
            (low + 1, high),
        )
        print(f"  loaded {high:,} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    for _, definition in indexes:
        conn.execute(definition)
    conn.execute("VACUUM ANALYZE pgqueue.jobs")
    conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def command_seconds(args: list[str], env: dict[str, str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, timeout=120, env=env, cwd=HERE.parent)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def page_ms(dsn: str, paths: list[str], runs: int = 10) -> list[float]:
    from pgqueue.dashboard import create_app
    from tests.integration.dashboard_support import live_server

    medians = []
    with live_server(create_app(dsn)) as base, httpx.Client(base_url=base, timeout=60) as http:
        http.get("/")
        for path in paths:
            times = []
            for _ in range(runs):
                response = http.get(path)
                response.raise_for_status()
                times.append(float(response.headers["server-timing"].split("dur=")[1]))
            medians.append(statistics.median(times))
    return medians


def _forget_our_jobs(conn: psycopg.Connection[Any]) -> None:
    """Remove the benchmark's own jobs (n >= 0) and records, so each measurement starts from the same table."""
    conn.execute("DELETE FROM pgqueue.jobs WHERE (args->>'n')::bigint >= 0")
    conn.execute("TRUNCATE bench_results")
    conn.execute("VACUUM ANALYZE pgqueue.jobs")


def drain_rate(target: Pgqueue, dsn: str, jobs: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        _forget_our_jobs(conn)

        async def enqueue() -> None:
            async with target.client(dsn) as client:
                await client.enqueue_many(range(jobs))

        asyncio.run(enqueue())
        with Workers(target, dsn, 1, 64, LOG) as workers:
            if not wait_until(lambda: not conn.execute(target.sql_remaining).fetchone()[0], 300, 0.02):
                raise RuntimeError("the drain did not finish in 300 s")
            finished = time.monotonic()
            workers.check_alive()
        records = load_records(conn)
        problem = records.exactly_once(jobs)
        if problem:
            raise RuntimeError(problem)
        assert records.first_start is not None
        return jobs / (finished - records.first_start)


def idle_pickup(target: Pgqueue, dsn: str, count: int = 200) -> tuple[float, float]:
    """p50 and p99 (ms) of an idle worker's pick-up, from the enqueue call to the handler."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _forget_our_jobs(conn)
        with Workers(target, dsn, 1, target.default_concurrency, LOG) as workers:
            workers.wait_ready()
            conn.execute("TRUNCATE bench_results")
            _produce(target, dsn, count)
            wait_until(lambda: not conn.execute(target.sql_remaining).fetchone()[0], 60, 0.02)
        return _latencies(conn, count)


def _produce(target: Pgqueue, dsn: str, count: int) -> None:
    async def produce() -> None:
        async with target.client(dsn) as client:
            for n in range(count):
                await asyncio.sleep(random.uniform(0.02, 0.05))
                await client.enqueue(n, time.monotonic())

    asyncio.run(produce())


def _latencies(conn: psycopg.Connection[Any], count: int) -> tuple[float, float]:
    records = load_records(conn, with_latency=True)
    problem = records.exactly_once(count)
    if problem:
        raise RuntimeError(problem)
    return percentile(records.latencies_ms, 50) or 0.0, percentile(records.latencies_ms, 99) or 0.0


def pickup_during_worker_prune(target: Pgqueue, dsn: str, count: int = 200) -> tuple[float, float, int, float]:
    """The idle pick-up while the worker itself prunes the finished rows (`--retention 1s`: all are past it).

    A worker prunes first about a minute after it starts, then every ten minutes; the jobs are enqueued once its
    prune is seen under way. Returns p50, p99 (ms), the rows it deleted meanwhile and over how many seconds.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        _forget_our_jobs(conn)

        def finished_rows() -> int:
            return int(conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'").fetchone()[0])

        before = finished_rows()
        target_command = target.worker_commands
        target.worker_commands = lambda *a: [[*target_command(*a)[0], "--retention", "1s"]]  # type: ignore[method-assign]
        try:
            with Workers(target, dsn, 1, target.default_concurrency, LOG) as workers:
                workers.wait_ready()
                conn.execute("TRUNCATE bench_results")
                if not wait_until(lambda: finished_rows() < before, 180, 0.2):
                    raise RuntimeError("the worker did not start pruning within 180 s")
                started, at_start = time.monotonic(), finished_rows()
                _produce(target, dsn, count)
                wait_until(lambda: not conn.execute(target.sql_remaining).fetchone()[0], 60, 0.02)
                deleted, seconds = at_start - finished_rows(), time.monotonic() - started
        finally:
            target.worker_commands = target_command  # type: ignore[method-assign]
        p50, p99 = _latencies(conn, count)
    return p50, p99, deleted, seconds


def measure(target: Pgqueue, dsn: str, drain_jobs: int) -> dict[str, Any]:
    pgqueue = [sys.executable, "-m", "pgqueue"]
    figures: dict[str, Any] = {}
    env = target.env(dsn)
    figures["worker start (s)"] = command_seconds(
        [*pgqueue, "work", "--app", "app_pgqueue", "--dsn", dsn, "--burst"], env
    )
    figures["pgqueue status (s)"] = command_seconds([*pgqueue, "status", "--dsn", dsn], env)
    overview, jobs_page = page_ms(dsn, ["/", "/jobs?status=completed"])
    figures["dashboard overview (ms, server)"] = overview
    figures["dashboard jobs, completed (ms, server)"] = jobs_page
    figures["drain (jobs/s)"] = drain_rate(target, dsn, drain_jobs)
    p50, p99 = idle_pickup(target, dsn)
    figures["idle pick-up p50 (ms)"] = p50
    figures["idle pick-up p99 (ms)"] = p99
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--finished", type=int, default=10_000_000)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--prune-only", action="store_true", help="load, then only the pick-up during a prune")
    options = parser.parse_args()
    dsn = make_conninfo(options.dsn, dbname=DATABASE)
    target = Pgqueue()
    with psycopg.connect(options.dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        migrate.upgrade(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(RESULTS_DDL)
        empty: dict[str, Any] = {}
        if not options.prune_only:
            print("empty table ...", file=sys.stderr)
            empty = measure(target, dsn, options.drain)
        print(f"loading {options.finished:,} finished jobs ...", file=sys.stderr)
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_seconds = load_finished(conn, options.finished)
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('pgqueue.jobs'))").fetchone()[0]
        big: dict[str, Any] = {}
        if not options.prune_only:
            print(f"{options.finished:,} finished jobs ...", file=sys.stderr)
            big = measure(target, dsn, options.drain)
        print("pick-up during the worker's own prune (it starts about a minute in) ...", file=sys.stderr)
        p50, p99, deleted, seconds = pickup_during_worker_prune(target, dsn)
    finally:
        with contextlib.suppress(psycopg.Error), psycopg.connect(options.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    label = f"{options.finished:,} finished"
    print(f"\njobs table with {label}: {size} with its indexes (loaded and indexed in {load_seconds:.0f} s)")
    print(f"{'figure':42} {'empty':>10} {label:>20} {'ratio':>7}")
    for name, value in empty.items():
        print(f"{name:42} {value:10.3f} {big[name]:20.3f} {big[name] / value if value else 0:7.2f}")
    print(
        f"\nidle pick-up while the worker prunes ({deleted:,} rows deleted in the {seconds:.1f} s measured, "
        f"{deleted / seconds:,.0f} rows/s): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )


if __name__ == "__main__":
    main()
