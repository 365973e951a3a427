"""The worker's pruning: what it deletes and keeps, and that a long prune leaves the worker's main connection
(the one its claims go through) after one batch."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgqueue.store.run import Command, OnConnection, Query
from pgqueue.worker import maintenance
from pgqueue.worker.maintenance import Maintenance


class CountingRunner(OnConnection):
    """The main connection's stand-in: counts the statements that go through it."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        super().__init__(conn)
        self.statements = 0

    async def fetch(self, query: Query[Any]) -> list[Any]:
        self.statements += 1
        return await super().fetch(query)

    async def count(self, command: Command) -> int:
        self.statements += 1
        return await super().count(command)


def insert_finished(db: psycopg.Connection, count: int, status: str, age: str) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, attempts, started_at, finished_at) "
        "SELECT 'noop', %s, 1, now() - %s::interval, now() - %s::interval FROM generate_series(1, %s)",
        (status, age, age, count),
    )


def counts(db: psycopg.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT status, count(*) FROM pgqueue.jobs GROUP BY status").fetchall())


async def prune(dsn: str, prune_dsn: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        runner = CountingRunner(conn)
        deleted = await Maintenance(runner, retention=timedelta(days=7), dsn=prune_dsn).prune()
        return deleted, runner.statements


def test_a_long_prune_takes_one_statement_of_the_main_connection(dsn: str, db: psycopg.Connection) -> None:
    old = 3 * maintenance.PRUNE_BATCH + 17
    insert_finished(db, old, "completed", "8 days")
    insert_finished(db, 5, "cancelled", "8 days")
    insert_finished(db, 4, "completed", "1 day")  # within the retention
    insert_finished(db, 3, "failed", "30 days")  # failed jobs are kept for retry-failed
    deleted, on_main = asyncio.run(prune(dsn, dsn))
    assert deleted == old + 5
    assert on_main == 1  # the rest went over the prune's own connection
    assert counts(db) == {"completed": 4, "failed": 3}


def test_a_short_prune_stays_on_the_main_connection(dsn: str, db: psycopg.Connection) -> None:
    insert_finished(db, 10, "completed", "8 days")
    # A prune DSN nobody listens on: a prune that needed its own connection would log that it stopped.
    deleted, on_main = asyncio.run(prune(dsn, "postgresql://postgres@127.0.0.1:1/none"))
    assert (deleted, on_main) == (10, 1)
    assert counts(db) == {}


def test_a_prune_whose_own_connection_fails_stops_with_a_warning(
    dsn: str, db: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    insert_finished(db, maintenance.PRUNE_BATCH + 10, "completed", "8 days")
    with caplog.at_level(logging.WARNING, logger="pgqueue.maintenance"):
        deleted, on_main = asyncio.run(prune(dsn, "postgresql://postgres@127.0.0.1:1/none"))
    assert (deleted, on_main) == (maintenance.PRUNE_BATCH, 1)
    assert counts(db) == {"completed": 10}  # the next prune takes them
    stopped = f"pruning stopped after {maintenance.PRUNE_BATCH} job(s)"
    assert any(stopped in record.getMessage() for record in caplog.records)
