"""Templates and the helpers they use. Autoescape is on for every template; job content is never marked safe.

Text from jobs is also made visible: control characters (terminal escapes, NUL-like bytes, direction marks that
reorder what a reader sees) are shown as escapes by `visible`, which keeps line breaks where a traceback has them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from pgqueue.dashboard.data import Clipped
from pgqueue.text import printable

TEMPLATES = Path(__file__).parent / "templates"
DASH = "\u2013"  # shown for a missing value
PRETTY_LIMIT = 20_000  # characters of JSON pretty-printed at most; longer is shown as stored


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        visible=visible,
        line=line,
        when=when,
        ago=ago,
        age=age,
        number=number,
        pretty_json=pretty_json,
        cut_note=cut_note,
        stamp=stamp,
    )
    return env


def visible(text: str | Clipped | None) -> str:
    """Control characters escaped, line breaks kept."""
    if text is None:
        return ""
    if isinstance(text, Clipped):
        text = text.text
    return "\n".join(printable(part) for part in text.split("\n"))


def line(text: str | Clipped | None) -> str:
    """One line: every control character escaped, line breaks too."""
    if text is None:
        return ""
    if isinstance(text, Clipped):
        text = text.text
    return printable(text)


def when(moment: datetime | None) -> str:
    if moment is None:
        return DASH
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def stamp(text: str | None) -> str:
    """A time stored as text in the error history, shown like the others when it parses, as stored otherwise."""
    if not text:
        return DASH
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return printable(text)
    return when(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return DASH
    seconds = (now - moment).total_seconds()
    text = age(abs(seconds))
    return f"in {text}" if seconds < 0 else f"{text} ago"


def age(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def number(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def pretty_json(value: Clipped | None) -> str:
    """Stored JSON indented for reading when it is whole and not too long; as stored otherwise."""
    if value is None:
        return ""
    if value.cut or len(value.text) > PRETTY_LIMIT:
        return visible(value.text)
    try:
        return visible(json.dumps(json.loads(value.text), indent=2, ensure_ascii=False))
    except (ValueError, RecursionError):
        return visible(value.text)


def cut_note(value: Clipped | None) -> str:
    if value is None or not value.cut:
        return ""
    return f"{value.cut:,} of {value.length:,} characters not shown"
