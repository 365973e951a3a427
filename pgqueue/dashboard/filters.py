"""The job list's filter, sort and cursor, parsed from a query string. Pure: no database, no web framework.

Whatever arrives in a query string is checked here, and anything wrong is a `BadRequest` with a message that says
what is wrong and what is expected (the page answers 400 with it, never a traceback).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

from pgqueue.store.schema import JOB_STATUSES

MAX_NAME = 1000  # characters of a queue or task name in a filter
MAX_ARGS_FILTER = 10_000  # characters of the args filter's JSON
MAX_JSON_DEPTH = 64
MAX_ID = 2**63 - 1
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
SORTS = ("newest", "run_at")
RUN_AT_STATUSES = ("pending", "running")


class BadRequest(ValueError):
    """Input the dashboard refuses, with a message meant for the person who typed it."""


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    queue: str | None = None
    task: str | None = None
    args: str | None = None  # canonical JSON text of the containment filter
    created_from: datetime | None = None
    created_to: datetime | None = None
    sort: Literal["newest", "run_at"] = "newest"
    limit: int = DEFAULT_PAGE_SIZE

    def sql_params(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "queue": self.queue,
            "task": self.task,
            "args": self.args,
            "created_from": self.created_from,
            "created_to": self.created_to,
        }

    def query(self, **extra: str) -> dict[str, str]:
        """The filter as query-string fields (only the ones set), for links and hidden form fields."""
        fields: dict[str, str] = {}
        for name in ("status", "queue", "task", "args"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        if self.created_from is not None:
            fields["from"] = _format_time(self.created_from)
        if self.created_to is not None:
            fields["to"] = _format_time(self.created_to)
        if self.sort != "newest":
            fields["sort"] = self.sort
        if self.limit != DEFAULT_PAGE_SIZE:
            fields["limit"] = str(self.limit)
        fields.update(extra)
        return fields

    def query_string(self, **extra: str) -> str:
        return urlencode(self.query(**extra))

    @property
    def is_empty(self) -> bool:
        return replace(self, sort="newest", limit=DEFAULT_PAGE_SIZE) == JobFilter()


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after job `id` (newest first), or after (run_at, id) in run_at order."""

    id: int
    run_at: datetime | None = None

    def encode(self) -> str:
        if self.run_at is None:
            return str(self.id)
        micros = round(self.run_at.timestamp() * 1_000_000)
        return f"{micros}:{self.id}"


def parse_filter(params: Mapping[str, str]) -> JobFilter:
    status = _optional(params, "status")
    if status is not None and status not in JOB_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(JOB_STATUSES)} (got {_shown(status)})")
    sort = _optional(params, "sort") or "newest"
    if sort not in SORTS:
        raise BadRequest(f"sort must be newest or run_at (got {_shown(sort)})")
    if sort == "run_at" and status not in RUN_AT_STATUSES:
        raise BadRequest("sort=run_at lists jobs in the order they are due: choose status pending or running")
    created_from = _time(params, "from")
    created_to = _time(params, "to")
    if created_from is not None and created_to is not None and created_from >= created_to:
        raise BadRequest("the time range is empty: 'from' must be before 'to'")
    return JobFilter(
        status=status,
        queue=_name(params, "queue"),
        task=_name(params, "task"),
        args=_args(params),
        created_from=created_from,
        created_to=created_to,
        sort="run_at" if sort == "run_at" else "newest",
        limit=_limit(params),
    )


def parse_cursor(text: str | None, sort: str) -> Cursor | None:
    if text is None or text == "":
        return None
    if sort == "run_at":
        micros_text, sep, id_text = text.partition(":")
        if not sep:
            raise BadRequest("cursor must be MICROSECONDS:ID when sorting by run_at")
        micros = _integer(micros_text, "cursor", low=-(2**62), high=2**62)
        try:
            run_at = datetime.fromtimestamp(micros / 1_000_000, UTC)
        except (OverflowError, OSError, ValueError):
            raise BadRequest("cursor's time is out of range") from None
        return Cursor(id=_integer(id_text, "cursor", low=0, high=MAX_ID), run_at=run_at)
    return Cursor(id=_integer(text, "cursor", low=1, high=MAX_ID))


def parse_job_id(text: str) -> int:
    return _integer(text, "job id", low=1, high=MAX_ID)


def parse_name(text: str | None, what: str) -> str:
    """A queue name from a form: present, not too long, no NUL (PostgreSQL text cannot hold one)."""
    if text is None or text == "":
        raise BadRequest(f"{what} is missing")
    return _checked_name(text, what)


def _optional(params: Mapping[str, str], key: str) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _name(params: Mapping[str, str], key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    return _checked_name(value, key)


def _checked_name(value: str, what: str) -> str:
    if len(value) > MAX_NAME:
        raise BadRequest(f"{what} is longer than {MAX_NAME} characters")
    if "\x00" in value:
        raise BadRequest(f"{what} contains a NUL character, which no name can hold")
    return value


def _args(params: Mapping[str, str]) -> str | None:
    text = _optional(params, "args")
    if text is None:
        return None
    if len(text) > MAX_ARGS_FILTER:
        raise BadRequest(f"args filter is longer than {MAX_ARGS_FILTER} characters")
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadRequest(f"args filter is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise BadRequest(f'args filter is not valid JSON ({exc}); example: {{"order_id": 42}}') from None
    if not isinstance(value, dict):
        raise BadRequest('args filter must be a JSON object, e.g. {"order_id": 42}: jobs whose args contain it match')
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadRequest(f"args filter is nested deeper than {MAX_JSON_DEPTH} levels")
    if "\\u0000" in text:
        raise BadRequest("args filter contains a NUL character (\\u0000), which jsonb cannot hold")
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return depth
        nested: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nested.extend(item.values())
            elif isinstance(item, list):
                nested.extend(item)
        level = nested
    return depth - 1


def _time(params: Mapping[str, str], key: str) -> datetime | None:
    text = _optional(params, key)
    if text is None:
        return None
    if len(text) > 64:
        raise BadRequest(f"'{key}' is not a time")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"'{key}' must be an ISO 8601 time such as 2026-12-01T09:30 (UTC unless offset)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _limit(params: Mapping[str, str]) -> int:
    text = _optional(params, "limit")
    if text is None:
        return DEFAULT_PAGE_SIZE
    value = _integer(text, "limit", low=1, high=max(PAGE_SIZES))
    return value


def _integer(text: str, what: str, *, low: int, high: int) -> int:
    text = text.strip()
    if not text or len(text) > 20 or not (text.isascii() and text.lstrip("-").isdigit()):
        raise BadRequest(f"{what} must be a whole number (got {_shown(text)})")
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"{what} must be between {low} and {high}")
    return value


def _format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S").removesuffix(":00")


def _shown(text: str) -> str:
    """A bit of what the user sent, for an error message (escaped by the page like everything else)."""
    return repr(text[:40] + ("…" if len(text) > 40 else ""))
