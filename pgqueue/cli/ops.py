"""`pgqueue jobs`, `show`, `retry` and `prune`: looking at jobs and cleaning up, thin over store/admin.py.

Tables for people, `--json` for scripts. Everything a job row holds was written by whoever could insert it: it
is clipped by the statements and shown escaped (cli/tables.py, text.printable), never raw.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from pgqueue.cli.common import JOB_ID_RANGE, DsnOption, app, connect
from pgqueue.cli.errors import CliError, friendly_errors, note
from pgqueue.cli.filters import (
    ArgsFilter,
    JsonOutput,
    MetaFilter,
    QueueFilter,
    SinceFilter,
    TaskFilter,
    job_filters,
    parse_status,
    parse_window,
)
from pgqueue.cli.jobs import id_list
from pgqueue.cli.tables import format_table
from pgqueue.store import admin
from pgqueue.store.rows import ErrorEntry, JobListing
from pgqueue.store.schema import JOB_STATUSES
from pgqueue.text import clip, printable

MAX_LIMIT = 10_000  # rows `pgqueue jobs` lists at most
CELL = 60  # characters of args and errors in a table cell
SHOW_CLIP = 10_000  # characters of each text `pgqueue show` prints (args, result, error, traceback)
JSON_CLIP = 1_000_000  # the same with --json: scripts get whole values, up to a bound
# args and meta of each row of `pgqueue jobs --json`: 10,000 rows of hand-written megabytes must not make gigabytes
LIST_JSON_CLIP = 10_000
ERRORS_SHOWN = 100  # the newest entries of the error history `pgqueue show` prints


def when(value: datetime | None) -> str:
    """A time from the database, in UTC to the second: `2026-12-02 06:30:01`."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


# -- pgqueue jobs ---------------------------------------------------------------------------------------------


@app.command("jobs")
@friendly_errors
def list_jobs(
    status: Annotated[str | None, typer.Option("--status", "-s", help=f"One of {', '.join(JOB_STATUSES)}.")] = None,
    task: TaskFilter = None,
    queue: QueueFilter = None,
    since: SinceFilter = None,
    args_contain: ArgsFilter = None,
    meta_contain: MetaFilter = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=MAX_LIMIT, help="Rows at most.")] = 50,
    as_json: JsonOutput = False,
    dsn: DsnOption = None,
) -> None:
    """List jobs, newest first, by status, task, queue, age and args."""
    filters = job_filters(task=task, queue=queue, since=since, args_contain=args_contain, meta_contain=meta_contain)
    chosen = parse_status(status, JOB_STATUSES)
    with connect(dsn) as conn:
        found = admin.list_jobs(
            conn, filters, status=chosen, limit=limit, args_clip=LIST_JSON_CLIP if as_json else CELL
        )
    if as_json:
        typer.echo(json.dumps([_listing_json(row) for row in found], indent=2))
        return
    if not found:
        typer.echo("no jobs")
        return
    headers = ["id", "queue", "task", "status", "attempts", "created", "finished", "args", "error"]
    rows = [
        [
            str(row.id),
            clip(row.queue, 40),
            clip(row.task, 40),
            row.status,
            f"{row.attempts}/{row.max_attempts}",
            when(row.created_at),
            when(row.finished_at),
            row.args + ("..." if row.args_length > len(row.args) else ""),
            "" if row.error is None else clip(row.error.splitlines()[0] if row.error.strip() else row.error, CELL),
        ]
        for row in found
    ]
    typer.echo(format_table(headers, rows))
    if len(found) == limit:
        note(f"showing the newest {limit}; pass --limit for more")


def _listing_json(row: JobListing) -> dict[str, Any]:
    return {
        "id": row.id,
        "queue": row.queue,
        "task": row.task,
        "status": row.status,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "priority": row.priority,
        "created_at": iso(row.created_at),
        "run_at": iso(row.run_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        **_json_value("args", row.args, row.args_length),
        **_json_value("meta", row.meta, row.meta_length),
        "error": row.error,
    }


def _json_value(name: str, text: str | None, length: int | None) -> dict[str, Any]:
    """A JSON column for --json output: parsed, or (cut by the statement) its text and `<name>_clipped`, the
    number of characters cut."""
    if text is None:
        return {name: None}
    if length is not None and length > len(text):
        return {name: text, f"{name}_clipped": length - len(text)}
    return {name: json.loads(text)}


# -- pgqueue show ---------------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def show(
    job_id: Annotated[int, typer.Argument(**JOB_ID_RANGE, help="The job's id.")],
    as_json: JsonOutput = False,
    dsn: DsnOption = None,
) -> None:
    """One job: its args, result, every attempt's error with a traceback summary, and its timeline."""
    with connect(dsn) as conn:
        report = admin.show_job(conn, job_id, clip=JSON_CLIP if as_json else SHOW_CLIP, errors_limit=ERRORS_SHOWN)
    if report is None:
        raise CliError(f"no job {job_id}")
    if as_json:
        typer.echo(json.dumps(_report_json(report), indent=2))
        return
    job = report.job
    lines = [
        f"job {job.id}: {printable(clip(job.task, 200))} on queue {printable(clip(job.queue, 200))}",
        f"  status      {job.status}",
        f"  attempts    {job.attempts} of {job.max_attempts}",
        f"  priority    {job.priority}",
    ]
    for label, value in (("worker", job.worker_id), ("dedup key", job.dedup_key), ("schedule", job.schedule)):
        if value is not None:
            lines.append(f"  {label:<11} {printable(clip(value, 200))}")
    lines.append(f"  args        {_pretty(job.args, job.args_length)}")
    if job.meta is not None:
        lines.append(f"  meta        {_pretty(job.meta, job.meta_length)}")
    if job.result is not None:
        lines.append(f"  result      {_pretty(job.result, job.result_length)}")
    if job.error is not None:
        lines.append(f"  last error  {printable(_cut(job.error, job.error_length))}")
    lines.append("timeline (UTC)")
    lines += [f"  {when(at)}  {printable(event)}" for at, event in _timeline(report)]
    if report.errors:
        lines.append(
            "error history" + (f" (newest {len(report.errors)} of {job.error_count})" if report.errors_left_out else "")
        )
        for entry in report.errors:
            lines += [f"  {printable(line)}" for line in _entry_lines(entry)]
    typer.echo("\n".join(lines))


def _cut(text: str, length: int | None) -> str:
    cut = (length or 0) - len(text)
    return text + (f"... [{cut} characters cut]" if cut > 0 else "")


def _pretty(text: str, length: int | None) -> str:
    """A JSON column on one line (escaped by the caller's printable), or its clipped text."""
    if length is not None and length > len(text):
        return printable(_cut(text, length))
    return printable(json.dumps(json.loads(text), ensure_ascii=False))


def traceback_summary(traceback: str | None) -> str | None:
    """The last frame of a Python traceback (`File "x.py", line 3, in handler`), where the error was raised."""
    if not traceback:
        return None
    frames = [line.strip() for line in traceback.splitlines() if line.strip().startswith('File "')]
    return frames[-1] if frames else None


def _entry_lines(entry: ErrorEntry) -> list[str]:
    if entry.kind != "object":
        return [f"#{entry.ordinal} (not an object) {clip(entry.raw or '', SHOW_CLIP)}"]
    counted = {"true": "counted", "false": "not counted"}.get(entry.counted or "", "counted?")
    head = f"attempt {entry.attempt or '?'} ({counted}), worker {entry.worker or '?'}, ended {entry.at or '?'}"
    lines = [head, f"    {(entry.error or '-').strip()}"]
    summary = traceback_summary(entry.traceback)
    if summary:
        lines.append(f"    at {summary}")
    return lines


def _timeline(report: admin.JobReport) -> list[tuple[datetime, str]]:
    """What happened to the job, oldest first: created, each attempt's end (from the history), its state now."""
    job = report.job
    events: list[tuple[datetime, str]] = [(job.created_at, "created")]
    for entry in report.errors:
        at = _parse_time(entry.at)
        if at is not None and entry.kind == "object":
            started = _parse_time(entry.started_at)
            if started is not None:
                events.append((started, f"attempt {entry.attempt} started on {entry.worker or '?'}"))
            events.append((at, f"attempt {entry.attempt} ended: {first_text(entry.error)}"))
    if job.status == "pending":
        events.append((job.run_at, "due" if job.run_at <= job.now else "due (in the future)"))
    if job.status == "running" and job.started_at is not None:
        events.append((job.started_at, f"attempt {job.attempts} started on {job.worker_id or '?'} (running)"))
    if job.status == "running" and job.lease_expires_at is not None:
        events.append((job.lease_expires_at, "lease expires"))
    if job.status in ("completed", "failed", "cancelled") and job.finished_at is not None:
        if job.status == "completed" and job.started_at is not None:
            events.append((job.started_at, f"attempt {job.attempts} started on {job.worker_id or '?'}"))
        events.append((job.finished_at, job.status))
    return sorted(events, key=lambda event: event[0])


def first_text(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return clip(lines[0], 200) if lines else "-"


def _parse_time(text: str | None) -> datetime | None:
    """A time written into the history by the database (`2026-12-02T06:30:01.5+00:00`); None when unreadable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _report_json(report: admin.JobReport) -> dict[str, Any]:
    job = report.job
    return {
        "id": job.id,
        "queue": job.queue,
        "task": job.task,
        "status": job.status,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": iso(job.created_at),
        "run_at": iso(job.run_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "lease_expires_at": iso(job.lease_expires_at),
        "worker_id": job.worker_id,
        "dedup_key": job.dedup_key,
        "schedule": job.schedule,
        **_json_value("args", job.args, job.args_length),
        **_json_value("result", job.result, job.result_length),
        **_json_value("meta", job.meta, job.meta_length),
        "error": job.error,
        "error_count": job.error_count,
        "errors": [
            {
                "attempt": entry.attempt,
                "started_at": entry.started_at,
                "at": entry.at,
                "error": entry.error,
                "traceback_summary": traceback_summary(entry.traceback),
                "traceback": entry.traceback,
                "worker": entry.worker,
                "counted": entry.counted,
            }
            if entry.kind == "object"
            else {"raw": entry.raw}
            for entry in report.errors
        ],
    }


# -- pgqueue retry --------------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def retry(
    job_ids: Annotated[list[int], typer.Argument(**JOB_ID_RANGE, help="Ids of failed jobs to run again.")],
    as_json: JsonOutput = False,
    dsn: DsnOption = None,
) -> None:
    """Send these failed jobs back to pending (attempts reset, error history kept).

    Exit status 1 when any of them stays as it is: unknown, not failed, or its dedup key held by another job.
    """
    with connect(dsn) as conn:
        result = admin.retry_failed(conn, ids=job_ids)
    refused = {refusal.job_id for refusal in result.refused}
    untouched = sorted(set(job_ids) - set(result.retried) - refused)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "retried": result.retried,
                    "refused": [{"id": r.job_id, "reason": r.reason} for r in result.refused],
                    "not_failed_or_unknown": untouched,
                }
            )
        )
    else:
        typer.echo(f"retried {len(result.retried)} job(s)" + (f": {id_list(result.retried)}" if result.retried else ""))
        for refusal in result.refused:
            note(f"not retried: {refusal.reason}")
        if untouched:
            note(f"not retried (unknown or not failed): {id_list(untouched)}")
    if refused or untouched:
        raise typer.Exit(1)


# -- pgqueue prune --------------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete jobs finished longer ago than this: 7d, 12h.")
    ],
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status", "-s", help="completed, failed or cancelled (repeatable; default: completed and cancelled)."
        ),
    ] = None,
    task: TaskFilter = None,
    queue: QueueFilter = None,
    since: SinceFilter = None,
    args_contain: ArgsFilter = None,
    meta_contain: MetaFilter = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting.")] = False,
    batch: Annotated[
        int, typer.Option("--batch", min=1, max=100_000, help="Jobs deleted per transaction.")
    ] = admin.BULK_BATCH,
    as_json: JsonOutput = False,
    dsn: DsnOption = None,
) -> None:
    """Delete finished jobs for good, a small batch per transaction; asks first unless --yes."""
    age = parse_window("--older-than", older_than)
    statuses = list(dict.fromkeys(status or ["completed", "cancelled"]))
    for chosen in statuses:
        parse_status(chosen, admin.PRUNABLE_STATUSES)
    filters = job_filters(task=task, queue=queue, since=since, args_contain=args_contain, meta_contain=meta_contain)
    with connect(dsn) as conn:
        plan = admin.plan_prune(conn, filters, statuses=statuses, older_than=age)
        if plan.total == 0:
            _prune_report({s: 0 for s in statuses}, as_json)
            return
        counts = ", ".join(f"{n} {s}" for s, n in plan.counts.items() if n)
        if not yes:
            if not sys.stdin.isatty():
                raise CliError(f"would delete {plan.total} job(s) ({counts}); pass --yes to do so without asking")
            typer.confirm(f"delete {plan.total} job(s) ({counts}) for good?", abort=True, err=True)
        if plan.total > batch and sys.stderr.isatty():
            with typer.progressbar(length=plan.total, label="pruning", file=sys.stderr) as bar:
                deleted = admin.prune(conn, plan, batch=batch, progress=bar.update)
        else:
            deleted = admin.prune(conn, plan, batch=batch)
    _prune_report(deleted, as_json)


def _prune_report(deleted: dict[str, int], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"deleted": deleted}))
        return
    total = sum(deleted.values())
    detail = ", ".join(f"{n} {s}" for s, n in deleted.items() if n)
    typer.echo(f"deleted {total} job(s)" + (f": {detail}" if detail else ""))
