"""`pgqueue queues` (per queue: jobs per status, paused or not, its limits; then the declared limits),
`queues limit Q [N|none] [--rate 10/s|none]`, `queues pause Q` and `queues resume Q`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import psycopg
import typer

from pgqueue.cli.common import INT_MAX, DsnOption, app, connect
from pgqueue.cli.errors import CliError, friendly_errors
from pgqueue.cli.tables import format_table
from pgqueue.queue.limits import Rate, check_queue_name, parse_rate
from pgqueue.store import limits
from pgqueue.store.schema import JOB_STATUSES
from pgqueue.text import clip, printable

queues_app = typer.Typer(
    help="Queues: jobs per status, pause and resume, concurrency and rate limits.", invoke_without_command=True
)
app.add_typer(queues_app, name="queues")

QueueArgument = Annotated[str, typer.Argument(help="The queue's name.", show_default=False)]
ForceOption = Annotated[bool, typer.Option("--force", help="Also for a queue that has no jobs, settings or limit yet.")]


@queues_app.callback()
@friendly_errors
def queues_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    dsn: DsnOption = None,
) -> None:
    """Every queue with jobs, settings or a limit: jobs per status, paused or not, its concurrency and rate
    limits; then every declared limit with its running, held and deferred jobs."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(dsn) as conn:
        queues = limits.list_queues(conn)
        declared = limits.list_limits(conn)
    if as_json:
        listing = {
            "queues": [queue.as_dict() for queue in queues],
            "limits": [row._asdict() for row in declared],
        }
        typer.echo(json.dumps(listing, indent=2))
        return
    if not queues and not declared:
        typer.echo("no queues")
        return
    statuses = list(JOB_STATUSES)
    rows = [
        [
            clip(queue.name, 60),
            "paused" if queue.paused else "-",
            str(queue.concurrency) if queue.concurrency is not None else "-",
            queue.rate or "-",
            *[str(queue.jobs.get(status, 0)) for status in statuses],
        ]
        for queue in queues
    ]
    typer.echo(format_table(["queue", "paused", "limit", "rate", *statuses], rows))
    if declared:
        limit_rows = [
            [
                clip(row.name, 60),
                str(row.concurrency) if row.concurrency is not None else "-",
                clip(row.key_arg, 40) if row.key_arg else "-",
                row.rate or "-",
                clip(row.rate_key_arg, 40) if row.rate_key_arg else "-",
                str(row.running),
                str(row.held),
                str(row.deferred),
            ]
            for row in declared
        ]
        typer.echo()
        headers = ["limit", "concurrency", "per arg", "rate", "rate per arg", "running", "held", "deferred"]
        typer.echo(format_table(headers, limit_rows))


@queues_app.command("pause")
@friendly_errors
def pause(queue: QueueArgument, force: ForceOption = False, dsn: DsnOption = None) -> None:
    """Claim no more jobs of this queue (running ones finish), on every worker from its next claim on."""
    name = _queue_name(queue)
    with connect(dsn) as conn:
        _check_known(conn, name, force)
        limits.set_paused(conn, name, True)
    typer.echo(f"queue {printable(name)!r} paused")


@queues_app.command("resume")
@friendly_errors
def resume(queue: QueueArgument, force: ForceOption = False, dsn: DsnOption = None) -> None:
    """Claim this queue's jobs again; its idle workers are woken at once."""
    name = _queue_name(queue)
    with connect(dsn) as conn:
        _check_known(conn, name, force)
        limits.set_paused(conn, name, False)
    typer.echo(f"queue {printable(name)!r} resumed")


@queues_app.command("limit")
@friendly_errors
def limit(
    queue: QueueArgument,
    concurrency: Annotated[
        str | None,
        typer.Argument(
            help="At most this many of the queue's jobs run at once, across all workers; none removes.",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate",
            help="At most this many of the queue's jobs start per second, minute or hour (10/s, 100/m, 5/h), "
            "across all workers; none removes.",
            show_default=False,
        ),
    ] = None,
    force: ForceOption = False,
    dsn: DsnOption = None,
) -> None:
    """Set a queue's concurrency limit and/or its rate limit now, for every worker (one not given stays as it is;
    a limit declared in code is set again by the next worker that starts)."""
    name = _queue_name(queue)
    if concurrency is None and rate is None:
        raise typer.BadParameter("give a concurrency (N or none), --rate (10/s or none), or both", param_hint="LIMIT")
    changes: dict[str, Any] = {}
    if concurrency is not None:
        changes["concurrency"] = _concurrency(concurrency)
    parsed_rate = None
    if rate is not None:
        parsed_rate = _rate(rate)
        changes["rate"] = None if parsed_rate is None else (parsed_rate.starts, parsed_rate.period)
    with connect(dsn) as conn:
        _check_known(conn, name, force)
        woken = limits.set_queue_limit(conn, name, **changes)
    shown = printable(name)
    if "concurrency" in changes:
        value = changes["concurrency"]
        if value is None:
            typer.echo(f"queue {shown!r}: no concurrency limit" + (f" ({woken} held job(s) released)" if woken else ""))
        else:
            typer.echo(f"queue {shown!r}: at most {value} job(s) at once")
    if "rate" in changes:
        if parsed_rate is None:
            typer.echo(f"queue {shown!r}: no rate limit")
        else:
            typer.echo(f"queue {shown!r}: at most {parsed_rate} starts (in any window of that length)")


def _rate(text: str) -> Rate | None:
    """A rate as typed; None for none."""
    if text.strip().lower() == "none":
        return None
    try:
        return parse_rate(text, "--rate")
    except ValueError as exc:
        raise typer.BadParameter(printable(str(exc)), param_hint="--rate") from None


def _queue_name(text: str) -> str:
    try:
        return check_queue_name(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="QUEUE") from None


def _concurrency(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise typer.BadParameter(
            f"{clip(text, 40)!r} is not a whole number (or none)", param_hint="CONCURRENCY"
        ) from None
    if not 1 <= value <= INT_MAX:
        raise typer.BadParameter(f"{value} is not between 1 and {INT_MAX}", param_hint="CONCURRENCY")
    return value


def _check_known(conn: psycopg.Connection[Any], name: str, force: bool) -> None:
    if not force and not limits.queue_known(conn, name):
        raise CliError(f"unknown queue {clip(name, 60)!r}: it has no jobs, settings or limit (--force to go on)")
