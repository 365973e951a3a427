"""The terminal table: one row per figure, one column per library, and pgqueue's advantage as a ratio."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Getter = Callable[[dict[str, Any]], float | None]


def _get(*path: str) -> Getter:
    def get(results: dict[str, Any]) -> float | None:
        value: Any = results
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value if isinstance(value, int | float) else None

    return get


def _best(scenario: str) -> Getter:
    def get(results: dict[str, Any]) -> float | None:
        runs = results.get(scenario)
        if not isinstance(runs, dict):
            return None
        rates = [r.get("jobs_per_s") for r in runs.values() if isinstance(r, dict)]
        rates = [r for r in rates if isinstance(r, int | float)]
        return max(rates) if rates else None

    return get


def _best_setting(scenario: str) -> Callable[[dict[str, Any]], str]:
    def get(results: dict[str, Any]) -> str:
        runs = results.get(scenario)
        if not isinstance(runs, dict):
            return ""
        rated = [(r.get("jobs_per_s") or 0, k) for k, r in runs.items() if isinstance(r, dict)]
        return f" @{max(rated)[1]}" if rated else ""

    return get


def _default_setting(scenario: str) -> Getter:
    """The rate at the library's default concurrency (the sweep summary names it)."""

    def get(results: dict[str, Any]) -> float | None:
        concurrency = results.get("sweep", {}).get("concurrency")
        return _get(scenario, str(concurrency), "jobs_per_s")(results) if concurrency is not None else None

    return get


def _top_step(results: dict[str, Any]) -> str:
    return " (top step)" if results.get("maxrate", {}).get("top_step_reached") else ""


def _p99_bound(document: dict[str, Any]) -> str:
    bounds = {r["maxrate"].get("p99_bound_ms") for r in document["results"].values() if "maxrate" in r}
    return ", ".join(f"{b:g}" for b in bounds if b is not None) or "?"


def rows(document: dict[str, Any]) -> list[tuple[str, Getter, bool, Callable[[dict[str, Any]], str] | None]]:
    """(label, getter, higher is better, optional note per library)."""
    sizes = document["sizes"]
    table: list[tuple[str, Getter, bool, Callable[[dict[str, Any]], str] | None]] = [
        ("enqueue, one per transaction (jobs/s)", _get("enqueue_single", "jobs_per_s"), True, None),
        ("  pgqueue's async API (jobs/s)", _get("enqueue_single_async", "jobs_per_s"), True, None),
        (f"bulk enqueue of {sizes['bulk']:,} (jobs/s)", _get("enqueue_bulk", "jobs_per_s"), True, None),
        ("drain, 1 process, default settings (jobs/s)", _get("drain_1_process", "jobs_per_s"), True, None),
        ("  database transactions per job", _get("drain_1_process", "transactions_per_job"), False, None),
    ]
    for key in sorted(
        {k for r in document["results"].values() for k in r if k.startswith("drain_") and k.endswith("_processes")},
        key=lambda k: int(k.split("_")[1]),
    ):
        count = key.split("_")[1]
        processes = "1 process" if count == "1" else f"{count} processes"
        table.append((f"drain, {processes}, default settings (jobs/s)", _default_setting(key), True, None))
        if not document.get("quick"):
            table.append(("  best setting (jobs/s)", _best(key), True, _best_setting(key)))
    table += [
        (
            f"drain with {sizes['finished_rows']:,} finished rows (jobs/s)",
            _get("drain_with_finished_rows", "jobs_per_s"),
            True,
            None,
        ),
        (f"mixed, {sizes['mixed_rate']:,} jobs/s offered: done (jobs/s)", _get("mixed", "completed_per_s"), True, None),
        ("  pick-up p50 under load (ms)", _get("mixed", "p50_ms"), False, None),
        ("  pick-up p99 under load (ms)", _get("mixed", "p99_ms"), False, None),
        (
            f"max offered rate with pick-up p99 < {_p99_bound(document)} ms (jobs/s)",
            _get("maxrate", "max_rate_per_s"),
            True,
            _top_step,
        ),
        ("idle pick-up p50 (ms, from the enqueue call)", _get("idle_latency", "p50_ms"), False, None),
        ("idle pick-up p95 (ms)", _get("idle_latency", "p95_ms"), False, None),
        ("idle pick-up p99 (ms)", _get("idle_latency", "p99_ms"), False, None),
        ("idle worker: statements/s", _get("idle_cost", "statements_per_s"), False, None),
        ("idle worker: connections", _get("idle_cost", "connections"), False, None),
        ("idle worker: CPU s per minute", _get("idle_cost", "cpu_s_per_min"), False, None),
    ]
    return table


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(document: dict[str, Any]) -> None:
    results = {k: v for k, v in document["results"].items() if k != "pgbench"}
    names = list(results)
    others = [n for n in names if n != "pgqueue"]
    header = ["figure", *[f"{n} {results[n].get('version', '')}".strip() for n in names]]
    header += [f"pgqueue vs {n}" for n in others if "pgqueue" in results]
    lines = []
    for label, get, higher, note in rows(document):
        values = {n: get(results[n]) for n in names}
        if all(v is None for v in values.values()):
            continue
        cells = [
            label,
            *[_fmt(values[n]) + (note(results[n]) if note and values[n] is not None else "") for n in names],
        ]
        if "pgqueue" in results:
            for other in others:
                mine, theirs = values.get("pgqueue"), values.get(other)
                if mine and theirs:
                    cells.append(f"{(mine / theirs) if higher else (theirs / mine):.2f}x")
                else:
                    cells.append("-")
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for cells in lines:
        print(
            " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        )
    print("(ratios: pgqueue's advantage, higher is better for pgqueue in every row)")
    _print_ceiling(document)
    _print_sweep(document)
    _print_maxrate(document)


def _print_ceiling(document: dict[str, Any]) -> None:
    ceiling = document["results"].get("pgbench")
    if not ceiling:
        return
    print("\npgbench ceiling (pgqueue's own SQL, no Python in the loop):")
    if "skipped" in ceiling:
        print(f"  skipped: {ceiling['skipped']}")
        return
    for key, value in ceiling.items():
        print(f"  {key}: {value:,.0f}" if isinstance(value, int | float) else f"  {key}: {value}")
    pgqueue = document["results"].get("pgqueue", {})
    drain = _get("drain_1_process", "jobs_per_s")(pgqueue)
    claim16 = ceiling.get("claim_complete_batch16_clients1_rows_per_s")
    if drain and claim16:
        print(f"  pgqueue drain, 1 process, default concurrency 16: {drain / claim16:.2f} of the batch-16 ceiling")
    single = _get("enqueue_single", "jobs_per_s")(pgqueue)
    insert = ceiling.get("insert_one_per_tx_clients1_per_s")
    if single and insert:
        print(f"  pgqueue enqueue, one per transaction: {single / insert:.2f} of the single-insert ceiling")
    floor = ceiling.get("trivial_insert_bare_psycopg_per_s")
    if single and floor:
        print(f"  pgqueue enqueue, one per transaction: {single / floor:.2f} of a one-int insert by bare psycopg")


def _print_sweep(document: dict[str, Any]) -> None:
    """The drain rate (default settings) by process count, beside pgbench running the worker's claim statement
    with as many clients; then, per library, whether the rate never falls as processes are added."""
    summaries = {n: r["sweep"] for n, r in document["results"].items() if isinstance(r.get("sweep"), dict)}
    if not summaries:
        return
    ceiling = document["results"].get("pgbench") or {}
    batch = next((k.split("_")[2] for k in ceiling if k.startswith("worker_claim_batch")), None)
    counts = sorted({c for s in summaries.values() for c in s["processes"]})
    names = list(summaries)
    header = ["processes", *[f"{n} (jobs/s)" for n in names]]
    if batch:
        header += [f"pgbench, worker's claim of {batch.removeprefix('batch')}, as many clients (rows/s)"]
        header += ["pgqueue / pgbench"] if "pgqueue" in names else []
    lines = []
    for count in counts:
        rates = {n: dict(zip(s["processes"], s["jobs_per_s"], strict=True)).get(count) for n, s in summaries.items()}
        cells = [str(count), *[_fmt(rates[n]) for n in names]]
        if batch:
            bound = ceiling.get(f"worker_claim_{batch}_clients{count}_rows_per_s")
            cells.append(_fmt(bound))
            if "pgqueue" in names:  # the statement is pgqueue's: the share is only pgqueue's to read
                cells.append(f"{rates['pgqueue'] / bound:.2f}" if rates["pgqueue"] and bound else "-")
        lines.append(cells)
    print("\ndrain by worker processes (default settings; medians of the runs):")
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    print("  " + " | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for cells in lines:
        print("  " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    for name, summary in summaries.items():
        band = f"noise band {summary['noise_band']:.0%} ({summary['noise_band_from']})"
        if summary["never_falls"] is None:
            verdict = "one process count only"
        elif summary["never_falls"]:
            verdict = "never falls as processes are added"
        else:
            verdict = "falls: " + "; ".join(summary["falls"])
        print(f"  {name}: {verdict}, {band}")


def _print_maxrate(document: dict[str, Any]) -> None:
    found = {n: r["maxrate"] for n, r in document["results"].items() if isinstance(r.get("maxrate"), dict)}
    if not found:
        return
    print("\noffered rate steps, one worker (default settings): pick-up p50 / p99 (ms)")
    for name, figures in found.items():
        if "steps" not in figures:
            print(f"  {name}: {figures}")
            continue
        steps = ", ".join(
            f"{s['offered_per_s']:,}/s: {_fmt(s['p50_ms'])} / {_fmt(s['p99_ms'])}" for s in figures["steps"]
        )
        best = figures["max_rate_per_s"]
        answer = f"{best:,} jobs/s" if best else "none of the steps"
        why = "the top step" if figures["top_step_reached"] else "not the top step"
        why += "; missed: " + ", ".join(figures["missed"]) if figures["missed"] else ""
        print(f"  {name}: {steps}")
        print(f"    highest with p99 < {figures['p99_bound_ms']:g} ms: {answer} ({why})")
