"""The SQL text, read once from the named blocks of every `*.sql` file in pgqueue/sql/: `QUERIES["claim"]`.

The .sql files are the readable source (one block per statement, `-- name: NAME`, comments saying why); a
name must be unique across the files, checked as they are loaded. Statements composed of others (the claim
that also records outcomes) are put together here, so each piece keeps one definition.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import LiteralString, cast

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str, source: str = "<sql>") -> dict[str, LiteralString]:
    """The named blocks of one file, their comment lines and final semicolon dropped."""
    parts = _NAME.split(text)
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{source}: statement {name!r} is defined twice")
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        queries[name] = cast(LiteralString, "\n".join(lines).strip().rstrip(";"))
    return queries


def load(folder: Path = SQL_DIR) -> dict[str, LiteralString]:
    """Every named block of every .sql file in `folder`; a name defined in two places is an error."""
    queries: dict[str, LiteralString] = {}
    where: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql")):
        for name, query in parse(path.read_text(), path.name).items():
            if name in queries:
                raise ValueError(f"statement {name!r} is defined in both {where[name]} and {path.name}")
            queries[name], where[name] = query, path.name
    return queries


def _with_outcomes(statement: LiteralString) -> LiteralString:
    """`statement` preceded by the CTE that records a worker's buffered starts and completions, so that a busy
    worker writes them with its next claim in one statement. Composed rather than written out so that each
    statement has one definition. The claim's row set never overlaps the acks' (the worker lists a job in one of
    them at most; the claim takes pending jobs only). `finished` (the jobs completed here) is what the claim's
    concurrency limits do not count as running; the claim reads it before anything else, so the acks run first."""
    outcomes = f"WITH finished AS MATERIALIZED (\n{QUERIES['record_outcomes']}\n)"
    assert statement.startswith("WITH ")
    return cast(LiteralString, f"{outcomes},\n{statement.removeprefix('WITH ')}")


def _with_heartbeat(statement: LiteralString) -> LiteralString:
    """`statement` (which starts with a WITH) preceded by the worker's heartbeat as a CTE: the maintenance
    round's rescue carries it, so that an idle worker sends no statement of its own for the registry."""
    assert statement.startswith("WITH ")
    heartbeat = f"WITH heartbeat AS (\n{QUERIES['worker_heartbeat']}\n)"
    return cast(LiteralString, f"{heartbeat},\n{statement.removeprefix('WITH ')}")


def _finishing_nothing(statement: LiteralString) -> LiteralString:
    """A claim on its own: it completes no job in the same statement."""
    nothing = "WITH finished AS (SELECT NULL::bigint AS id, NULL::text[] AS limit_keys WHERE false)"
    return cast(LiteralString, f"{nothing},\n{statement.removeprefix('WITH ')}")


def _picking(claim: LiteralString, wanted: LiteralString, pick: LiteralString) -> LiteralString:
    """The claim with the queues it takes jobs of and its pick of pending jobs (of any queue, or of named queues)
    in place of its WANTED and PICK lines: the two claims differ only there."""
    composed = str(claim)
    for marker, part in (("\nWANTED,\n", wanted), ("\nPICK,\n", pick)):
        assert composed.count(marker) == 1, f"the claim has one {marker.strip()} line"
        composed = composed.replace(marker, f"\n{part},\n")
    return cast(LiteralString, composed)


QUERIES: dict[str, LiteralString] = load()
QUERIES["claim_from_queues"] = _picking(
    QUERIES["claim"], QUERIES.pop("wanted_from_queues"), QUERIES.pop("pick_from_queues")
)
QUERIES["claim"] = _picking(QUERIES["claim"], QUERIES.pop("wanted_any"), QUERIES.pop("pick_any"))
QUERIES["record_outcomes_and_claim"] = _with_outcomes(QUERIES["claim"])
QUERIES["record_outcomes_and_claim_from_queues"] = _with_outcomes(QUERIES["claim_from_queues"])
QUERIES["heartbeat_and_rescue_lost_jobs"] = _with_heartbeat(QUERIES["rescue_lost_jobs"])
QUERIES["claim"] = _finishing_nothing(QUERIES["claim"])
QUERIES["claim_from_queues"] = _finishing_nothing(QUERIES["claim_from_queues"])
