"""The cost of the finished-job notification (migration 0009's trigger, which Queue.result() listens to) on the
hot path: drain the same backlog of no-op jobs with the trigger enabled and disabled, alternating rounds, in one
database, and print the drain rates side by side.

    python benchmarks/finished_notify.py --dsn postgresql://postgres@127.0.0.1/postgres --jobs 20000 --rounds 3

A worker in this process (burst, the given concurrency) drains each backlog; the jobs are inserted before the
clock starts. Figures vary with the machine's load: compare the two columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import psycopg
from psycopg.conninfo import make_conninfo

from pgqueue import Queue, Worker, WorkerSettings
from pgqueue.store import migrate


def drain(dsn: str, jobs: int, concurrency: int, trigger: bool) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE pgqueue.jobs CASCADE")
        state = "ENABLE" if trigger else "DISABLE"
        conn.execute(f"ALTER TABLE pgqueue.jobs {state} TRIGGER jobs_notify_finished")
    queue = Queue(dsn)

    @queue.task
    async def noop(n: int) -> None:
        return None

    for start in range(0, jobs, 5000):
        queue.enqueue_many([("noop", {"n": n}) for n in range(start, min(jobs, start + 5000))])
    queue.close()
    worker = Worker(queue, WorkerSettings(burst=True, concurrency=concurrency))
    began = time.perf_counter()
    asyncio.run(worker.run_async())
    elapsed = time.perf_counter() - began
    assert worker.stats["completed"] == jobs, worker.stats
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="a server where a scratch database may be created")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    options = parser.parse_args()
    name = f"pgqueue_bench_notify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(options.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(options.dsn, dbname=name)
    try:
        migrate.upgrade(dsn)
        rates: dict[bool, list[float]] = {True: [], False: []}
        for round_number in range(options.rounds):
            for trigger in (False, True) if round_number % 2 == 0 else (True, False):
                rate = drain(dsn, options.jobs, options.concurrency, trigger)
                rates[trigger].append(rate)
                print(f"round {round_number + 1} trigger {'on ' if trigger else 'off'}: {rate:8.0f} jobs/s", flush=True)
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        print(f"\n{options.jobs} no-op jobs, concurrency {options.concurrency}, median of {options.rounds} rounds")
        print("| finished-job notification | jobs/s |")
        print("| --- | --- |")
        print(f"| off (trigger disabled) | {off:.0f} |")
        print(f"| on (as shipped) | {on:.0f} ({(on - off) / off:+.1%}) |")
    finally:
        with psycopg.connect(options.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
