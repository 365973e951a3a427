"""What PostgreSQL itself allows here: pgqueue's own claim/complete and insert SQL driven by pgbench."""

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

from pgqueue.store.queries import QUERIES

PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def pgbench_sql(query: str, literals: dict[str, str] | None = None) -> str:
    """psycopg placeholders -> pgbench variables (or fixed literals); one line, as pgbench wants."""
    literals = literals or {}
    text = PLACEHOLDER.sub(lambda m: literals.get(m.group(1), f":{m.group(1)}"), query)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return " ".join(" ".join(lines).split()).rstrip(";")


def claim_complete_script() -> str:
    claim = pgbench_sql(QUERIES["claim"])
    complete = pgbench_sql(QUERIES["complete_jobs"], {"results": "'{}'"})
    return (
        f"WITH claimed AS ({claim}) SELECT array_agg(id) AS ids, array_agg(attempts) AS attempts FROM claimed \\gset\n"
        f"{complete};\n"
    )


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


def run(dsn: str, rows: int, batches: tuple[int, ...] = (16, 100), clients: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    if shutil.which("pgbench") is None:
        return {"skipped": "pgbench not found (Debian: postgresql-client / postgresql-contrib)"}
    results: dict[str, Any] = {}
    script = claim_complete_script()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for batch in batches:
            for client_count in clients:
                per_client = rows // (batch * client_count)
                _fill(conn, per_client * batch * client_count)
                tps = _pgbench(
                    dsn,
                    script,
                    ["-c", str(client_count), "-j", str(client_count), "-t", str(per_client),
                     "-D", f"limit={batch}", "-D", "worker_id=pgbench", "-D", "lease=30s"],
                )  # fmt: skip
                remaining = conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE status <> 'completed'").fetchone()[0]
                if remaining:
                    raise RuntimeError(f"pgbench claim/complete left {remaining} jobs unfinished")
                results[f"claim_complete_batch{batch}_clients{client_count}_rows_per_s"] = tps * batch
        conn.execute("TRUNCATE pgqueue.jobs CASCADE")
        results["insert_one_per_tx_clients1_per_s"] = _pgbench(dsn, insert_script(), ["-c", "1", "-T", "5"])
        conn.execute("TRUNCATE pgqueue.jobs CASCADE")
        results.update(_trivial_insert(conn, dsn))
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
