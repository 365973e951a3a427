"""`pgqueue dashboard`: serve the web dashboard (the optional extra: pip install "pgqueue[dashboard]")."""

from __future__ import annotations

from typing import Annotated

import typer

from pgqueue.cli.common import DsnOption, app, dsn_for
from pgqueue.cli.errors import friendly_errors, setup_logging


@app.command()
@friendly_errors
def dashboard(
    host: Annotated[str, typer.Option(help="Address to listen on; not loopback only with --auth.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8484,
    read_only: Annotated[bool, typer.Option("--read-only", help="Hide and refuse every action.")] = False,
    auth: Annotated[
        str | None,
        typer.Option(envvar="PGQUEUE_DASHBOARD_AUTH", help="USER:PASSWORD for HTTP Basic auth.", show_default=False),
    ] = None,
    dsn: DsnOption = None,
) -> None:
    """Serve the web dashboard (needs the extra: pip install "pgqueue[dashboard]")."""
    from pgqueue.dashboard.server import UsageError, serve

    setup_logging(False)
    try:
        serve(dsn=dsn_for(dsn), host=host, port=port, read_only=read_only, auth=auth)
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
