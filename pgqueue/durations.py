"""Durations written the way people write them: 10s, 5m, 2h, 1d, 1h30m, or plain seconds."""

from __future__ import annotations

import re
from datetime import timedelta

from pgqueue.text import clip

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse '90', '10s', '5m', '2h', '1d', '1h30m'; raises ValueError with the reason."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    else:
        parts = _PART.findall(value)
        if not value or not parts or "".join(number + unit for number, unit in parts) != value:
            raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 5m, 2h, 1d or 1h30m")
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # more than timedelta's 999999999 days, or a number too long for a float (inf)
        raise ValueError(f"duration {clip(text, 40)!r} is too long (at most {timedelta.max.days} days)") from None


def format_duration(value: timedelta) -> str:
    """The shortest text parse_duration reads back as `value`: 7d, 1h30m, 90s, 0.25s."""
    seconds = value.total_seconds()
    if seconds != int(seconds) or seconds < 1:
        return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"
    remaining, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts)
