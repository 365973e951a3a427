"""An idle worker's claim while no limit exists (pgqueue.claim_unlimited, migration 0022).

It must claim exactly what the full claim would, write the jobs as the full claim does, and claim nothing while
any limit exists: the worker then sends the full claim, which decides the limits.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg

from pgqueue.store import statements
from pgqueue.store.rows import ClaimedJob
from pgqueue.store.run import fetch
from tests.integration.completer_support import open_completer

LEASE = timedelta(seconds=30)
# What a claim leaves in a row (lease_expires_at as whether it is set: it is the claim's own now() + lease).
WRITTEN = (
    "SELECT id, status, attempts, worker_id, started_at, finished_at, lease_expires_at IS NOT NULL, limit_keys, "
    "limit_stripe, held_by, deferred_by, run_at FROM pgqueue.jobs ORDER BY id"
)


def _fill(db: psycopg.Connection) -> None:
    """Jobs of every kind a claim must tell apart: priorities and due times that order the claim, jobs due later,
    a paused queue, jobs held, running and finished, a hostile attempt count, and args and a trace context that
    come back as stored text."""
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, priority, run_at, args, trace_context) "
        "SELECT CASE WHEN g % 3 = 0 THEN 'mail' WHEN g % 3 = 1 THEN 'pdf' ELSE 'paused' END, 't' || g % 4, "
        "g % 3, now() - make_interval(secs => g), jsonb_build_object('n', g, 's', E'a\\u0001\\u00e9'), "
        'CASE WHEN g % 5 = 0 THEN \'{"traceparent": "x"}\'::jsonb END '
        "FROM generate_series(1, 60) AS g"
    )
    db.execute("INSERT INTO pgqueue.jobs (task, run_at) VALUES ('later', now() + interval '1 hour')")
    db.execute("UPDATE pgqueue.jobs SET attempts = 2147483647, max_attempts = 2147483647 WHERE id % 7 = 0")
    db.execute("UPDATE pgqueue.jobs SET status = 'held', held_by = 'task:t1' WHERE id % 11 = 0")
    db.execute(
        "UPDATE pgqueue.jobs SET status = 'running', worker_id = 'other', lease_expires_at = now() WHERE id % 13 = 0"
    )
    db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now() WHERE id % 17 = 0")
    db.execute("UPDATE pgqueue.jobs SET deferred_by = 'rate:gone' WHERE id % 19 = 0 AND status = 'pending'")
    db.execute("INSERT INTO pgqueue.queues (name, paused) VALUES ('paused', true)")


def _without_waited(rows: list[Any]) -> list[tuple[Any, ...]]:
    """A claim's rows less `waited` (measured by each statement's own clock)."""
    return [(*row[:7], *row[8:]) for row in rows]


def test_it_claims_and_writes_what_the_full_claim_would(db: psycopg.Connection) -> None:
    _fill(db)
    for queues in (None, ["mail", "paused", "pdf"], ["pdf"]):
        for limit in (1, 7, 200):
            answers, written = [], []
            for query in (
                statements.record_outcomes_and_claim(worker_id="w", limit=limit, lease=LEASE, queues=queues),
                statements.claim_unlimited(worker_id="w", limit=limit, lease=LEASE, queues=queues),
            ):
                with db.transaction():
                    answers.append(_without_waited(db.execute(query.sql, query.params).fetchall()))
                    written.append(db.execute(WRITTEN).fetchall())
                    raise psycopg.Rollback()
            full, unlimited = answers
            assert unlimited == full, (queues, limit)
            assert written[1] == written[0], (queues, limit)
            assert len(full) == (limit if limit < 7 else len(full)) and full, (queues, limit)


def test_it_answers_in_claim_order_with_the_time_each_job_waited(db: psycopg.Connection) -> None:
    _fill(db)
    claimed = fetch(db, statements.claim_unlimited(worker_id="w", limit=500, lease=LEASE, queues=None))
    assert claimed and all(isinstance(job, ClaimedJob) for job in claimed)
    expected = db.execute(
        "SELECT id FROM pgqueue.jobs WHERE status = 'running' AND worker_id = 'w' ORDER BY priority DESC, run_at, id"
    ).fetchall()
    assert [job.id for job in claimed if job is not None] == [row[0] for row in expected]
    assert all(job is not None and job.waited > 0 for job in claimed)
    queues = {job.queue for job in claimed if job is not None}
    assert queues == {"mail", "pdf"}  # never the paused queue's jobs, never the job due later (of "default")


def test_while_a_limit_exists_it_claims_nothing_and_says_so(db: psycopg.Connection) -> None:
    _fill(db)
    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:zz', 'task', 'zz', 1)")
    before = db.execute(WRITTEN).fetchall()
    for queues in (None, ["mail"]):
        query = statements.claim_unlimited(worker_id="w", limit=10, lease=LEASE, queues=queues)
        assert fetch(db, query) == [None]
    assert db.execute(WRITTEN).fetchall() == before


def test_a_worker_claiming_idle_honours_a_limit_declared_while_it_runs(dsn: str, db: psycopg.Connection) -> None:
    """The worker's idle claims go through claim_unlimited; a limit set at run time (`pgqueue queues limit`) is
    decided on at the very next claim, by the full claim, and the worker keeps to the full claim for a while."""
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'capped' FROM generate_series(1, 5)")

    async def go() -> tuple[list[int], list[int], bool]:
        connection, completer = await open_completer(dsn, "w")
        try:
            first = await completer.flush_and_claim(1)
            assert first is not None
            db.execute(
                "INSERT INTO pgqueue.limits (name, scope, target, concurrency) "
                "VALUES ('task:capped', 'task', 'capped', 1)"
            )
            second = await completer.flush_and_claim(10)
            assert second is not None
            return (
                [job.id for job in first],
                [job.id for job in second if not job.held],
                completer._unlimited_worth_trying(),
            )
        finally:
            await connection.close()

    first, second_running, still_trying = asyncio.run(go())
    assert len(first) == 1
    # The first job was claimed before the limit existed and runs on (a limit never stops a running job); the full
    # claim counts it, so its one slot is taken: nothing more of the task starts, the rest is held.
    assert second_running == []
    statuses = dict(db.execute("SELECT status, count(*) FROM pgqueue.jobs GROUP BY status").fetchall())
    assert statuses == {"running": 1, "held": 4}
    assert not still_trying


def test_prepared_beside_an_empty_table_it_reads_only_what_it_claims(db: psycopg.Connection) -> None:
    """As the full claim (test_schema): its plans, made once beside a table of 40 jobs, find the jobs by the claim
    index and the primary key once the table holds thousands."""
    db.execute("DELETE FROM pg_statistic WHERE starelid = 'pgqueue.jobs'::regclass")
    db.execute("VACUUM ANALYZE pgqueue.jobs")
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 40)")
    db.execute("SET plan_cache_mode = force_generic_plan")
    for queues in (None, ["default"]):
        query = statements.claim_unlimited(worker_id="w", limit=20, lease=LEASE, queues=queues)
        assert len(db.execute(query.sql, query.params, prepare=True).fetchall()) == 20
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 5000)")
    db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now() WHERE id % 2 = 0 AND id > 40")
    reads = "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
    for queues in (None, ["default"]):
        query = statements.claim_unlimited(worker_id="w", limit=20, lease=LEASE, queues=queues)
        with db.transaction():
            before = db.execute(reads).fetchone()
            claimed = db.execute(query.sql, query.params, prepare=True).fetchall()
            after = db.execute(reads).fetchone()
        assert before is not None and after is not None
        assert len(claimed) == 20
        assert (after[0] - before[0], after[1] - before[1]) == (0, 0), queues
