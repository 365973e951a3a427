"""What a concurrency limit costs: drain a task limited to 50 running at once, one limited to 2000 and an unlimited
one, side by side (rounds in alternating order, each drain in a fresh database), with real `pgqueue work --burst`
processes whose concurrency adds up to more than 50, so the limit of 50 binds and the limit of 2000 never does, not
even on the jobs claimed ahead (what a limit's bookkeeping costs). And the unlimited task once more with the
workers' own settings keeping at most 50 jobs in flight (concurrency 50 / workers each, nothing claimed ahead): the
most that any limit of 50 leaves room for, since a slot frees only when its job's end is written and a claim must
come back before the next job takes it. Prints jobs/s of each, the ratios, and the row updates per job (a job
parked as held, denied a slot, costs one more).

With --rates, what a rate limit costs instead: the unlimited task, a task limited to 1000 starts a second per
value of its `group` argument over 100 groups (never binding: what the bookkeeping costs), and a task limited to
2000 starts a second (binding: the achieved rate, its first window's burst included). Workers run until the
jobs are done (a burst worker would stop at the first job the rate moves on).

    .venv/bin/python benchmarks/limits.py --dsn postgresql://postgres@127.0.0.1/postgres [--jobs 20000] [--rates]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from pgqueue import Queue
from pgqueue.store import migrate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from app_limits import LIMIT, ROOMY  # noqa: E402
from common import Server  # noqa: E402

PGQUEUE = str(Path(sys.executable).parent / "pgqueue")


def drain(
    dsn: str,
    task: str,
    jobs: int,
    seconds: float,
    workers: int,
    concurrency: int,
    extra: list[str],
    *,
    burst: bool = True,
    groups: int = 1,
) -> tuple[float, int]:
    """Seconds to drain `jobs` jobs of `task`, and the row updates of the jobs table on the way (held jobs and
    jobs a rate moved on cost one more each)."""
    queue = Queue(dsn)
    from app_limits import queue as app_queue

    queue.tasks = app_queue.tasks
    grouped = task.startswith("rated")  # the rate-limited tasks take a `group` (their rate key)
    queue.enqueue_many(
        [(task, {"n": n, "seconds": seconds, **({"group": n % groups} if grouped else {})}) for n in range(jobs)]
    )
    queue.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Statistics as a table in service has them (autovacuum's analyze): planned for a table of a handful
        # of rows, the claim reads the whole backlog by a bitmap scan, which never marks dead index entries.
        conn.execute("ANALYZE pgqueue.jobs")
    if not burst:
        return _drain_until_done(dsn, jobs, workers, concurrency, extra)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_reset()")
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(HERE)}
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [PGQUEUE, "work", "--app", "app_limits", "--concurrency", str(concurrency), "--burst", *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    for proc in procs:
        proc.wait(timeout=600)
    elapsed = time.perf_counter() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'").fetchone()[0]
        held = conn.execute(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
        ).fetchone()[0]
    if done != jobs:
        raise SystemExit(f"{task}: only {done} of {jobs} jobs completed")
    return elapsed, int(held)


def _drain_until_done(dsn: str, jobs: int, workers: int, concurrency: int, extra: list[str]) -> tuple[float, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_reset()")
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(HERE)}
    command = [PGQUEUE, "work", "--app", "app_limits", "--concurrency", str(concurrency), *extra]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)
    ]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'").fetchone()[0] < jobs:
                if any(proc.poll() is not None for proc in procs):
                    raise SystemExit("a worker exited before the jobs were done")
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    time.sleep(1.0)  # the workers' backends report their statistics as they exit
    with psycopg.connect(dsn, autocommit=True) as conn:
        updates = conn.execute(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
        ).fetchone()[0]
    return elapsed, int(updates)


def rate_costs(server: Server, args: argparse.Namespace) -> None:
    """The --rates mode (see the module's docstring)."""
    from app_limits import KEY_RATE, RATE

    cases = {"unlimited": 1, "rated_per_group": 100, "rated": 1}
    results: dict[str, list[float]] = {task: [] for task in cases}
    updates: dict[str, list[int]] = {task: [] for task in cases}
    extra = [] if args.prefetch is None else ["--prefetch", str(args.prefetch)]
    try:
        for round_number in range(1, args.rounds + 1):
            order = list(cases) if round_number % 2 else list(reversed(cases))
            for task in order:
                dsn, _name = server.create_database(f"rates_{task}_{round_number}")
                migrate.upgrade(dsn)
                elapsed, row_updates = drain(
                    dsn, task, args.jobs, args.seconds, args.workers, args.concurrency, extra,
                    burst=False, groups=cases[task],
                )  # fmt: skip
                results[task].append(args.jobs / elapsed)
                updates[task].append(row_updates)
                print(f"round {round_number} {task:>15}: {args.jobs / elapsed:8.0f} jobs/s ({elapsed:.2f} s)")
    finally:
        server.drop_all()
    median = {task: statistics.median(values) for task, values in results.items()}
    print()
    print(f"{args.jobs} jobs, {args.workers} workers x concurrency {args.concurrency}, handler {args.seconds} s")
    print(f"unlimited task:                              {median['unlimited']:8.0f} jobs/s (median of {args.rounds})")
    print(
        f"rate {KEY_RATE}/s per group, 100 groups (not binding): {median['rated_per_group']:6.0f} jobs/s, "
        f"{median['rated_per_group'] / median['unlimited']:.1%} of unlimited"
    )
    shortest = (args.jobs - RATE) / RATE  # the first window's RATE start at once, then RATE a second
    print(
        f"rate {RATE}/s (binding):                        {median['rated']:8.0f} jobs/s; at most "
        f"{args.jobs / shortest:.0f} jobs/s are allowed over {args.jobs} jobs ({RATE} at once, then {RATE}/s)"
    )
    per_job = {task: statistics.median(values) / args.jobs for task, values in updates.items()}
    print("row updates per job:         " + ", ".join(f"{task} {value:.2f}" for task, value in per_job.items()))


def idle_cost(server: Server, seconds: float, held: int) -> float:
    """Transactions per second of the database while the limited task's 50 slots are taken by long jobs and
    `held` more wait, with two workers (one running the long jobs, one idle): what waiting costs."""
    dsn, name = server.create_database(f"limits_idle_{held}")
    migrate.upgrade(dsn)
    queue = Queue(dsn)
    from app_limits import queue as app_queue

    queue.tasks = app_queue.tasks
    queue.enqueue_many([("limited", {"n": n, "seconds": 3600}) for n in range(50)])
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(HERE)}
    command = [PGQUEUE, "work", "--app", "app_limits", "--concurrency", "64"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'running'").fetchone()[0] < 50:
                time.sleep(0.1)
        if held:
            queue.enqueue_many([("limited", {"n": n}) for n in range(held)])
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with psycopg.connect(dsn, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'held'").fetchone()[0] < held:
                time.sleep(0.1)
        # Both workers started and settled, every extra job parked; and an idle backend reports its transactions up
        # to 10 s late (PostgreSQL batches statistics), so the parking claims must not land in the count below.
        time.sleep(12)
        before = server.transactions(name)
        time.sleep(seconds)
        after = server.transactions(name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            parked = conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'held'").fetchone()[0]
        if parked != held:
            raise SystemExit(f"expected {held} held jobs, found {parked}")
    finally:
        queue.close()
        for proc in procs:
            proc.kill()
            proc.wait()
    return (after - before - 1) / seconds  # less this script's own read between the two counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_DSN", "postgresql://postgres@127.0.0.1/postgres"))
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="per worker process (2 x 32 > the limit of 50)")
    parser.add_argument("--seconds", type=float, default=0.0, help="how long each handler sleeps")
    parser.add_argument("--prefetch", type=int, default=None, help="passed to the workers (default: theirs)")
    parser.add_argument("--idle", type=float, default=0, help="also measure idle cost over this many seconds")
    parser.add_argument("--rates", action="store_true", help="what a rate limit costs (see above)")
    args = parser.parse_args()
    server = Server(args.dsn)
    if args.rates:
        rate_costs(server, args)
        return
    if args.idle:
        try:
            for held in (0, 1000):
                rate = idle_cost(server, args.idle, held)
                print(f"idle cost, 50 long jobs running, {held:4d} held: {rate:.2f} transactions/s (2 workers)")
        finally:
            server.drop_all()
        return
    cases = ("unlimited", "limited", "roomy", "capped")
    rates: dict[str, list[float]] = {case: [] for case in cases}
    updates: dict[str, list[int]] = {case: [] for case in cases}
    in_flight = LIMIT // args.workers  # per worker, for the capped case
    try:
        for round_number in range(1, args.rounds + 1):
            for case in cases if round_number % 2 else tuple(reversed(cases)):
                dsn, _name = server.create_database(f"limits_{case}_{round_number}")
                migrate.upgrade(dsn)
                if case == "capped":
                    task, concurrency, extra = "unlimited", in_flight, ["--prefetch", "0"]
                else:
                    task, concurrency = case, args.concurrency
                    extra = [] if args.prefetch is None else ["--prefetch", str(args.prefetch)]
                elapsed, row_updates = drain(dsn, task, args.jobs, args.seconds, args.workers, concurrency, extra)
                rates[case].append(args.jobs / elapsed)
                updates[case].append(row_updates)
                print(f"round {round_number} {case:>9}: {args.jobs / elapsed:8.0f} jobs/s ({elapsed:.2f} s)")
    finally:
        server.drop_all()
    unlimited = statistics.median(rates["unlimited"])
    limited = statistics.median(rates["limited"])
    roomy = statistics.median(rates["roomy"])
    capped = statistics.median(rates["capped"])
    print()
    prefetch = "default" if args.prefetch is None else args.prefetch
    print(
        f"{args.jobs} jobs, {args.workers} workers x concurrency {args.concurrency}, prefetch {prefetch}, "
        f"handler {args.seconds} s"
    )
    print(f"unlimited task:              {unlimited:8.0f} jobs/s (median of {args.rounds})")
    print(f"limited task (concurrency 50): {limited:6.0f} jobs/s (median of {args.rounds})")
    print(f"limited / unlimited:         {limited / unlimited:8.1%}")
    print(
        f"unlimited, at most {in_flight * args.workers} in flight ({args.workers} workers x concurrency {in_flight}, "
        f"prefetch 0): {capped:6.0f} jobs/s, {capped / unlimited:.1%} of unlimited"
    )
    print(f"limited / unlimited at most {in_flight * args.workers} in flight: {limited / capped:6.1%}")
    print(f"task limited to {ROOMY} (never binds): {roomy:6.0f} jobs/s, {roomy / unlimited:.1%} of unlimited")
    per_job = {task: statistics.median(values) / args.jobs for task, values in updates.items()}
    print(
        f"row updates per job:         unlimited {per_job['unlimited']:.2f}, limited {per_job['limited']:.2f}, "
        f"limited to {ROOMY} {per_job['roomy']:.2f}"
    )


if __name__ == "__main__":
    main()
