"""Workflows against plain jobs: a fan-out/fan-in of 10,000 jobs (one root, 10,000 jobs after it, one callback
after all of them) against 10,000 plain jobs, each drained by one burst worker in this process.

    .venv/bin/python benchmarks/workflows.py [--dsn postgresql://postgres@127.0.0.1/postgres] [--jobs 10000]

Three scenarios, each on a fresh database, run `--rounds` times in turn (the median is printed):
- plain: 10,000 independent jobs;
- plain, no trigger: the same with the release trigger of migration 0010 disabled, i.e. what every job paid
  before workflows existed (the trigger's cost on jobs that have no dependents);
- fan-out/fan-in: root -> 10,000 -> callback, enqueued as one `enqueue_many` naming parents by `InBatch`.
Enqueue and drain are timed apart; the drain ends when the burst worker exits (every job finished).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgqueue import InBatch, JobSpec, Queue, Worker, WorkerSettings
from pgqueue.store import migrate

SCENARIOS = ("plain", "plain, no trigger", "fan-out/fan-in")


def make_queue(dsn: str) -> Queue:
    queue = Queue(dsn)

    @queue.task(name="noop", max_attempts=1)
    async def noop(n: int = 0) -> None:
        return None

    return queue


def run(server_dsn: str, scenario: str, jobs: int, concurrency: int) -> tuple[float, float, int]:
    name = f"bench_workflows_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server_dsn, dbname=name)
    try:
        migrate.upgrade(dsn)
        if scenario == "plain, no trigger":
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ALTER TABLE pgqueue.jobs DISABLE TRIGGER jobs_settle_dependents")
        queue = make_queue(dsn)
        started = time.perf_counter()
        if scenario == "fan-out/fan-in":
            specs = [JobSpec("noop", {"n": -1})]
            specs += [JobSpec("noop", {"n": n}, after=[InBatch(0)]) for n in range(jobs)]
            specs.append(JobSpec("noop", {"n": -2}, after=[InBatch(i) for i in range(1, jobs + 1)], on_failure="run"))
            queue.enqueue_many(specs)
        else:
            queue.enqueue_many([("noop", {"n": n}) for n in range(jobs)])
        enqueued = time.perf_counter() - started
        queue.close()
        worker = Worker(make_queue(dsn), WorkerSettings(burst=True, concurrency=concurrency))
        started = time.perf_counter()
        asyncio.run(worker.run_async(install_signal_handlers=False))
        drained = time.perf_counter() - started
        with psycopg.connect(dsn, autocommit=True) as conn:
            done = conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'").fetchone()[0]
        return enqueued, drained, done
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    options = parser.parse_args()
    results: dict[str, list[tuple[float, float, int]]] = {scenario: [] for scenario in SCENARIOS}
    for _ in range(options.rounds):
        for scenario in SCENARIOS:
            results[scenario].append(run(options.dsn, scenario, options.jobs, options.concurrency))
    print(f"{options.jobs:,} jobs, 1 burst worker, concurrency {options.concurrency}, median of {options.rounds}")
    print(f"{'scenario':<20} {'jobs':>7} {'enqueue s':>10} {'drain s':>8} {'jobs/s':>8}")
    for scenario, rounds in results.items():
        enqueue_s = statistics.median(r[0] for r in rounds)
        drain_s = statistics.median(r[1] for r in rounds)
        done = rounds[0][2]
        print(f"{scenario:<20} {done:>7,} {enqueue_s:>10.2f} {drain_s:>8.2f} {done / drain_s:>8,.0f}")


if __name__ == "__main__":
    main()
