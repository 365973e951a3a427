"""`pgqueue enqueue`, `retry-failed`, `cancel` and `status`: jobs by hand."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from pgqueue.cli.common import INT_MAX, INT_MIN, JOB_ID_RANGE, DsnOption, app, connect, dsn_for
from pgqueue.cli.errors import CliError, fail, friendly_errors, note
from pgqueue.cli.filters import (
    ArgsFilter,
    JsonOutput,
    MetaFilter,
    QueueFilter,
    SinceFilter,
    TaskFilter,
    job_filters,
    parse_json_object,
    parse_status,
)
from pgqueue.cli.tables import format_table
from pgqueue.store import admin
from pgqueue.store.schema import JOB_STATUSES
from pgqueue.store.statements import JobFilters
from pgqueue.text import clip

IDS_LISTED = 20  # ids printed in a summary line


@app.command()
@friendly_errors
def enqueue(
    task: Annotated[str, typer.Argument(help="Task name, e.g. send_email.")],
    args: Annotated[
        str, typer.Option("--args", help='Keyword arguments as a JSON object, e.g. \'{"to": "a@b.c"}\'.')
    ] = "{}",
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue (default: the task's).")] = None,
    delay: Annotated[str | None, typer.Option(help="Run after this long: 10s, 5m, 2h, 1d.")] = None,
    run_at: Annotated[str | None, typer.Option("--run-at", help="Run at this ISO 8601 time (with offset).")] = None,
    priority: Annotated[int | None, typer.Option(min=INT_MIN, max=INT_MAX, help="Higher runs first.")] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1, max=INT_MAX, help="Attempts before the job fails.")] = None,
    meta: Annotated[
        str | None, typer.Option("--meta", help="What the job is about, a JSON object: '{\"order_id\": 42}'.")
    ] = None,
    after: Annotated[
        list[int] | None,
        typer.Option("--after", **JOB_ID_RANGE, help="Wait until this job has completed (repeatable)."),
    ] = None,
    on_failure: Annotated[
        str,
        typer.Option("--on-failure", help="With --after, when a parent fails or is cancelled: cancel or run."),
    ] = "cancel",
    app_spec: Annotated[
        str | None,
        typer.Option("--app", "-a", envvar="PGQUEUE_APP", help="Your Queue's module: checks the task and args."),
    ] = None,
    dsn: DsnOption = None,
) -> None:
    """Queue one job and print its id."""
    from pgqueue.queue.queue import Queue

    try:
        parsed_args = json.loads(args)
    except ValueError as exc:
        raise CliError(f"--args is not valid JSON: {exc}") from None
    except RecursionError:
        raise CliError("--args is nested too deeply") from None
    if not isinstance(parsed_args, dict):
        raise CliError("--args must be a JSON object of keyword arguments, e.g. '{\"order_id\": 42}'")
    meta_value = json.loads(parse_json_object("--meta", meta)) if meta is not None else None
    delay_value = _parse_delay(delay) if delay is not None else None
    when = _parse_when(run_at) if run_at is not None else None
    if app_spec:
        from pgqueue.cli.app_loader import load_queue

        the_queue = load_queue(app_spec)
    else:
        # Without the app the task cannot be checked: accept any name, as a SQL INSERT would.
        the_queue = Queue()
        the_queue.task(name=task)(_unchecked_handler)
    the_queue.dsn = dsn_for(dsn, the_queue.configured_dsn)
    try:
        job_id = the_queue.enqueue(
            task, parsed_args, queue=queue, delay=delay_value, run_at=when, priority=priority,
            max_attempts=max_attempts, meta=meta_value, after=after, on_failure=on_failure,
        )  # fmt: skip
    finally:
        the_queue.close()
    typer.echo(job_id)
    if not app_spec:
        typer.echo(f"note: task {task!r} was not checked (pass --app to check its name and arguments)", err=True)


def id_list(ids: list[int]) -> str:
    """`1, 2, 3` or, for many, the first IDS_LISTED and how many more (--json lists them all)."""
    shown = ", ".join(map(str, ids[:IDS_LISTED]))
    return shown + (f", ... ({len(ids) - IDS_LISTED} more)" if len(ids) > IDS_LISTED else "")


def _unchecked_handler(**kwargs: Any) -> None:
    """Stands in for a task the CLI cannot see; never run."""


def _parse_delay(text: str) -> timedelta:
    from pgqueue.durations import parse_duration

    try:
        delay = parse_duration(text)
        datetime.now(UTC) + delay  # can the job's run_at be written down at all?
    except ValueError as exc:
        raise CliError(f"--delay: {exc}") from None
    except OverflowError:
        raise CliError(f"--delay {clip(text, 40)!r} is too long: the job would run after the year 9999") from None
    return delay


def _parse_when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--run-at {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00:00+01:00)") from None
    if when.tzinfo is None:
        raise CliError(f"--run-at {text!r} needs a UTC offset (e.g. +00:00)")
    return when


@app.command("retry-failed")
@friendly_errors
def retry_failed(
    task: TaskFilter = None,
    queue: QueueFilter = None,
    job_id: Annotated[
        list[int] | None,
        typer.Option("--id", **JOB_ID_RANGE, help="Only these job ids (repeatable)."),
    ] = None,
    since: SinceFilter = None,
    args_contain: ArgsFilter = None,
    meta_contain: MetaFilter = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be retried.")] = False,
    as_json: JsonOutput = False,
    dsn: DsnOption = None,
) -> None:
    """Send failed jobs back to pending (attempts reset, error history kept); print how many, and which.

    A job whose dedup key a pending or running job holds stays failed and is listed on stderr with that job's
    id (exit status 1); so are all but the newest of failed jobs sharing a key.
    """
    filters = job_filters(task=task, queue=queue, since=since, args_contain=args_contain, meta_contain=meta_contain)
    with connect(dsn) as conn:
        result = admin.retry_failed(
            conn,
            task=filters.task,
            queue=filters.queue,
            ids=job_id or None,
            dry_run=dry_run,
            since=filters.since,
            args=filters.args,
            meta=filters.meta,
        )
    if as_json:
        refused = [{"id": r.job_id, "reason": r.reason} for r in result.refused]
        typer.echo(json.dumps({"dry_run": dry_run, "retried": result.retried, "refused": refused}))
    else:
        listed = f": {id_list(result.retried)}" if result.retried else ""
        typer.echo(f"{len(result.retried)} failed job(s) {'would be retried' if dry_run else 'retried'}{listed}")
        for refusal in result.refused:
            note(f"{'would not retry' if dry_run else 'not retried'}: {refusal.reason}")
    if not result.complete:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def cancel(
    job_ids: Annotated[
        list[int] | None, typer.Argument(**JOB_ID_RANGE, help="Ids of the jobs to cancel (or use the filters).")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", "-s", help="With filters: only pending or only running jobs.")
    ] = None,
    task: TaskFilter = None,
    queue: QueueFilter = None,
    since: SinceFilter = None,
    args_contain: ArgsFilter = None,
    meta_contain: MetaFilter = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Cancel by filter without asking.")] = False,
    as_json: JsonOutput = False,
    dsn: DsnOption = None,
) -> None:
    """Cancel jobs, by id or by filter: pending ones at once; running ones are asked to stop. Never retried.

    By filter (--task, --queue, --since, --args-contain, --status), every pending and running job that matches
    is cancelled, a batch at a time; it asks first unless --yes.
    """
    filters = job_filters(task=task, queue=queue, since=since, args_contain=args_contain, meta_contain=meta_contain)
    chosen = parse_status(status, ("pending", "running"))
    by_filter = filters != JobFilters() or chosen is not None
    if job_ids and by_filter:
        raise CliError("give job ids or filters, not both")
    if not job_ids and not by_filter:
        raise CliError("give the ids of the jobs to cancel, or filters (--task, --queue, --since, --args-contain, ...)")
    with connect(dsn) as conn:
        if job_ids:
            cancelled = admin.cancel(conn, job_ids)
        else:
            if not yes:
                if not sys.stdin.isatty():
                    raise CliError("cancelling by filter: pass --yes to do so without asking")
                typer.confirm("cancel every pending and running job that matches?", abort=True, err=True)
            statuses = (chosen,) if chosen else ("pending", "running")
            cancelled = admin.cancel_matching(conn, filters, statuses=statuses)
    missing = sorted(set(job_ids or ()) - set(cancelled))
    if as_json:
        typer.echo(json.dumps({"cancelled": cancelled, "not_cancelled": missing}))
    else:
        typer.echo(f"cancelled {len(cancelled)} job(s)" + (f": {id_list(cancelled)}" if cancelled else ""))
        if missing:
            note(f"not cancelled (unknown or already finished): {id_list(missing)}")
    if missing:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    all_history: Annotated[
        bool, typer.Option("--all", help="Count finished jobs of every age (a scan of the whole table).")
    ] = False,
    dsn: DsnOption = None,
) -> None:
    """Jobs per queue and status (completed and cancelled: those of the last hour, unless --all), and the age of
    each queue's oldest runnable job."""
    with connect(dsn) as conn:
        report = admin.status(conn, all_history=all_history)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    data = report.as_dict()["queues"]
    statuses = list(JOB_STATUSES)
    rows = [
        [name, *[str(info["jobs"].get(s, 0)) for s in statuses], _age(info["oldest_runnable_seconds"])]
        for name, info in sorted(data.items())
    ]
    if not rows:
        typer.echo("no jobs")
        return
    finished = "" if all_history else " (1h)"
    headers = [f"{s}{finished}" if s in ("completed", "cancelled") else s for s in statuses]
    typer.echo(format_table(["queue", *headers, "oldest runnable"], rows))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# `pgqueue result`'s exit statuses besides 0 (completed), 1 (an error: no such job, database unreachable) and
# 2 (usage): how the job ended, so that a script can tell them apart.
EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMED_OUT = 3, 4, 5


@app.command()
@friendly_errors
def result(
    job_id: Annotated[int, typer.Argument(**JOB_ID_RANGE, help="Id of the job to wait for.")],
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the job to finish (0: only look).", show_default=True)
    ] = 30.0,
    dsn: DsnOption = None,
) -> None:
    """Wait for a job to finish and print its result as JSON (null when it returned none).

    Exit status: 0 completed; 3 failed (its last error on stderr); 4 cancelled; 5 not finished within --timeout;
    1 no such job or another error; 2 usage error.
    """
    from pgqueue.errors import JobCancelled, JobFailed
    from pgqueue.store import results

    if not math.isfinite(timeout) or timeout < 0:
        raise typer.BadParameter(f"{timeout!r} is not a number of seconds, 0 or more", param_hint="'--timeout'")
    try:
        state = results.wait_for_job(dsn_for(dsn), job_id, timeout)
        value = results.outcome(job_id, state, timeout)
    except JobFailed as exc:
        fail(str(exc), code=EXIT_FAILED)
    except JobCancelled as exc:
        fail(str(exc), code=EXIT_CANCELLED)
    except TimeoutError as exc:
        fail(str(exc), code=EXIT_TIMED_OUT)
    typer.echo(json.dumps(value, ensure_ascii=False))
