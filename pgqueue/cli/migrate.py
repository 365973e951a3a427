"""`pgqueue migrate` and `pgqueue grant`: the schema and the roles' privileges."""

from __future__ import annotations

from typing import Annotated

import typer

from pgqueue.cli.common import DsnOption, app, connect, dsn_for
from pgqueue.cli.errors import CliError, friendly_errors, note, safe
from pgqueue.text import first_line


@app.command()
@friendly_errors
def migrate(dsn: DsnOption = None) -> None:
    """Create or upgrade pgqueue's tables (schema `pgqueue`). Safe to run again and concurrently."""
    from alembic.util import CommandError

    from pgqueue.store import migrate as migrations

    resolved = dsn_for(dsn)
    try:
        before = migrations.current_revision(resolved)
        migrations.upgrade(resolved)
        after = migrations.current_revision(resolved)
    except CommandError as exc:  # e.g. the database is at a revision this pgqueue does not know (a newer one's)
        raise CliError(f"cannot migrate: {first_line(exc)}") from None
    # The revisions are read from the database: printed escaped like any text from there.
    if before == after:
        typer.echo(safe(f"pgqueue schema is up to date (revision {after})"))
    else:
        typer.echo(safe(f"pgqueue schema migrated: {before or 'empty'} -> {after}"))


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
    from pgqueue.store import grants

    if app_role is None and worker_role is None:
        raise typer.BadParameter("give --app-role, --worker-role or both")
    if print_only:
        typer.echo(grants.script(app_role=app_role, worker_role=worker_role), nl=False)
        return
    with connect(dsn) as conn:
        if not check:
            grants.apply(conn, app_role=app_role, worker_role=worker_role)
        lacking = grants.missing(conn, app_role=app_role, worker_role=worker_role)
    for line in lacking:
        note(f"missing: {line}")
    if lacking:
        raise typer.Exit(1)
    roles = " and ".join(
        f"{kind} role {safe(role)}" for kind, role in (("app", app_role), ("worker", worker_role)) if role
    )
    typer.echo(f"{roles}: {'every privilege present' if check else 'privileges granted'}")
