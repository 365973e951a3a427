"""What the commands share: the Typer app, the --dsn and --app options, finding and checking the DSN."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
import typer

from pgqueue import settings
from pgqueue.cli.errors import CliError
from pgqueue.settings import configured_dsn, resolve_dsn
from pgqueue.store.admin import BIGINT_MAX, BIGINT_MIN
from pgqueue.text import first_line

app = typer.Typer(
    name="pgqueue",
    help="Durable background jobs and cron on PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cron_app = typer.Typer(help="Cron expressions and your app's schedules.", no_args_is_help=True)
app.add_typer(cron_app, name="cron")

# Job ids are bigint, other numbers int: a larger number is a usage error rather than a database error.
JOB_ID_RANGE = {"min": BIGINT_MIN, "max": BIGINT_MAX}
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

DsnOption = Annotated[
    str | None,
    typer.Option(settings.DSN.flag, envvar=list(settings.DSN_ENV_VARS), help=settings.DSN.help, show_default=False),
]
AppOption = Annotated[
    str, typer.Option(settings.APP.flag, settings.APP.short, envvar="PGQUEUE_APP", help=settings.APP.help)
]


def dsn_for(explicit: str | None, fallback: str | None = None) -> str:
    """The DSN to use (--dsn, $PGQUEUE_DSN, $DATABASE_URL, the app's, else the embedded server), checked for
    syntax first: libpq's own complaint about a malformed one quotes it whole, password and all."""
    dsn = configured_dsn(explicit) or fallback
    if dsn is None:
        return resolve_dsn(None)
    check_dsn(dsn, "the DSN")
    return dsn


def check_dsn(dsn: str, name: str) -> None:
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise CliError(f"{name} is not a valid PostgreSQL DSN: {first_line(exc)}") from None


@contextmanager
def connect(dsn: str | None, fallback: str | None = None) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn_for(dsn, fallback), autocommit=True, connect_timeout=10) as conn:
        yield conn
