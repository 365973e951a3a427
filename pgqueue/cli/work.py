"""`pgqueue work`: its options are made from the settings' definitions (pgqueue/settings.py), so each worker
setting has its flag, environment variable, default and bounds from one place, and a supervisor passes its
children exactly the settings given."""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

import typer

from pgqueue import settings
from pgqueue.cli.common import AppOption, DsnOption, app, check_dsn, dsn_for
from pgqueue.cli.errors import CliError, friendly_errors, setup_logging
from pgqueue.settings import Setting, WorkerSettings, normalize_dsn


def run_work(app_spec: str, dsn: str | None, workers: int, verbose: bool, **given: Any) -> None:
    """Run workers for the tasks of --app until SIGINT/SIGTERM (or, with --burst, until idle)."""
    setup_logging(verbose, given.get("log_format") or "text")
    from pgqueue.cli.app_loader import load_queue
    from pgqueue.cli.supervisor import exit_with_parent, supervise
    from pgqueue.worker import Worker

    the_queue = load_queue(app_spec)
    resolved = dsn_for(dsn, the_queue.configured_dsn)
    if given.get("listen_dsn"):
        given["listen_dsn"] = normalize_dsn(given["listen_dsn"])
        check_dsn(given["listen_dsn"], "--listen-dsn")
    given["queues"] = list(given["queues"]) if given.get("queues") else None
    worker_settings = WorkerSettings(**given)
    if workers > 1:
        # Each process serves its own metrics, on ports from --metrics-port up (one per process rather than
        # prometheus_client's multiprocess mode: no shared directory to manage, and callback gauges work).
        port = worker_settings.metrics_port
        common = dataclasses.replace(worker_settings, metrics_port=None) if port is not None else worker_settings
        if port is not None and port + workers - 1 > 65535:
            raise CliError(f"--metrics-port {port} with --workers {workers} needs ports up to {port + workers - 1}")
        forwarded = ["--app", app_spec, *common.command_line(), *(["--verbose"] if verbose else [])]
        os.environ.update(worker_settings.environment())  # inherited: keeps a password off the command line
        per_child = (lambda slot: ["--metrics-port", str(port + slot)]) if port is not None else None
        raise typer.Exit(supervise(workers, forwarded, resolved, per_child=per_child))
    the_queue.dsn = resolved
    exit_with_parent()
    Worker(the_queue, worker_settings, dsn=resolved).run()


def _option(definition: Setting, kind: Any, default: Any) -> Any:
    """The Typer option of one setting: `Annotated[type, typer.Option(...)]`."""
    decls = [definition.flag, *([definition.short] if definition.short else [])]
    options: dict[str, Any] = {"envvar": definition.env, "help": definition.help, "show_envvar": True}
    if definition.default_text is not None:
        options["show_default"] = definition.default_text
    if definition.secret:
        options["show_default"] = definition.default_text or False
    base = _unoptional(kind)
    if definition.parse is not None or (definition.above and base in (int, float)):
        options["parser"] = _parser(definition, base)
        options["metavar"] = "DURATION" if base is timedelta else base.__name__.upper()
    elif definition.minimum is not None and base in (int, float):
        options["min"] = base(definition.minimum)
    return Annotated[kind, typer.Option(*decls, **options)]


def _unoptional(kind: Any) -> Any:
    """`float` for `float | None`; any other type as it is."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return kind


def _parser(definition: Setting, base: type) -> Callable[[str], Any]:
    def parse(text: Any) -> Any:
        if not isinstance(text, str):  # the default, converted too
            return text
        value = definition.parse(text) if definition.parse is not None else base(text)
        definition.check(value)
        return value

    return parse


def _signature() -> inspect.Signature:
    """work(app_spec, dsn, <every worker setting>, workers, verbose), each an option built from its definition."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    hints = typing.get_type_hints(WorkerSettings)
    parameters = [
        inspect.Parameter("app_spec", keyword, annotation=AppOption),
        inspect.Parameter("dsn", keyword, default=None, annotation=DsnOption),
    ]
    for definition in settings.worker_settings():
        default = WorkerSettings.field_default(definition.name)
        parameters.append(
            inspect.Parameter(
                definition.name,
                keyword,
                default=default,
                annotation=_option(definition, hints[definition.name], default),
            )
        )
    workers = Annotated[int, typer.Option(settings.WORKERS.flag, min=1, help=settings.WORKERS.help)]
    verbose = Annotated[bool, typer.Option(settings.VERBOSE.flag, settings.VERBOSE.short, help=settings.VERBOSE.help)]
    parameters += [
        inspect.Parameter("workers", keyword, default=1, annotation=workers),
        inspect.Parameter("verbose", keyword, default=False, annotation=verbose),
    ]
    return inspect.Signature(parameters, return_annotation=None)


def work(**options: Any) -> None:
    run_work(options.pop("app_spec"), options.pop("dsn"), options.pop("workers"), options.pop("verbose"), **options)


work.__doc__ = run_work.__doc__
work.__signature__ = _signature()  # type: ignore[attr-defined]
work.__annotations__ = {p.name: p.annotation for p in work.__signature__.parameters.values()}  # type: ignore[attr-defined]
app.command()(friendly_errors(work))
