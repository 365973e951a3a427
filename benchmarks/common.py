"""Database plumbing shared by the benchmark scenarios: private databases, server statistics, records."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from recorder import RESULTS_DDL


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server and options, another database, as a URL (asyncpg and pgbench take those)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = dbname
    return as_url(psycopg.conninfo.make_conninfo(**info))


def as_url(dsn: str) -> str:
    """A postgresql:// URL for tools that only take URLs (the DSN given may be key=value)."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    host = info.get("host", "127.0.0.1")
    port = info.get("port", "5432")
    return f"postgresql://{user}{password}@{host}:{port}/{info.get('dbname', 'postgres')}"


class Server:
    """The PostgreSQL server under test, reached through its maintenance database."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.admin = psycopg.connect(dsn, autocommit=True)
        self.version = self.admin.execute("SHOW server_version").fetchone()[0]
        self.created: list[str] = []

    def create_database(self, label: str) -> tuple[str, str]:
        name = f"bench_{label}_{uuid.uuid4().hex[:6]}"
        self.admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        dsn = with_dbname(self.dsn, name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(RESULTS_DDL)
        return dsn, name

    def drop_all(self) -> None:
        for name in self.created:
            self.admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            self.admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        self.created.clear()
        self.admin.close()

    def transactions(self, dbname: str) -> int:
        """Committed plus rolled-back transactions of one database (each autocommit statement is one)."""
        self.admin.execute("SELECT pg_stat_clear_snapshot()")
        row = self.admin.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (dbname,)
        ).fetchone()
        return int(row[0]) if row else 0

    def connections(self, dbname: str) -> int:
        row = self.admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
        ).fetchone()
        return int(row[0])

    def statement_counter(self) -> str:
        """'pg_stat_statements' when the server has it loaded, else 'transactions' (pg_stat_database)."""
        loaded = self.admin.execute("SHOW shared_preload_libraries").fetchone()[0]
        if "pg_stat_statements" not in loaded:
            return "transactions"
        self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return "pg_stat_statements"

    def statements(self, dbname: str) -> int:
        """Top-level statements run in one database so far (pg_stat_statements)."""
        row = self.admin.execute(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s",
            (dbname,),
        ).fetchone()
        return int(row[0])


def reset_results(conn: psycopg.Connection[Any]) -> None:
    conn.execute("TRUNCATE bench_results")


@dataclass
class Records:
    count: int
    distinct: int
    low: int | None
    high: int | None
    first_start: float | None
    latencies_ms: list[float]

    def exactly_once(self, expected: int) -> str | None:
        """None when jobs 0..expected-1 each ran exactly once, else what is wrong."""
        if self.count == expected and self.distinct == expected and self.low == 0 and self.high == expected - 1:
            return None
        return (
            f"expected each of {expected} jobs once; handlers ran {self.count} times for {self.distinct} "
            f"distinct jobs (lost {expected - self.distinct}, repeated {self.count - self.distinct})"
        )


def load_records(conn: psycopg.Connection[Any], *, with_latency: bool = False) -> Records:
    count, distinct, low, high, first = conn.execute(
        "SELECT count(*), count(DISTINCT n), min(n), max(n), min(started) FROM bench_results WHERE n >= 0"
    ).fetchone()
    latencies: list[float] = []
    if with_latency:
        latencies = [
            float(row[0])
            for row in conn.execute(
                "SELECT (started - sent) * 1000 FROM bench_results WHERE sent > 0 AND n >= 0 ORDER BY 1"
            )
        ]
    return Records(int(count), int(distinct), low, high, first, latencies)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def median(values: Sequence[float]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
