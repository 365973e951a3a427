"""The SQL, read once from the named blocks of every *.sql file here (queries.sql, dashboard.sql): QUERIES["claim"]."""

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


def _with_outcomes(statement: LiteralString) -> LiteralString:
    """`statement` preceded by the CTEs that record a worker's buffered starts and completions, so that a busy
    worker writes them with its next claim in one statement. Composed rather than written out so that each
    statement has one definition. The CTEs' row sets never overlap each other or the claim's (the worker
    lists a job in one of them at most; the claim takes pending jobs only)."""
    outcomes = f"WITH started AS (\n{QUERIES['record_starts']}\n),\ncompleted AS (\n{QUERIES['complete_jobs']}\n)"
    if statement.startswith("WITH "):
        return cast(LiteralString, f"{outcomes},\n{statement.removeprefix('WITH ')}")
    return cast(LiteralString, f"{outcomes}\n{statement}")


def _load_all(folder: Path) -> dict[str, LiteralString]:
    queries: dict[str, LiteralString] = {}
    for path in sorted(folder.glob("*.sql")):
        for name, query in _load(path.read_text()).items():
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice ({path.name})")
            queries[name] = query
    return queries


QUERIES: dict[str, LiteralString] = _load_all(Path(__file__).parent)
# Data-modifying CTEs always run to completion, read or not.
QUERIES["record_outcomes_and_claim"] = _with_outcomes(QUERIES["claim"])
QUERIES["record_outcomes_and_claim_from_queues"] = _with_outcomes(QUERIES["claim_from_queues"])
QUERIES["record_outcomes"] = _with_outcomes("SELECT 1")
