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


def _complete_and(claim: LiteralString, complete: LiteralString) -> LiteralString:
    """`complete` as a first CTE of `claim` (which starts with WITH): a busy worker's acks and its next claim
    in one statement. Composed rather than written out so that each statement has one definition."""
    if not claim.startswith("WITH "):
        raise ValueError("a claim statement must start with WITH")
    return cast(LiteralString, f"WITH completed AS (\n{complete}\n),\n{claim.removeprefix('WITH ')}")


QUERIES: dict[str, LiteralString] = _load((Path(__file__).parent / "queries.sql").read_text())
for _claim in ("claim", "claim_from_queues"):
    QUERIES[f"complete_and_{_claim}"] = _complete_and(QUERIES[_claim], QUERIES["complete_jobs"])
