"""`pgqueue enqueue`, `retry-failed`, `cancel` and `status`: jobs by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from pgqueue.cli.common import INT_MAX, INT_MIN, JOB_ID_RANGE, DsnOption, app, connect, dsn_for
from pgqueue.cli.errors import CliError, friendly_errors, note
from pgqueue.cli.tables import format_table
from pgqueue.store import admin
from pgqueue.store.schema import JOB_STATUSES
from pgqueue.text import clip


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
            max_attempts=max_attempts, after=after, on_failure=on_failure,
        )  # fmt: skip
    finally:
        the_queue.close()
    typer.echo(job_id)
    if not app_spec:
        typer.echo(f"note: task {task!r} was not checked (pass --app to check its name and arguments)", err=True)


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
    task: Annotated[str | None, typer.Option(help="Only jobs of this task.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only jobs of this queue.")] = None,
    job_id: Annotated[
        list[int] | None,
        typer.Option("--id", **JOB_ID_RANGE, help="Only these job ids (repeatable)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be retried.")] = False,
    dsn: DsnOption = None,
) -> None:
    """Send failed jobs back to pending (attempts reset, error history kept); print how many.

    A job whose dedup key a pending or running job holds stays failed and is listed on stderr with that job's
    id (exit status 1); so are all but the newest of failed jobs sharing a key.
    """
    with connect(dsn) as conn:
        result = admin.retry_failed(conn, task=task, queue=queue, ids=job_id or None, dry_run=dry_run)
    typer.echo(f"{len(result.retried)} failed job(s) {'would be retried' if dry_run else 'retried'}")
    for refusal in result.refused:
        note(f"{'would not retry' if dry_run else 'not retried'}: {refusal.reason}")
    if not result.complete:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def cancel(
    job_ids: Annotated[list[int], typer.Argument(**JOB_ID_RANGE, help="Ids of the jobs to cancel.")],
    dsn: DsnOption = None,
) -> None:
    """Cancel jobs: pending ones at once; running ones are asked to stop. Never retried."""
    with connect(dsn) as conn:
        cancelled = admin.cancel(conn, job_ids)
    missing = sorted(set(job_ids) - set(cancelled))
    typer.echo(f"cancelled {len(cancelled)} job(s)" + (f": {', '.join(map(str, cancelled))}" if cancelled else ""))
    if missing:
        typer.echo(f"not cancelled (unknown or already finished): {', '.join(map(str, missing))}", err=True)
        raise typer.Exit(1)


@app.command()
@friendly_errors
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    dsn: DsnOption = None,
) -> None:
    """Jobs per queue and status, and the age of each queue's oldest runnable job."""
    with connect(dsn) as conn:
        report = admin.status(conn)
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
    typer.echo(format_table(["queue", *statuses, "oldest runnable"], rows))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
