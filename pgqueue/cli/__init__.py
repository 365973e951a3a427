"""The `pgqueue` command: thin Typer layer over the library; one-line errors, exit 0 ok, 1 failure, 2 usage.

One module per group of commands: migrate (migrate, grant), work, jobs (enqueue, retry-failed, cancel,
status), queues (queues, queues limit/pause/resume), ops (jobs, show, retry, prune), cron (cron next,
cron list), dashboard, demo. They register on the app of cli/common.py.
"""

from __future__ import annotations

import os
import sys

import typer

from pgqueue.cli import cron, dashboard, demo, jobs, migrate, ops, queues, work
from pgqueue.cli.common import app
from pgqueue.cli.errors import describe_error, safe

__all__ = ["app", "cron", "dashboard", "demo", "jobs", "main", "migrate", "ops", "queues", "work"]


def main() -> None:
    """The `pgqueue` command. Whatever goes wrong, stderr gets one line: `error: ...`, exit 1, or 2 for a usage
    error (an unknown option, a value of the wrong type or out of range)."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # Click's usage errors, worded on one line instead of a boxed panel
        if type(exc).__name__ != "NoArgsIsHelpError":  # whose help has been printed already
            context = getattr(exc, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            typer.echo(f"error: {safe(exc.format_message())}{hint}", err=True)
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
        typer.echo(f"error: {safe(describe_error(exc))}", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
