"""What observability costs: drain rate with metrics, JSON event logs and tracing on and off, and enqueue rate with
tracing off and on. Prints a table; never run as a test.

    .venv/bin/python benchmarks/observability.py [--dsn postgresql://postgres@127.0.0.1/postgres] [--jobs 20000]

Each drain is a burst worker (one process, concurrency 16, in this process) emptying a queue of no-op async jobs
enqueued beforehand; configurations alternate round by round so that a noisy machine spreads over all of them,
and the median of the rounds is shown. "tracing off" is the plain worker: the enqueue side is measured with
opentelemetry never imported (what a base install does), imported with no current span, and inside a span.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgqueue import JobSpec, Queue, Worker, WorkerSettings
from pgqueue.store import migrate

DATABASE = "pgqueue_bench_observe"


def fresh_database(server_dsn: str) -> str:
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    dsn = make_conninfo(server_dsn, dbname=DATABASE)
    migrate.upgrade(dsn)
    return dsn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_queue(dsn: str) -> Queue:
    queue = Queue(dsn)

    @queue.task(name="noop")
    async def noop(n: int = 0) -> None:
        pass

    return queue


def drain(queue: Queue, jobs: int, config: str) -> float:
    """Jobs per second of one burst worker emptying `jobs` no-op jobs."""
    for start in range(0, jobs, 5000):
        queue.enqueue_many([JobSpec("noop", {"n": n}) for n in range(start, min(jobs, start + 5000))])
    settings: dict = {"burst": True}
    observers = []
    if config == "metrics":
        settings.update(metrics_port=free_port(), metrics_interval=15.0)
    elif config == "json logs":
        settings.update(log_format="json")
    elif config == "tracing":
        from opentelemetry.sdk.trace import TracerProvider

        from pgqueue.worker.tracing import Tracing

        observers.append(Tracing(TracerProvider()))  # an SDK provider that records spans, with no exporter
    worker = Worker(queue, WorkerSettings(**settings), observers=observers)
    began = time.perf_counter()
    asyncio.run(worker.run_async())
    elapsed = time.perf_counter() - began
    done = worker.stats["completed"]
    assert done == jobs, (config, done)
    return jobs / elapsed


ENQUEUE_SCRIPT = """
import sys, time
from pgqueue import Queue
mode, dsn, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
queue = Queue(dsn)
queue.task(name="noop")(lambda n=0: None)
span = None
if mode != "never imported":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    if mode == "in a span":
        span = TracerProvider().get_tracer("bench").start_as_current_span("request")
        span.__enter__()
for n in range(200):
    queue.enqueue("noop", {"n": n})
began = time.perf_counter()
for n in range(count):
    queue.enqueue("noop", {"n": n})
rate = count / (time.perf_counter() - began)
from pgqueue.queue.tracing import current_context
calls = 200_000
began = time.perf_counter()
for _ in range(calls):
    current_context()
print(rate, (time.perf_counter() - began) / calls * 1e9)
assert ("opentelemetry" in sys.modules) == (mode != "never imported")
"""


def enqueue_rate(dsn: str, mode: str, count: int) -> tuple[float, float]:
    """Single enqueues per second in a fresh process (so 'never imported' really is), and the nanoseconds one
    capture of the trace context takes there (what each enqueue adds for it)."""
    run = subprocess.run(
        [sys.executable, "-c", ENQUEUE_SCRIPT, mode, dsn, str(count)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    rate, capture = run.stdout.split()
    return float(rate), float(capture)


def per_job_costs(queue: Queue, dsn: str, count: int = 20000) -> dict[str, float]:
    """Microseconds each observer adds per job (a start and a completion event; for tracing, the attempt's span),
    timed in a loop without the database: steadier than drain rates on a noisy machine."""
    from opentelemetry.sdk.trace import TracerProvider

    from pgqueue.worker.events import Event, JobEvent, Observers
    from pgqueue.worker.logs import EventLog
    from pgqueue.worker.metrics import Metrics
    from pgqueue.worker.tracing import Tracing

    metrics = Metrics(queue, dsn, port=0, refresh=60, worker_id="bench", concurrency=16, busy=lambda: 0)
    candidates = {"none": Observers(), "metrics": Observers([metrics]), "json logs": Observers([EventLog()])}
    candidates["tracing"] = Observers([Tracing(TracerProvider())])
    costs = {}
    for name, observers in candidates.items():
        began = time.perf_counter()
        for n in range(count):
            started = JobEvent(Event.STARTED, n, "noop", "default", 1, "bench", waited=0.01)
            if observers:
                observers.emit(started)
            if observers.traces:
                with observers.attempt(started):
                    pass
            done = JobEvent(Event.COMPLETED, n, "noop", "default", 1, "bench", duration=0.001)
            if observers:
                observers.emit(done)
        costs[name] = (time.perf_counter() - began) / count * 1e6
    return costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--enqueues", type=int, default=3000)
    options = parser.parse_args()
    dsn = fresh_database(options.dsn)
    # The JSON event lines go to a formatter and /dev/null, as they would to a collector's pipe.
    from pgqueue.cli.errors import JsonFormatter

    sink = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run
    sink.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[sink])
    queue = make_queue(dsn)
    configs = ["plain", "metrics", "json logs", "tracing"]
    rates: dict[str, list[float]] = {config: [] for config in configs}
    for round_number in range(options.rounds):
        for config in configs if round_number % 2 == 0 else reversed(configs):
            rates[config].append(drain(queue, options.jobs, config))
    costs = per_job_costs(queue, dsn)
    queue.close()
    print("per job, without the database (a start and a completion event; tracing: the span too)")
    for name, micros in costs.items():
        print(f"  {name:<10} {micros:>7.2f} us")
    print(f"drain of {options.jobs:,} no-op jobs, 1 process, concurrency 16, median of {options.rounds} rounds")
    plain = statistics.median(rates["plain"])
    for config in configs:
        median = statistics.median(rates[config])
        spread = f"{min(rates[config]):,.0f}-{max(rates[config]):,.0f}"
        print(f"  {config:<10} {median:>9,.0f} jobs/s  ({spread})  {100 * (median / plain - 1):+.1f}%")
    modes = ["never imported", "imported, no span", "in a span"]
    enqueue: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for round_number in range(3):
        for mode in modes if round_number % 2 == 0 else reversed(modes):
            enqueue[mode].append(enqueue_rate(dsn, mode, options.enqueues))
    print(f"single enqueue, {options.enqueues:,} per run, median of 3 runs (own connection, autocommit)")
    base = statistics.median(rate for rate, _ in enqueue["never imported"])
    for mode in modes:
        median = statistics.median(rate for rate, _ in enqueue[mode])
        capture = statistics.median(ns for _, ns in enqueue[mode])
        print(
            f"  {mode:<18} {median:>8,.0f} enqueues/s  {100 * (median / base - 1):+6.1f}%"
            f"   trace context capture {capture:,.0f} ns"
        )


if __name__ == "__main__":
    main()
