"""The completer writes a handler's start only once the handler was entered (pgqueue/worker/completer.py).

A rescue charges an attempt only when its start was written: a job claimed and handed to a handler thread that
never got to run it (the worker was killed first) must go back uncharged.
"""

from __future__ import annotations

import asyncio

import psycopg

from pgqueue import Queue
from tests.integration.completer_support import open_completer


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
        connection, completer = await open_completer(dsn, worker_id)
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


def test_claims_with_and_without_outcomes_are_both_prepared(dsn: str) -> None:
    """A prepared statement's plan, made once for any values, was 5 times slower on a big table while the acks were
    written by the claim's own statement. They are written by pgqueue.record_outcomes (migration 0021), whose plans
    find the jobs by primary key, so a claim carrying outcomes is prepared like an idle one, which carries none.
    Checked on a real connection that prepares everything at once."""
    from datetime import timedelta

    import psycopg

    from pgqueue.store import statements
    from pgqueue.store.run import fetch

    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as conn:
        for _ in range(8):
            busy = statements.record_outcomes_and_claim(
                worker_id="w", limit=10, lease=timedelta(seconds=30), queues=None, completed=[(1, 1, None)]
            )
            fetch(conn, busy)
        idle = statements.record_outcomes_and_claim(worker_id="w", limit=10, lease=timedelta(seconds=30), queues=None)
        fetch(conn, idle)
        prepared = [row[0] for row in conn.execute("SELECT statement FROM pg_prepared_statements")]
    # As the server holds them: the same text, with $n for the placeholders.
    held = {text.split("\n", 1)[0] for text in prepared}
    assert {busy.sql.split("\n", 1)[0], idle.sql.split("\n", 1)[0]} <= held, prepared
    assert busy.sql.startswith(
        "WITH finished AS MATERIALIZED (\nSELECT finished.id, finished.limit_keys\nFROM pgqueue.record_outcomes("
    )
    assert idle.sql.startswith("WITH finished AS (SELECT NULL") and "record_outcomes" not in idle.sql
