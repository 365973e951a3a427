"""`pgqueue cron next` and `pgqueue cron list`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import psycopg
import typer

from pgqueue.cli.common import AppOption, DsnOption, connect, cron_app
from pgqueue.cli.errors import CliError, friendly_errors, note
from pgqueue.cli.tables import format_table
from pgqueue.errors import PgQueueError
from pgqueue.store import statements
from pgqueue.store.run import fetch
from pgqueue.text import first_line


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
    from pgqueue.cron.expression import Cron, CronError, parse_timezone

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
    from pgqueue.cli.app_loader import load_queue
    from pgqueue.cron.schedule import describe

    the_queue = load_queue(app_spec)
    schedules = the_queue.schedules
    rows = None
    if schedules:
        try:
            with connect(dsn, the_queue.configured_dsn) as conn:
                rows = fetch(conn, statements.list_schedules([s.name for s in schedules]))
        except psycopg.errors.UndefinedTable:
            typer.echo("note: no pgqueue tables in the database: last fires unknown, next fires computed", err=True)
        except (psycopg.Error, PgQueueError, CliError, RuntimeError) as exc:
            note(f"note: database unavailable ({first_line(exc)}): last fires unknown")
    described = describe(schedules, rows, datetime.now().astimezone())
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return
    if not described:
        typer.echo(f"no schedules in {app_spec}")
        return
    headers = ["name", "cron", "timezone", "task", "state", "last fire", "next fire"]
    keys = ["name", "cron", "timezone", "task", "state", "last_fire_at", "next_fire_at"]
    typer.echo(format_table(headers, [[item[key] or "-" for key in keys] for item in described]))
