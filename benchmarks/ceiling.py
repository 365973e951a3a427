"""What PostgreSQL itself allows here: pgqueue's own claim/complete and insert SQL driven by pgbench.

Two claim series, both from pgqueue's SQL text (store/queries.py), no Python in the loop:

- `claim_complete_*`: the claim on its own, then record_outcomes for what it took (two statements per batch);
- `worker_claim_*`: the statement a busy worker sends (record_outcomes_and_claim: the previous batch's
  completions and the next claim in one statement), claiming PREFETCH_CLAIM_UP_TO jobs at a time, the claim size
  of a default worker on short jobs; run with as many pgbench clients as the drain sweep has worker processes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from common import as_url

from pgqueue.settings import PREFETCH_CLAIM_UP_TO
from pgqueue.store.queries import QUERIES

PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def pgbench_sql(query: str, literals: dict[str, str] | None = None) -> str:
    """psycopg placeholders -> pgbench variables (or fixed literals); one line, as pgbench wants."""
    literals = literals or {}
    text = PLACEHOLDER.sub(lambda m: literals.get(m.group(1), f":{m.group(1)}"), query)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return " ".join(" ".join(lines).split()).rstrip(";")


def aggregated_claim(statement: str) -> str:
    """A claim statement whose rows are folded into one (the ids and attempts as arrays), for pgbench's \\gset.

    The claim's CTEs must stay at the top level, so its final SELECT is replaced rather than the whole statement
    wrapped in another CTE; the folded SELECT keeps the filter that makes the acks (`finished`) run first."""
    final = statement.rfind("\nSELECT ")
    if not statement.startswith("WITH ") or final < 0 or "FROM claimed" not in statement[final:]:
        raise ValueError("the claim statement no longer ends with a SELECT from its `claimed` CTE")
    folded = (
        "SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(attempts), '{}') AS attempts "
        "FROM claimed WHERE (SELECT count(*) FROM finished) >= 0"
    )
    return statement[:final] + "\n" + folded


def claim_complete_script() -> str:
    claim = pgbench_sql(aggregated_claim(QUERIES["claim"]))
    literals = {"results": "NULL", "started_ids": "'{}'", "started_attempts": "'{}'"}
    complete = pgbench_sql(QUERIES["record_outcomes"], literals)
    return f"{claim} \\gset\n{complete};\n"


def worker_claim_script() -> str:
    """The worker's own statement: complete the batch claimed last time (:ids, :attempts) and claim the next."""
    literals = {"results": "NULL", "started_ids": "'{}'", "started_attempts": "'{}'"}
    return pgbench_sql(aggregated_claim(QUERIES["record_outcomes_and_claim"]), literals) + " \\gset\n"


def insert_script() -> str:
    literals = {
        "queue": "'default'",
        "task": "'noop'",
        "args": "'{\"n\": 1}'",
        "priority": "0",
        "max_attempts": "5",
        "run_at": "NULL",
        "delay": "'0'",
        "dedup_key": "NULL",
        "schedule": "NULL",
    }
    return pgbench_sql(QUERIES["insert_job"], literals) + ";\n"


def _pgbench(dsn: str, script: str, args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "script.sql"
        path.write_text(script)
        command = ["pgbench", "-n", "-M", "prepared", "-f", str(path), *args, as_url(dsn)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if result.returncode != 0 or not match:
        raise RuntimeError(f"pgbench failed: {result.stderr.strip() or result.stdout.strip()}")
    return float(match.group(1))


def _fill(conn: psycopg.Connection[Any], rows: int) -> None:
    conn.execute("TRUNCATE pgqueue.jobs CASCADE")
    conn.execute(
        "INSERT INTO pgqueue.jobs (task, args) SELECT 'noop', jsonb_build_object('n', i) FROM generate_series(1, %s) i",
        (rows,),
    )
    conn.execute("VACUUM ANALYZE pgqueue.jobs")
    conn.execute("CHECKPOINT")


def run(
    dsn: str,
    rows: int,
    batches: tuple[int, ...] = (16, 100),
    clients: tuple[int, ...] = (1, 2),
    worker_clients: tuple[int, ...] = (),
) -> dict[str, Any]:
    """`worker_clients`: the client counts of the worker-statement series (run.py passes the sweep's processes)."""
    if shutil.which("pgbench") is None:
        return {"skipped": "pgbench not found (Debian: postgresql-client / postgresql-contrib)"}
    results: dict[str, Any] = {}
    script = claim_complete_script()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for batch in batches:
            for client_count in clients:
                per_client = rows // (batch * client_count)
                _fill(conn, per_client * batch * client_count)
                tps = _pgbench(dsn, script, _claim_args(client_count, per_client, batch))
                _check_finished(conn, "claim/complete")
                results[f"claim_complete_batch{batch}_clients{client_count}_rows_per_s"] = tps * batch
        results.update(_worker_claims(conn, dsn, rows, worker_clients))
        conn.execute("TRUNCATE pgqueue.jobs CASCADE")
        results["insert_one_per_tx_clients1_per_s"] = _pgbench(dsn, insert_script(), ["-c", "1", "-T", "5"])
        conn.execute("TRUNCATE pgqueue.jobs CASCADE")
        results.update(_trivial_insert(conn, dsn))
    return results


def _claim_args(client_count: int, per_client: int, batch: int) -> list[str]:
    return ["-c", str(client_count), "-j", str(client_count), "-t", str(per_client),
            "-D", f"limit={batch}", "-D", f"free={batch}", "-D", "worker_id=pgbench", "-D", "lease=30s",
            "-D", "ids={}", "-D", "attempts={}"]  # fmt: skip


def _check_finished(conn: psycopg.Connection[Any], what: str) -> None:
    remaining = conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status <> 'completed'").fetchone()[0]
    if remaining:
        raise RuntimeError(f"pgbench {what} left {remaining} jobs unfinished")


def _worker_claims(conn: psycopg.Connection[Any], dsn: str, rows: int, clients: tuple[int, ...]) -> dict[str, float]:
    """The worker's statement, PREFETCH_CLAIM_UP_TO jobs per claim, by 1..n clients (as many as worker processes).

    Each transaction completes the batch its client claimed before and claims the next, so each client's last
    batch stays running: the rate counts the completed rows over pgbench's time, and the check allows those."""
    batch = PREFETCH_CLAIM_UP_TO
    script = worker_claim_script()
    results: dict[str, float] = {}
    for client_count in clients:
        per_client = max(rows, batch * client_count * 40) // (batch * client_count)  # 40+ claims each: not a blip
        total = per_client * batch * client_count
        _fill(conn, total)
        transactions = client_count * (per_client + 1)  # one more claim each than a fair share of the batches
        tps = _pgbench(dsn, script, _claim_args(client_count, per_client + 1, batch))
        by_status = dict(conn.execute("SELECT status, count(*) FROM pgqueue.jobs GROUP BY status").fetchall())
        completed, running = by_status.pop("completed", 0), by_status.pop("running", 0)
        if by_status or running > client_count * batch or completed + running != total:
            raise RuntimeError(f"pgbench worker claim: {completed} completed, {running} running, else {by_status}")
        results[f"worker_claim_batch{batch}_clients{client_count}_rows_per_s"] = completed * tps / transactions
    return results


def _trivial_insert(conn: psycopg.Connection[Any], dsn: str, count: int = 2_000) -> dict[str, float]:
    """The cheapest durable write there is (one int, no index, no trigger), by pgbench and by bare psycopg:
    what any client of this server pays per committed transaction before doing anything useful."""
    conn.execute("CREATE TABLE bench_trivial (n int)")
    try:
        pgbench = _pgbench(dsn, "INSERT INTO bench_trivial (n) VALUES (1);\n", ["-c", "1", "-T", "5"])
        with psycopg.connect(dsn, autocommit=True) as client:
            for n in range(100):  # warm up the connection and the prepared statement
                client.execute("INSERT INTO bench_trivial (n) VALUES (%s)", (n,), prepare=True)
            started = time.perf_counter()
            for n in range(count):
                client.execute("INSERT INTO bench_trivial (n) VALUES (%s)", (n,), prepare=True)
            psycopg_rate = count / (time.perf_counter() - started)
    finally:
        conn.execute("DROP TABLE bench_trivial")
    return {"trivial_insert_pgbench_per_s": pgbench, "trivial_insert_bare_psycopg_per_s": psycopg_rate}
