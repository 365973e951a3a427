"""The completer writes a handler's start only once the handler was entered (pgqueue/worker/completer.py).

A rescue charges an attempt only when its start was written: a job claimed and handed to a handler thread that
never got to run it (the worker was killed first) must go back uncharged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from pgqueue import Queue
from pgqueue.worker.completer import Completer
from pgqueue.worker.connection import MainConnection, Outages


def _started(db: psycopg.Connection, job_id: int) -> bool:
    row = db.execute("SELECT started_at IS NOT NULL FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return bool(row[0])


def test_a_start_is_written_only_after_its_handler_was_entered(dsn: str, db: psycopg.Connection) -> None:
    queue = Queue(dsn)

    @queue.task(name="anything")
    def anything() -> None:
        return None

    try:
        job_id = queue.enqueue("anything")
    finally:
        queue.close()
    worker_id = "test:1:completer"

    async def go() -> None:
        async def reconnected(_conn: Any) -> None:
            return None

        async def lost(_exc: BaseException) -> None:
            raise AssertionError("the connection was not expected to fail")

        connection = MainConnection(
            dsn, lease=30, reconnect_max_delay=1, outages=Outages(), after_reconnect=reconnected
        )
        await connection.open()
        completer = Completer(
            connection, worker_id=worker_id, lease=30, queues=None, on_lost=lost, on_retry_due=lambda _at: None
        )
        try:
            claimed = await completer.flush_and_claim(1)
            assert claimed is not None and [job.id for job in claimed] == [job_id]
            key = (job_id, claimed[0].attempt)
            completer.started(key, 0.0)  # handed to its handler (a thread), which has not run it yet
            await completer.flush()
            assert not _started(db, job_id)
            assert completer.pending.started, "the start is kept for a later write"
            completer.entered(key)  # the handler thread calls the handler now
            await completer.flush()
            assert _started(db, job_id)
            assert not completer.pending.started
        finally:
            await connection.close()

    asyncio.run(go())


def test_the_main_connection_plans_each_statement_with_its_values(dsn: str) -> None:
    """Its statements are prepared; a generic plan (one for any values) of the claim was 5 times slower on a big
    table, so the session asks for custom plans (checked over the connection itself)."""

    async def go() -> str:
        async def reconnected(_conn: Any) -> None:
            return None

        connection = MainConnection(
            dsn, lease=30, reconnect_max_delay=1, outages=Outages(), after_reconnect=reconnected
        )
        await connection.open()
        try:
            async with connection.round_trip() as conn:
                row = await (await conn.execute("SHOW plan_cache_mode")).fetchone()
                assert row is not None
                return str(row[0])
        finally:
            await connection.close()

    assert asyncio.run(go()) == "force_custom_plan"
