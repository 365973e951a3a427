"""The hot-path SQL, read once from queries.sql: `QUERIES["claim"]`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import LiteralString, cast

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load(text: str) -> dict[str, LiteralString]:
    parts = _NAME.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        queries[name] = cast(LiteralString, "\n".join(lines).strip().rstrip(";"))
    return queries


QUERIES: dict[str, LiteralString] = _load((Path(__file__).parent / "queries.sql").read_text())
