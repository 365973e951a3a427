"""The scenarios: each runs one library's workload and returns its figures as a dict.

Every scenario in which jobs run checks from `bench_results` that each job ran exactly once, and
raises ScenarioFailed when one was lost or repeated: a fast path that drops jobs cannot win.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from common import Server, load_records, median, percentile, reset_results
from target_base import Target
from workers import Workers


class ScenarioFailed(Exception):
    pass


@dataclass
class Context:
    server: Server
    target: Target
    dsn: str
    dbname: str
    quick: bool
    repeat: int
    log: Path
    sizes: dict[str, int] = field(default_factory=dict)


def _connect(ctx: Context) -> psycopg.Connection[Any]:
    return psycopg.connect(ctx.dsn, autocommit=True)


def _fresh(ctx: Context, conn: psycopg.Connection[Any], preload: int = 0) -> None:
    ctx.target.reset(conn)
    reset_results(conn)
    if preload:
        ctx.target.preload_finished(conn, preload)
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def _enqueue_many(ctx: Context, ns: range, chunk: int = 50_000) -> float:
    """Bulk-enqueue through the library's API; the seconds it took."""

    async def go() -> float:
        async with ctx.target.client(ctx.dsn) as client:
            started = time.perf_counter()
            for low in range(ns.start, ns.stop, chunk):
                await client.enqueue_many(range(low, min(low + chunk, ns.stop)))
            return time.perf_counter() - started

    return asyncio.run(go())


def _check(ctx: Context, conn: psycopg.Connection[Any], expected: int, what: str) -> Any:
    records = load_records(conn, with_latency=True)
    problem = records.exactly_once(expected)
    if problem:
        raise ScenarioFailed(f"{ctx.target.name} {what}: {problem}")
    done = int(conn.execute(ctx.target.sql_done).fetchone()[0])
    if done < expected:
        raise ScenarioFailed(f"{ctx.target.name} {what}: only {done} of {expected} jobs recorded as finished")
    return records


def _wait_drained(ctx: Context, conn: psycopg.Connection[Any], workers: Workers, timeout: float) -> tuple[float, int]:
    """Poll (every 20 ms) until no job is left unfinished; the monotonic time seen, and the polls made."""
    deadline = time.monotonic() + timeout
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        if not conn.execute(ctx.target.sql_remaining).fetchone()[0]:
            return time.monotonic(), polls
        if polls % 50 == 0:
            workers.check_alive()
        time.sleep(0.02)
    raise ScenarioFailed(f"{ctx.target.name}: jobs still unfinished after {timeout:.0f} s")


# -- enqueue -----------------------------------------------------------------------------------------


def enqueue_single(ctx: Context) -> dict[str, Any]:
    count = ctx.sizes["single"]

    async def once() -> float:
        async with ctx.target.client(ctx.dsn) as client:
            for n in range(20):  # warm the connection and the prepared statements
                await client.enqueue(-1 - n, 0.0)
            started = time.perf_counter()
            for n in range(count):
                await client.enqueue(n, 0.0)
            return count / (time.perf_counter() - started)

    rates = []
    for _ in range(ctx.repeat):
        with _connect(ctx) as conn:
            _fresh(ctx, conn)
        rates.append(asyncio.run(once()))
    return {"jobs": count, "jobs_per_s": median(rates), "runs": rates}


def enqueue_bulk(ctx: Context) -> dict[str, Any]:
    count = ctx.sizes["bulk"]
    rates = []
    for _ in range(ctx.repeat):
        with _connect(ctx) as conn:
            _fresh(ctx, conn)
        rates.append(count / _enqueue_many(ctx, range(count), chunk=count))
    return {"jobs": count, "jobs_per_s": median(rates), "runs": rates}


# -- drain -------------------------------------------------------------------------------------------


def drain_once(ctx: Context, jobs: int, processes: int, concurrency: int, preload: int = 0) -> dict[str, Any]:
    """Every worker process started, connected and idle first; then the backlog, committed at once (one bulk
    enqueue), drained. Measured from the first job's start to the last one's end: the drain of warm processes,
    not their start-up (which `history` measures on its own)."""
    with _connect(ctx) as conn:
        _fresh(ctx, conn, preload)
        with Workers(ctx.target, ctx.dsn, processes, concurrency, ctx.log) as workers:
            workers.wait_ready()
            cpu_before = _cpu_seconds(workers.pids())
            _enqueue_many(ctx, range(jobs))
            transactions = ctx.server.transactions(ctx.dbname)
            finished, polls = _wait_drained(ctx, conn, workers, timeout=max(120.0, jobs / 50))
            cpu_after = _cpu_seconds(workers.pids())
            cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
        transactions = ctx.server.transactions(ctx.dbname) - transactions - polls
        records = _check(ctx, conn, jobs, f"drain of {jobs} ({processes} x {concurrency})")
    seconds = finished - records.first_start
    return {
        "jobs_per_s": jobs / seconds,
        "seconds": seconds,
        "transactions_per_job": transactions / jobs,
        "worker_cpu_s": cpu,
    }


def _cpu_seconds(pids: list[int]) -> float | None:
    total = 0.0
    try:
        for pid in pids:
            process = psutil.Process(pid)
            for proc in [process, *process.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        return None
    return total


def drain(
    ctx: Context, processes: int, concurrency: int, preload: int = 0, repeat: int | None = None
) -> dict[str, Any]:
    jobs = ctx.sizes["drain"]
    if ctx.target.drain_jobs:  # a slow library drains fewer jobs (its rate is what is compared)
        jobs = min(jobs, ctx.target.drain_jobs // (5 if ctx.quick else 1))
    runs = [drain_once(ctx, jobs, processes, concurrency, preload) for _ in range(repeat or ctx.repeat)]
    return {
        "jobs": jobs,
        "processes": processes,
        "concurrency": concurrency,
        "preloaded_finished_rows": preload,
        "jobs_per_s": median([r["jobs_per_s"] for r in runs]),
        "transactions_per_job": median([r["transactions_per_job"] for r in runs]),
        "runs": [round(r["jobs_per_s"]) for r in runs],
        "exactly_once": "checked",
    }


# -- latency and steady state ------------------------------------------------------------------------


def _latency_summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else None,
    }


def idle_latency(ctx: Context) -> dict[str, Any]:
    """One idle worker (default settings); jobs enqueued one at a time, 20-50 ms apart."""
    count = ctx.sizes["latency"]
    with _connect(ctx) as conn:
        _fresh(ctx, conn)
        with Workers(ctx.target, ctx.dsn, 1, ctx.target.default_concurrency, ctx.log) as workers:
            workers.wait_ready()

            async def produce() -> None:
                async with ctx.target.client(ctx.dsn) as client:
                    for n in range(count):
                        await asyncio.sleep(random.uniform(0.02, 0.05))
                        await client.enqueue(n, time.monotonic())

            asyncio.run(produce())
            _wait_drained(ctx, conn, workers, timeout=60)
        records = _check(ctx, conn, count, "idle latency")
    return {"jobs": count, **_latency_summary(records.latencies_ms)}


def mixed(ctx: Context) -> dict[str, Any]:
    """Enqueue at a steady offered rate (batches every 10 ms) while one default worker drains."""
    return steady_load(ctx, ctx.sizes["mixed_rate"], ctx.sizes["mixed_seconds"])


def steady_load(ctx: Context, rate: int, seconds: float) -> dict[str, Any]:
    """`rate` jobs/s offered for `seconds` (batches every 10 ms) to one default worker; its pick-up times."""
    batch = max(1, rate // 100)
    with _connect(ctx) as conn:
        _fresh(ctx, conn)
        with Workers(ctx.target, ctx.dsn, 1, ctx.target.default_concurrency, ctx.log) as workers:
            workers.wait_ready()

            async def produce() -> tuple[int, float, float]:
                async with ctx.target.client(ctx.dsn) as client:
                    started = time.monotonic()
                    sent = 0
                    while time.monotonic() - started < seconds:
                        due = started + sent / rate
                        if due > time.monotonic():
                            await asyncio.sleep(due - time.monotonic())
                        await client.enqueue_many(range(sent, sent + batch), time.monotonic())
                        sent += batch
                    return sent, started, time.monotonic()

            sent, started, stopped = asyncio.run(produce())
            finished, _polls = _wait_drained(ctx, conn, workers, timeout=max(60.0, sent / 50))
        records = _check(ctx, conn, sent, f"steady load of {rate:,} jobs/s")
    return {
        "offered_per_s": rate,
        "achieved_enqueue_per_s": sent / (stopped - started),
        "completed_per_s": sent / (finished - started),
        "backlog_after_producer_s": finished - stopped,
        "jobs": sent,
        **_latency_summary(records.latencies_ms),
    }


MAXRATE_P99_MS = 10.0
# A step counts only if the producer offered what it was asked to (a late producer is not a low latency).
MAXRATE_OFFERED_SHARE = 0.95


def maxrate(ctx: Context) -> dict[str, Any]:
    """The highest offered rate at which one default worker keeps the pick-up p99 under MAXRATE_P99_MS.

    Steps the steady load (`steady_load`, as `mixed`) from maxrate_from jobs/s, doubling up to maxrate_to, each
    for maxrate_seconds on a fresh table and worker. A step misses when its p99 is at or over the bound or the
    producer fell short of the offered rate. One miss may be a noisy moment of a shared machine, so the steps go
    on; two misses in a row end them. The answer is the highest step that passed; `missed` lists every miss, so
    a miss below the answer is in plain sight."""
    rate, top, seconds = ctx.sizes["maxrate_from"], ctx.sizes["maxrate_to"], ctx.sizes["maxrate_seconds"]
    steps: list[dict[str, Any]] = []
    best: int | None = None
    missed: list[str] = []
    in_a_row = 0
    while rate <= top and in_a_row < 2:
        step = steady_load(ctx, rate, seconds)
        steps.append(step)
        p99 = step["p99_ms"]
        if step["achieved_enqueue_per_s"] < MAXRATE_OFFERED_SHARE * rate:
            missed.append(f"{rate:,}/s (the producer offered only {step['achieved_enqueue_per_s']:,.0f}/s)")
        elif p99 is None or p99 >= MAXRATE_P99_MS:
            missed.append(f"{rate:,}/s (p99 {p99:.1f} ms)" if p99 is not None else f"{rate:,}/s (no pick-ups)")
        else:
            best, in_a_row = rate, 0
            rate *= 2
            continue
        in_a_row += 1
        rate *= 2
    return {
        "p99_bound_ms": MAXRATE_P99_MS,
        "step_seconds": seconds,
        "max_rate_per_s": best,
        "top_step_reached": best == top,
        "missed": missed,
        "steps": [
            {k: step[k] for k in ("offered_per_s", "achieved_enqueue_per_s", "p50_ms", "p99_ms", "jobs")}
            for step in steps
        ],
    }


# -- idle cost ---------------------------------------------------------------------------------------


def idle_cost(contexts: list[Context]) -> dict[str, dict[str, Any]]:
    """One idle worker (default settings) per library, all over the same quiet window: their statements,
    connections and CPU. run.py points the contexts at a private server with pg_stat_statements when it can.
    """
    window = contexts[0].sizes["idle_seconds"]
    running: list[tuple[Context, Workers, Any]] = []
    try:
        for ctx in contexts:
            counter = ctx.server.statement_counter()
            count = ctx.server.statements if counter == "pg_stat_statements" else ctx.server.transactions
            with _connect(ctx) as conn:
                _fresh(ctx, conn)
            workers = Workers(ctx.target, ctx.dsn, 1, ctx.target.default_concurrency, ctx.log)
            running.append((ctx, workers, (counter, count)))
            workers.start()
            workers.wait_ready()
        time.sleep(2.0)
        before = {ctx.target.name: (count(ctx.dbname), _cpu_seconds(w.pids())) for ctx, w, (_, count) in running}
        connections = {ctx.target.name: ctx.server.connections(ctx.dbname) for ctx, _w, _c in running}
        time.sleep(window)
        results = {}
        for ctx, workers, (counter, count) in running:
            statements, cpu = count(ctx.dbname), _cpu_seconds(workers.pids())
            statements_before, cpu_before = before[ctx.target.name]
            workers.check_alive()
            results[ctx.target.name] = {
                "window_s": window,
                "counted_by": counter,
                "statements_per_s": (statements - statements_before) / window,
                "connections": max(connections[ctx.target.name], ctx.server.connections(ctx.dbname)),
                "cpu_s_per_min": None if cpu is None or cpu_before is None else (cpu - cpu_before) * 60 / window,
            }
        return results
    finally:
        for _ctx, workers, _counter in running:
            workers.stop()
