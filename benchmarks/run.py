"""pgqueue's benchmark: the same scenarios for pgqueue, PgQueuer and Procrastinate, side by side in one run.

    python benchmarks/run.py [--quick] [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--baseline PATH]

Each library gets a fresh database on the same server (dropped at the end) and its own worker command.
Prints a table of figures with pgqueue's ratios and writes benchmarks/results/<time>.json.
PgQueuer and Procrastinate are optional (`pip install -e '.[bench]'`); a missing one is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ceiling  # noqa: E402
import scenarios  # noqa: E402
from common import Server  # noqa: E402
from private_server import PrivateServer  # noqa: E402
from report import print_table  # noqa: E402
from target_base import Target  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

FULL = {
    "single": 2_000,
    "bulk": 50_000,
    "drain": 50_000,
    "latency": 300,
    "mixed_rate": 2_000,
    "mixed_seconds": 10,
    "idle_seconds": 120,
    "finished_rows": 1_000_000,
    "ceiling_rows": 50_000,
    "maxrate_from": 500,
    "maxrate_to": 8_000,
    "maxrate_seconds": 5,
}
QUICK = {
    "single": 300,
    "bulk": 10_000,
    "drain": 10_000,
    "latency": 100,
    "mixed_rate": 1_000,
    "mixed_seconds": 3,
    "idle_seconds": 30,
    "finished_rows": 100_000,
    "ceiling_rows": 10_000,
    "maxrate_from": 1_000,
    "maxrate_to": 4_000,
    "maxrate_seconds": 2,
}
SCENARIOS = ("enqueue", "bulk", "drain", "sweep", "finished", "mixed", "maxrate", "latency", "idle", "ceiling")
# The sweep's verdict: a rate "falls" when it is below the best of fewer processes by more than this share, or by
# more than the widest run-to-run spread of one setting in the same run, if that is wider (the noise seen).
SWEEP_NOISE_FLOOR = 0.05


def make_targets(names: list[str], baseline: Path | None = None) -> list[Target]:
    from target_pgqueue import Pgqueue, PgqueueBaseline
    from target_pgqueuer import Pgqueuer
    from target_procrastinate import Procrastinate

    known: dict[str, Callable[[], Target]] = {
        "pgqueue": Pgqueue,
        "pgqueuer": Pgqueuer,
        "procrastinate": Procrastinate,
    }
    targets = []
    for name in names:
        if name not in known:
            raise SystemExit(f"error: unknown target {name!r} (known: {', '.join(known)})")
        targets.append(known[name]())
    if baseline is not None:  # right after pgqueue, so the two versions run back to back
        at = next((i + 1 for i, target in enumerate(targets) if target.name == "pgqueue"), len(targets))
        targets.insert(at, PgqueueBaseline(baseline))
    return targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN", DEFAULT_DSN), help="server to benchmark on")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (about two minutes)")
    parser.add_argument("--repeat", type=int, help="runs per figure, the median is kept (default 3; quick 1)")
    parser.add_argument("--targets", default="pgqueue,pgqueuer,procrastinate", help="comma-separated")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated of {', '.join(SCENARIOS)}")
    parser.add_argument("--processes", default=None, help="worker processes in the sweep (default 1,2,4,8; quick 1,2)")
    parser.add_argument("--json", type=Path, help="where to write the results (default benchmarks/results/)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another pgqueue checkout (a folder holding pgqueue/ and migrations/): adds target pgqueue-baseline",
    )
    args = parser.parse_args(argv)
    args.scenario_list = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    repeat = args.repeat or (1 if args.quick else 3)
    processes = [int(p) for p in (args.processes or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    try:
        server = Server(args.dsn)
    except Exception as exc:  # any connection failure: one line, not a traceback
        print(f"error: cannot connect to {args.dsn}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = HERE / "results" / f"workers-{stamp}.log"
    contexts: list[scenarios.Context] = []
    skipped: dict[str, str] = {}
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    started = time.monotonic()
    try:
        for target in make_targets(args.targets.lower().split(","), args.baseline):
            why = target.available()
            if why:
                skipped[target.name] = why
                print(f"skipping {target.name}: {why}", file=sys.stderr)
                continue
            dsn, dbname = server.create_database(target.name.lower())
            try:
                target.install(dsn)
            except Exception as exc:
                skipped[target.name] = f"could not install its schema: {exc}"
                print(f"skipping {target.name}: {skipped[target.name]}", file=sys.stderr)
                continue
            contexts.append(scenarios.Context(server, target, dsn, dbname, args.quick, repeat, log, sizes))
            results[target.name] = {"version": target.version}

        def step(name: str, run: Callable[[scenarios.Context], Any]) -> None:
            for ctx in contexts:
                print(f"[{time.monotonic() - started:6.0f} s] {ctx.target.name}: {name}", file=sys.stderr, flush=True)
                try:
                    results[ctx.target.name][name] = run(ctx)
                except scenarios.ScenarioFailed as exc:
                    failures.append(str(exc))
                    results[ctx.target.name][name] = {"failed": str(exc)}
                    print(f"FAILED: {exc}", file=sys.stderr)
                except Exception as exc:
                    failures.append(f"{ctx.target.name} {name}: {exc}")
                    results[ctx.target.name][name] = {"error": f"{type(exc).__name__}: {exc}"}
                    traceback.print_exc()

        chosen = args.scenario_list
        if "enqueue" in chosen:
            step("enqueue_single", scenarios.enqueue_single)
            if any(ctx.target.name.startswith("pgqueue") for ctx in contexts):
                step_async_enqueue(contexts, results)
        if "bulk" in chosen:
            step("enqueue_bulk", scenarios.enqueue_bulk)
        if "drain" in chosen:
            step("drain_1_process", lambda ctx: scenarios.drain(ctx, 1, ctx.target.default_concurrency))
        if "sweep" in chosen:
            for count in processes:
                step(f"drain_{count}_processes", lambda ctx, c=count: _sweep(ctx, c))
            for ctx in contexts:
                results[ctx.target.name]["sweep"] = sweep_summary(
                    ctx.target.default_concurrency, results[ctx.target.name], processes
                )
        if "finished" in chosen:
            step(
                "drain_with_finished_rows",
                lambda ctx: scenarios.drain(
                    ctx, 1, ctx.target.default_concurrency, preload=sizes["finished_rows"], repeat=1
                ),
            )
        if "mixed" in chosen:
            step("mixed", scenarios.mixed)
        if "maxrate" in chosen:
            step("maxrate", scenarios.maxrate)
        if "latency" in chosen:
            step("idle_latency", scenarios.idle_latency)
        if "idle" in chosen:
            print(f"[{time.monotonic() - started:6.0f} s] idle cost, all together", file=sys.stderr, flush=True)
            idle_contexts = _idle_contexts(server, contexts)
            try:
                together = scenarios.idle_cost([idle_contexts.get(ctx.target.name, ctx) for ctx in contexts])
                for name, figures in together.items():
                    results[name]["idle_cost"] = figures
            except Exception as exc:
                failures.append(f"idle cost: {exc}")
                traceback.print_exc()
            finally:
                _stop_idle_server(idle_contexts)
        if "ceiling" in chosen:
            for ctx in contexts:
                if ctx.target.name == "pgqueue":
                    print(f"[{time.monotonic() - started:6.0f} s] pgbench ceiling", file=sys.stderr, flush=True)
                    try:
                        results["pgbench"] = ceiling.run(
                            ctx.dsn, sizes["ceiling_rows"], worker_clients=tuple(processes)
                        )
                    except Exception as exc:
                        failures.append(f"pgbench ceiling: {exc}")
                        results["pgbench"] = {"error": f"{type(exc).__name__}: {exc}"}
                        traceback.print_exc()
    finally:
        server.drop_all()

    document = {
        "command": " ".join([Path(sys.executable).name, "benchmarks/run.py", *(argv or sys.argv[1:])]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "postgresql": server.version},
        "quick": args.quick,
        "repeat": repeat,
        "sizes": sizes,
        "skipped": skipped,
        "failures": failures,
        "results": results,
        "seconds": time.monotonic() - started,
    }
    out = args.json or HERE / "results" / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2, default=str))
    print_table(document)
    print(f"\nJSON: {out}  (worker logs: {log})")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def _idle_contexts(server: Server, contexts: list[scenarios.Context]) -> dict[str, Any]:
    """Each library in its own database on a private server with pg_stat_statements, when one can be made."""
    private = PrivateServer(server.version.split(".")[0])
    dsn = private.start()
    if dsn is None:
        print("idle cost: no private server with pg_stat_statements; counting transactions", file=sys.stderr)
        return {}
    idle_server = Server(dsn)
    made: dict[str, Any] = {"": (private, idle_server)}
    for ctx in contexts:
        idle_dsn, dbname = idle_server.create_database(ctx.target.name.lower())
        ctx.target.install(idle_dsn)
        made[ctx.target.name] = scenarios.Context(
            **{**ctx.__dict__, "server": idle_server, "dsn": idle_dsn, "dbname": dbname}
        )
    return made


def _stop_idle_server(made: dict[str, Any]) -> None:
    if "" in made:
        private, idle_server = made[""]
        idle_server.drop_all()
        private.stop()


def _sweep(ctx: scenarios.Context, processes: int) -> dict[str, Any]:
    # The default setting has its medians (the process curve is read from it); the others one run each (the sweep
    # is many drains), for the best-setting rows, and only in the full run.
    default = ctx.target.default_concurrency
    figures = {str(default): scenarios.drain(ctx, processes, default)}
    if not ctx.quick:
        figures.update({str(c): scenarios.drain(ctx, processes, c, repeat=1) for c in ctx.target.sweep if c != default})
    return figures


def sweep_summary(concurrency: int, results: dict[str, Any], processes: list[int]) -> dict[str, Any]:
    """The drain rate at the default concurrency by process count, and whether it never falls within the noise."""
    counts, rates, spreads = [], [], []
    for count in processes:
        figure = results.get(f"drain_{count}_processes", {}).get(str(concurrency))
        if not isinstance(figure, dict) or not figure.get("jobs_per_s"):
            continue
        counts.append(count)
        rates.append(figure["jobs_per_s"])
        runs = figure.get("runs") or []
        if len(runs) > 1:
            spreads.append((max(runs) - min(runs)) / figure["jobs_per_s"])
    band = max([SWEEP_NOISE_FLOOR, *spreads])
    falls = []
    for i in range(1, len(rates)):
        best = max(range(i), key=lambda j: rates[j])
        if rates[i] < (1 - band) * rates[best]:
            falls.append(f"{counts[i]} processes: {rates[i]:,.0f}/s, {1 - rates[i] / rates[best]:.0%} under "
                         f"{counts[best]} processes' {rates[best]:,.0f}/s")  # fmt: skip
    return {
        "concurrency": concurrency,
        "processes": counts,
        "jobs_per_s": rates,
        "noise_band": band,
        "noise_band_from": "floor" if band == SWEEP_NOISE_FLOOR else "widest run-to-run spread",
        "never_falls": not falls if len(rates) > 1 else None,
        "falls": falls,
    }


def step_async_enqueue(contexts: list[scenarios.Context], results: dict[str, dict[str, Any]]) -> None:
    from target_pgqueue import Pgqueue, PgqueueBaseline

    for ctx in contexts:
        if isinstance(ctx.target, PgqueueBaseline):
            target: Pgqueue = PgqueueBaseline(ctx.target.path, api="async")
        elif ctx.target.name == "pgqueue":
            target = Pgqueue(api="async")
        else:
            continue
        async_ctx = scenarios.Context(**{**ctx.__dict__, "target": target})
        results[ctx.target.name]["enqueue_single_async"] = scenarios.enqueue_single(async_ctx)


if __name__ == "__main__":
    sys.exit(main())
