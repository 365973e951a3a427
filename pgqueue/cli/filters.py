"""The job filters the operator commands share (`jobs`, `retry-failed`, `cancel`, `prune`): their options, and
the checks that turn what was typed into store.statements.JobFilters, or one line saying what is wrong."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated

import typer

from pgqueue.cli.errors import CliError
from pgqueue.durations import parse_duration
from pgqueue.store.statements import JobFilters
from pgqueue.text import clip

# A duration longer than this cannot be subtracted from now() in every case (timestamps end at 4713 BC); a
# century covers any history anyone keeps.
MAX_DURATION = timedelta(days=36_500)
MAX_JSON_FILTER = 10_000  # characters of an --args-contain filter
MAX_NAME = 1_000  # characters of a --task or --queue filter

TaskFilter = Annotated[str | None, typer.Option("--task", "-t", help="Only jobs of this task.")]
QueueFilter = Annotated[str | None, typer.Option("--queue", "-q", help="Only jobs of this queue.")]
SinceFilter = Annotated[
    str | None, typer.Option("--since", help="Only jobs created at most this long ago: 30m, 1h, 7d.")
]
ArgsFilter = Annotated[
    str | None,
    typer.Option("--args-contain", help="Only jobs whose args contain this JSON object, e.g. '{\"order_id\": 42}'."),
]
MetaFilter = Annotated[
    str | None,
    typer.Option("--meta-contain", help="Only jobs whose meta contains this JSON object, e.g. '{\"order_id\": 42}'."),
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON).")]


def parse_window(option: str, text: str) -> timedelta:
    """A duration option (--since, --older-than): positive and at most MAX_DURATION."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from None
    if value <= timedelta(0):
        raise CliError(f"{option} must be longer than zero (got {clip(text, 40)!r})")
    if value > MAX_DURATION:
        raise CliError(f"{option} {clip(text, 40)!r} is too long (at most {MAX_DURATION.days}d)")
    return value


def parse_json_object(option: str, text: str) -> str:
    """A containment filter: a JSON object, as canonical JSON text for `@>`."""
    if len(text) > MAX_JSON_FILTER:
        raise CliError(f"{option} is too long ({len(text)} characters, at most {MAX_JSON_FILTER})")
    try:
        value = json.loads(text)
    except RecursionError:
        raise CliError(f"{option} is nested too deeply") from None
    except ValueError as exc:
        raise CliError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"{option} must be a JSON object, e.g. '{{\"order_id\": 42}}'")
    try:
        canonical = json.dumps(value, allow_nan=False)
    except ValueError:
        raise CliError(f"{option} holds NaN or Infinity, which a JSON column cannot") from None
    if "\\u0000" in canonical:  # jsonb has no NUL character: no job's args can contain one
        raise CliError(f"{option} contains a NUL character (\\u0000), which no job's args can hold")
    return canonical


def parse_status(status: str | None, allowed: Sequence[str]) -> str | None:
    if status is not None and status not in allowed:
        raise CliError(f"--status must be one of {', '.join(allowed)} (got {clip(status, 40)!r})")
    return status


def _name(option: str, value: str | None) -> str | None:
    if value is not None and len(value) > MAX_NAME:
        raise CliError(f"{option} is too long ({len(value)} characters, at most {MAX_NAME})")
    return value


def job_filters(
    *,
    task: str | None,
    queue: str | None,
    since: str | None,
    args_contain: str | None,
    meta_contain: str | None = None,
) -> JobFilters:
    return JobFilters(
        task=_name("--task", task),
        queue=_name("--queue", queue),
        since=parse_window("--since", since) if since is not None else None,
        args=parse_json_object("--args-contain", args_contain) if args_contain is not None else None,
        meta=parse_json_object("--meta-contain", meta_contain) if meta_contain is not None else None,
    )
