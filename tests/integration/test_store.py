"""The store on real PostgreSQL: pgqueue's own connections (one async pool however many first enqueues race for
it; closing leaves none behind), a schema older than the code named as such, migrations at READ COMMITTED."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import PgQueueError, Queue, SchemaOutdatedError
from pgqueue.store import connections, migrate

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")


def others(db: psycopg.Connection) -> int:
    """Connections to this database but the test's own."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    return db.execute(query).fetchone()[0]


def noop_queue(dsn: str, pool_size: int = 4) -> Queue:
    queue = Queue(dsn, pool_size=pool_size)
    queue.task(name="noop")(lambda n=0: None)
    return queue


def test_first_async_enqueues_at_once_open_one_pool(dsn: str, db: psycopg.Connection, monkeypatch: Any) -> None:
    opened: list[Any] = []
    open_async_pool = connections.open_async_pool

    async def counted(*args: Any) -> Any:  # the real pool, counted
        opened.append(await open_async_pool(*args))
        return opened[-1]

    monkeypatch.setattr(connections, "open_async_pool", counted)
    queue = noop_queue(dsn, pool_size=2)
    seen: list[int] = []

    async def scenario() -> list[int]:
        try:
            ids = await asyncio.gather(*(queue.enqueue_async("noop", {"n": n}) for n in range(20)))
            seen.append(await asyncio.to_thread(others, db))
            return ids
        finally:
            await queue.aclose()

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 20
    # Without the lock each of the 20 first enqueues opened a pool of its own, and only the last was closed.
    assert len(opened) == 1
    assert seen[0] <= 2  # that pool's connections, and no other
    assert wait_for_none(db)


def wait_for_none(db: psycopg.Connection, timeout: float = 5.0) -> bool:
    """True once no other connection is left (a closed connection leaves pg_stat_activity a moment later)."""
    deadline = time.monotonic() + timeout
    while others(db):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_close_refuses_while_async_connections_are_open_and_aclose_closes_all(dsn: str, db: psycopg.Connection) -> None:
    queue = noop_queue(dsn)

    async def scenario() -> None:
        queue.enqueue("noop")
        await queue.enqueue_async("noop")
        with pytest.raises(PgQueueError, match="aclose"):
            queue.close()  # the sync pool is closed all the same; the async one is not left unsaid
        await queue.aclose()

    asyncio.run(scenario())
    assert wait_for_none(db)


def test_close_closes_the_sync_connections(dsn: str, db: psycopg.Connection) -> None:
    queue = noop_queue(dsn)
    queue.enqueue_many([("noop", {"n": n}) for n in range(600)])  # COPY, on one of ours
    queue.close()
    assert wait_for_none(db)


def test_schema_behind_the_code_says_run_migrate(dsn: str, db: psycopg.Connection) -> None:
    db.execute("DROP FUNCTION pgqueue.reserve_job_ids(integer)")  # as if migration 0005 had not run
    queue = noop_queue(dsn)
    try:
        with pytest.raises(SchemaOutdatedError, match="run `pgqueue migrate`"):
            queue.enqueue_many([("noop", {"n": n}) for n in range(600)])
    finally:
        queue.close()


def test_worker_on_a_schema_behind_the_code_exits_with_one_line(dsn: str, db: psycopg.Connection) -> None:
    # CASCADE: the history views (migration 0011) read the column too.
    db.execute("ALTER TABLE pgqueue.jobs DROP COLUMN lease_expires_at CASCADE")  # a column the claim writes
    db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('noop')")
    result = subprocess.run(
        [PGQUEUE, "work", "--app", "tests.apps.jobs_app", "--burst", "--dsn", dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the pgqueue schema is older than this code"), result.stderr
    assert "run `pgqueue migrate`" in last and "Traceback" not in result.stderr


def test_concurrent_first_migrates_under_repeatable_read(empty_dsn: str) -> None:
    """A server defaulting to REPEATABLE READ: the migration that waited for the other's lock must still see
    what it committed (it runs at READ COMMITTED), or it would create the schema a second time."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'").format(
                sql.Identifier(name)
            )
        )
    # Processes, not threads: Alembic keeps its running migration in module globals.
    migrates = [
        subprocess.Popen(
            [PGQUEUE, "migrate", "--dsn", empty_dsn], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = [(process.wait(120), process.stderr.read().decode() if process.stderr else "") for process in migrates]
    assert [code for code, _ in results] == [0, 0, 0], results
    assert migrate.current_revision(empty_dsn) == migrate.head_revision()
