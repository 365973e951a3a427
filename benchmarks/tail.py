"""Where an idle worker's pick-up time goes: per-stage timestamps of each job, from the enqueue call to the
handler's first line.

    .venv/bin/python benchmarks/tail.py [--dsn DSN] [--jobs 200] [--gap 0.05] [--batch 1] [--history 0]
        [--no-loop-sampler]

One worker process (the same Worker that `pgqueue work` runs) is started with its listener and claim calls
wrapped to stamp the time; the orchestrator enqueues `--batch` jobs at a time (one statement), `--gap` seconds
apart, and stamps the call and its return (the commit). One job 50 ms apart is an idle worker's pick-up; batches
of 20 every 10 ms are a steady 2,000 jobs/s, where a job may wait for a claim already on its way (`wake`) or, once
claimed, for a free slot (`start`). Per job the stages are:

    commit       enqueue call -> enqueue returned (INSERT, trigger, commit)
    notify       enqueue returned -> the worker's listener handed the NOTIFY over
    wake         NOTIFY handed over -> the claim statement sent (the first claim sent after the job committed)
    claim        claim sent -> its rows back (one round trip: the buffered acks and the claim)
    start        rows back -> the handler's first line (a slot's wait included)
    total        enqueue call -> the handler's first line

It also samples the worker's event loop every millisecond and prints its stalls (a wake-up later than 2 ms),
and the garbage collector's pauses by generation: a stall that overlaps a pick-up shows up in that job's `wake`
or `start`. The sampler wakes the worker's process a thousand times a second, which a worker alone
(`pgqueue work`) does not do; `--no-loop-sampler` measures without it (and reports no stalls). Idle, the two
read the same within this box's noise (2026-12-07, two runs each: totals at p50 3.89 and 4.15 ms sampled,
4.17 and 3.67 ms not).
`--history` first fills the table with finished jobs (analyzed), as a deployment's table is rather than a fresh
one. Clocks: CLOCK_MONOTONIC, shared by all processes of the machine. This is a diagnostic, not a
contest: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgqueue import Queue, WorkerSettings  # noqa: E402
from pgqueue.store import migrate  # noqa: E402

STAGES = ("commit", "notify", "wake", "claim", "start", "total")
LOOP_SAMPLE = 0.001  # seconds between event-loop samples
STALL = 0.002  # a sample this late counts as a stall


# -- the worker side ---------------------------------------------------------------------------------------


def run_worker(dsn: str, out: Path, sample_loop: bool = True) -> None:
    """Run one worker with stamped listener and claim calls until SIGTERM, then write the stamps to `out`."""
    from pgqueue.worker.completer import Completer
    from pgqueue.worker.listener import Listener
    from pgqueue.worker.worker import Worker

    stamps: dict[str, list[Any]] = {"heard": [], "claims": [], "starts": [], "stalls": [], "collections": []}
    collecting: dict[str, float] = {}

    def timed_collection(phase: str, info: dict[str, int]) -> None:
        # The cyclic garbage collector stops the event loop while it runs: one cause of a stall, told apart here.
        if phase == "start":
            collecting["since"] = time.monotonic()
        elif "since" in collecting:
            stamps["collections"].append((info["generation"], time.monotonic() - collecting.pop("since")))

    gc.callbacks.append(timed_collection)
    heard = Listener._heard
    flush_and_claim = Completer.flush_and_claim

    def stamped_heard(self: Listener, channel: str, payload: str) -> None:
        stamps["heard"].append(time.monotonic())
        heard(self, channel, payload)

    async def stamped_claim(self: Completer, limit: int, free: int | None = None) -> Any:
        sent = time.monotonic()
        claimed = await flush_and_claim(self, limit, free)
        stamps["claims"].append((sent, time.monotonic(), len(claimed or ())))
        return claimed

    Listener._heard = stamped_heard  # type: ignore[method-assign]
    Completer.flush_and_claim = stamped_claim  # type: ignore[method-assign]

    queue = Queue(dsn)

    @queue.task(name="stamp")
    async def stamp(n: int) -> None:
        stamps["starts"].append((n, time.monotonic()))

    async def sampler() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LOOP_SAMPLE)
            late = time.monotonic() - before - LOOP_SAMPLE
            if late > STALL:
                stamps["stalls"].append((before, late))

    async def main() -> None:
        worker = Worker(queue, WorkerSettings(concurrency=16), dsn=dsn)
        sampling = asyncio.create_task(sampler()) if sample_loop else None
        try:
            await worker.run_async(install_signal_handlers=True)
        finally:
            if sampling is not None:
                sampling.cancel()

    asyncio.run(main())
    out.write_text(json.dumps(stamps))


# -- the orchestrator ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def breakdown(calls: dict[int, tuple[float, float]], stamps: dict[str, list[Any]]) -> dict[str, list[float]]:
    """Each job's stage durations (ms): each stage ends at the first stamp of its kind after the job committed.
    Its claim is the first one sent once the job was committed (or announced) that came back before the job
    started: a claim already on its way when the job committed cannot have seen it."""
    heard = sorted(stamps["heard"])
    claims = sorted((sent, back) for sent, back, count in stamps["claims"] if count)
    starts = dict((int(n), at) for n, at in stamps["starts"])
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for n, (called, returned) in sorted(calls.items()):
        started = starts.get(n)
        heard_at = next((at for at in heard if at >= called), None)
        if started is None or heard_at is None:
            continue
        visible = min(returned, heard_at)
        claim = next(((sent, back) for sent, back in claims if sent >= visible and back <= started), None)
        if claim is None:
            continue
        # The NOTIFY can beat the enqueue's return (the commit is sent before psycopg returns): clamp at 0.
        points = [called, returned, max(heard_at, returned), max(claim[0], heard_at), claim[1], started]
        for stage, (a, b) in zip(STAGES, itertools.pairwise(points), strict=False):
            stages[stage].append(max(0.0, b - a) * 1000)
        stages["total"].append((started - called) * 1000)
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_DSN", "postgresql://postgres@127.0.0.1/postgres"))
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between enqueues")
    parser.add_argument("--batch", type=int, default=1, help="jobs per enqueue (one statement)")
    parser.add_argument("--history", type=int, default=0, help="finished jobs in the table before the run")
    parser.add_argument(
        "--no-loop-sampler", action="store_true", help="do not sample the worker's event loop (see the docstring)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run the worker side, stamps to this file
    options = parser.parse_args()
    if options.worker:
        run_worker(options.dsn, Path(options.worker), sample_loop=not options.no_loop_sampler)
        return

    name = f"pgqueue_tail_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(options.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(options.dsn, dbname=name)
    out = Path(tempfile.mkdtemp(prefix="pgqueue-tail-")) / "stamps.json"
    worker: subprocess.Popen[bytes] | None = None
    try:
        migrate.upgrade(dsn)
        if options.history:
            # A deployment's table rather than a fresh one: its finished jobs kept, and statistics that know them.
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO pgqueue.jobs (task, args, status, attempts, started_at, finished_at) "
                    "SELECT 'stamp', '{}', 'completed', 1, now(), now() FROM generate_series(1, %s)",
                    [options.history],
                )
                conn.execute("VACUUM ANALYZE pgqueue.jobs")
        command = [sys.executable, __file__, "--dsn", dsn, "--worker", str(out)]
        if options.no_loop_sampler:
            command.append("--no-loop-sampler")
        worker = subprocess.Popen(command, cwd=ROOT)
        queue = Queue(dsn)
        queue.task(name="stamp")(lambda n: None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'").fetchone()[0]:
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not start listening within 30 s")
                time.sleep(0.05)
        time.sleep(0.5)
        calls: dict[int, tuple[float, float]] = {}
        started = time.monotonic()
        for first in range(0, options.jobs, options.batch):
            # Batches on a fixed schedule, as a steady producer: a slow enqueue does not push the later ones back.
            due = started + first // options.batch * options.gap
            time.sleep(max(0.0, due - time.monotonic()))
            numbers = range(first, min(first + options.batch, options.jobs))
            called = time.monotonic()
            if options.batch == 1:
                queue.enqueue("stamp", {"n": first})
            else:
                queue.enqueue_many([("stamp", {"n": n}) for n in numbers])
            returned = time.monotonic()
            calls.update((n, (called, returned)) for n in numbers)
        time.sleep(0.5)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        with psycopg.connect(options.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    stamps = json.loads(out.read_text())
    stages = breakdown(calls, stamps)
    print(
        f"{len(stages['total'])} of {options.jobs} jobs traced, {options.batch} per enqueue, "
        f"{options.gap * 1000:g} ms apart (ms)"
    )
    print(f"{'stage':8} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
    for stage in STAGES:
        values = stages[stage]
        if values:
            row = [percentile(values, q) for q in (0.5, 0.9, 0.99)] + [max(values)]
            print(f"{stage:8} " + " ".join(f"{v:7.2f}" for v in row))
    stalls = [late * 1000 for _, late in stamps["stalls"]]
    span = options.jobs / options.batch * options.gap
    if options.no_loop_sampler:
        print("event-loop stalls: not sampled (--no-loop-sampler)")
    else:
        print(f"event-loop stalls over {STALL * 1000:g} ms: {len(stalls)} in {span:.0f} s", end="")
        print(f", longest {max(stalls):.1f} ms" if stalls else "")
    counts = [count for _, _, count in stamps["claims"]]
    if counts:
        print(
            f"claims: {len(counts)}, {sum(1 for count in counts if not count)} of them empty, "
            f"{sum(counts) / max(1, sum(1 for count in counts if count)):.1f} jobs per claim that took any"
        )
    collections = stamps["collections"]
    for generation in (0, 1, 2):
        pauses = [seconds * 1000 for gen, seconds in collections if gen == generation]
        if pauses:
            print(
                f"garbage collections of generation {generation}: {len(pauses)}, {sum(pauses):.1f} ms in all, "
                f"longest {max(pauses):.2f} ms"
            )


if __name__ == "__main__":
    main()
