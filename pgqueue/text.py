"""Text from jobs and from the database, made safe to print, log and store. Pure functions.

Job content (queue and task names, error messages) is written by anyone who can insert a row, and driver
errors can echo a connection string whole: nothing of either reaches a terminal or a log unescaped, no
password is ever shown, and no message is stored or logged at any length.
"""

from __future__ import annotations

import re

# scheme://user:PASSWORD@host, also as libpq echoes a malformed one ("postgresql//user:secret@host").
_URL_PASSWORD = re.compile(r"((?:^|//|[\s'\"(=,])[^\s:/@'\"]*):(?!/)([^\s@'\"]*)@")
# password=VALUE in a key=value connection string, the value bare or single-quoted.
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s'\"]+)", re.IGNORECASE)
# C0 and C1 control characters, DEL, and the invisible direction marks that can reorder what a terminal shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def redact(text: str) -> str:
    """`text` with every password of a connection string in it replaced by ***."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


def printable(text: str) -> str:
    """`text` with control characters written as escapes (\\n, \\x1b, \\u202e): one line, no terminal codes."""
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clip(text: str, limit: int, *, keep: str = "head") -> str:
    """At most about `limit` characters of `text`, saying how many were cut.

    keep="head" keeps the start (an error message); keep="tail" keeps the end (a traceback, whose last
    lines name the failing call).
    """
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep == "tail":
        return f"[{cut} characters cut]...\n{text[-limit:]}"
    return f"{text[:limit]}... [{cut} characters cut]"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), passwords redacted."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__


def shown(text: str) -> str:
    """Text from a job row as it may appear in a log line: escaped, and not at any length."""
    return printable(clip(text, 200))
