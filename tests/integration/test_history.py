"""History in SQL: a job's meta (given at enqueue, indexed) and the views pgqueue.attempts, task_hours and
stuck_jobs, against real PostgreSQL and, for the attempts, a real worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgqueue import InvalidJobError, JobSpec, Queue
from pgqueue.queue.jobs import COPY_AT_LEAST, MAX_META_BYTES

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.jobs_app"


def make_queue(dsn: str) -> Queue:
    queue = Queue(dsn)

    @queue.task
    def invoice(order_id: int) -> None: ...

    return queue


def run(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    environment["PGQUEUE_DSN"] = dsn
    return subprocess.run([PGQUEUE, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


# -- meta -----------------------------------------------------------------------------------------------------


def test_meta_is_stored_by_every_enqueue_path(dsn: str, db: psycopg.Connection) -> None:
    queue = make_queue(dsn)
    try:
        one = queue.enqueue("invoice", {"order_id": 1}, meta={"order_id": 42, "tenant": "acme"})
        keyed = queue.enqueue("invoice", {"order_id": 2}, meta={"order_id": 42}, dedup_key="inv-2")
        plain = queue.enqueue("invoice", {"order_id": 3})
        batch = queue.enqueue_many(
            [JobSpec("invoice", {"order_id": 4}, meta={"order_id": 42}), ("invoice", {"order_id": 5})]
        )
        copied = queue.enqueue_many(
            [
                JobSpec("invoice", {"order_id": n}, meta={"order_id": 42} if n % 2 else None)
                for n in range(COPY_AT_LEAST)
            ]
        )
    finally:
        queue.close()
    metas = dict(db.execute("SELECT id, meta FROM pgqueue.jobs").fetchall())
    assert metas[one] == {"order_id": 42, "tenant": "acme"} and metas[keyed] == {"order_id": 42}
    assert metas[plain] is None and metas[batch[0]] == {"order_id": 42} and metas[batch[1]] is None
    assert [metas[i] for i in copied[:2]] == [None, {"order_id": 42}]
    of_order = {i for (i,) in db.execute("""SELECT id FROM pgqueue.jobs WHERE meta @> '{"order_id": 42}'""")}
    assert of_order == {one, keyed, batch[0], *copied[1::2]}


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ([1, 2], "must be a dict"),
        ("order 42", "must be a dict"),
        ({"when": object()}, "not JSON-serialisable"),
        ({"x": float("nan")}, "not JSON-serialisable"),
        ({"x": "a\x00b"}, "NUL character"),
        ({"x": "y" * MAX_META_BYTES}, "is too big"),
    ],
)
def test_bad_meta_is_refused_before_any_insert(dsn: str, db: psycopg.Connection, meta: object, message: str) -> None:
    queue = make_queue(dsn)
    try:
        with pytest.raises(InvalidJobError, match=message):
            queue.enqueue("invoice", {"order_id": 1}, meta=meta)  # type: ignore[arg-type]
        with pytest.raises(InvalidJobError, match=message):
            queue.enqueue_many([JobSpec("invoice", {"order_id": 1}, meta=meta)])  # type: ignore[arg-type]
    finally:
        queue.close()
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_jobs_of_an_order_by_meta_is_an_index_lookup(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, args) SELECT 'bulk', jsonb_build_object('n', g) "
        "FROM generate_series(1, 20000) g"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (task, meta) SELECT 'invoice', jsonb_build_object('order_id', g) "
        "FROM generate_series(1, 2000) g"
    )
    db.execute("ANALYZE pgqueue.jobs")
    plan = "\n".join(
        row[0] for row in db.execute("""EXPLAIN SELECT id FROM pgqueue.jobs WHERE meta @> '{"order_id": 42}'""")
    )
    assert "jobs_meta_idx" in plan and "Seq Scan" not in plan, plan
    # Partial: the 20,000 jobs without meta are not in it.
    entries = db.execute(
        "SELECT pg_relation_size('pgqueue.jobs_meta_idx') < pg_relation_size('pgqueue.jobs_args_idx') / 4"
    ).fetchone()
    assert entries == (True,)


def test_cli_filters_and_shows_meta(dsn: str, db: psycopg.Connection) -> None:
    queue = make_queue(dsn)
    try:
        mine = queue.enqueue("invoice", {"order_id": 1}, meta={"order_id": 42})
        queue.enqueue("invoice", {"order_id": 42})  # the same number in args, not in meta
    finally:
        queue.close()
    listed = run("jobs", "--meta-contain", '{"order_id": 42}', "--json", dsn=dsn)
    assert listed.returncode == 0, listed.stderr
    assert [(j["id"], j["meta"]) for j in json.loads(listed.stdout)] == [(mine, {"order_id": 42})]
    shown = run("show", str(mine), dsn=dsn)
    assert 'meta        {"order_id": 42}' in shown.stdout
    bad = run("jobs", "--meta-contain", "42", dsn=dsn)
    assert (
        bad.returncode == 1
        and bad.stderr.strip() == "error: --meta-contain must be a JSON object, e.g. '{\"order_id\": 42}'"
    )


# -- the views ------------------------------------------------------------------------------------------------


def test_attempts_view_has_one_row_per_attempt_of_a_real_run(dsn: str, db: psycopg.Connection) -> None:
    """A job that fails twice then succeeds, one that fails for good, one that completes at once: run by a real
    worker, read back from pgqueue.attempts and task_hours."""
    db.execute(__import__("tests.apps.jobs_app", fromlist=["RESULTS_DDL"]).RESULTS_DDL)
    enqueued = [
        run("enqueue", *args, "--app", APP, dsn=dsn) for args in (["always_fails", "--max-attempts", "2"], ["noop"])
    ]
    assert all(e.returncode == 0 for e in enqueued), [e.stderr for e in enqueued]
    failing, quick = (int(e.stdout) for e in enqueued)
    for _ in range(20):  # burst exits while a retry waits for its backoff; run again until both are done
        worked = run("work", "--app", APP, "--burst", dsn=dsn)
        assert worked.returncode == 0, worked.stderr
        done = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status IN ('completed', 'failed')").fetchone()
        if done == (2,):
            break
        db.execute("UPDATE pgqueue.jobs SET run_at = now() WHERE status = 'pending'")  # skip the backoff
    rows = db.execute(
        "SELECT job_id, attempt, outcome, error IS NOT NULL, worker IS NOT NULL, started_at <= finished_at, "
        "queue_wait IS NOT NULL FROM pgqueue.attempts ORDER BY job_id, attempt"
    ).fetchall()
    assert rows == [
        (failing, 1, "retried", True, True, True, False),
        (failing, 2, "failed", True, True, True, False),
        (quick, 1, "completed", False, True, True, True),
    ], rows
    hours = db.execute(
        "SELECT task, completed, failed, retried, run_p50 IS NOT NULL FROM pgqueue.task_hours ORDER BY task"
    ).fetchall()
    assert hours == [("always_fails", 0, 1, 1, True), ("noop", 1, 0, 0, True)], hours


def test_attempts_view_reads_hand_written_history_without_failing(db: psycopg.Connection) -> None:
    bad = [
        {"attempt": "one", "started_at": "yesterday-ish", "at": "2026-13-45T99:00:00Z", "error": "x", "counted": True},
        "not an object",
        {"attempt": 99999999999, "at": "2026-11-01T10:00:00+00:00", "counted": False},
    ]
    job = db.execute(
        "INSERT INTO pgqueue.jobs (task, status, errors) VALUES ('weird', 'pending', %s) RETURNING id",
        (json.dumps(bad),),
    ).fetchone()[0]
    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, errors) VALUES ('weirder', 'pending', '{\"not\": \"an array\"}')"
    )
    rows = db.execute(
        "SELECT attempt, started_at, finished_at::text, outcome, history_index FROM pgqueue.attempts WHERE job_id = %s "
        "ORDER BY history_index",
        (job,),
    ).fetchall()
    assert rows == [(None, None, None, "retried", 1), (None, None, "2026-11-01 10:00:00+00", "interrupted", 3)]
    assert db.execute("SELECT count(*) FROM pgqueue.task_hours WHERE task LIKE 'weird%'").fetchone() == (1,)


def test_attempts_view_shows_a_cancel_that_cut_an_attempt_short_once(db: psycopg.Connection) -> None:
    cut = db.execute(
        "INSERT INTO pgqueue.jobs (task, status, attempts, started_at, finished_at, run_at) "
        "VALUES ('t', 'cancelled', 1, now() - interval '5 seconds', now(), now() - interval '7 seconds') RETURNING id"
    ).fetchone()[0]
    # Failed, waiting for its retry, then cancelled: that attempt is in the history already, not counted twice.
    waiting = db.execute(
        "INSERT INTO pgqueue.jobs (task, status, attempts, started_at, finished_at, errors) "
        "VALUES ('t', 'cancelled', 1, now(), now(), "
        "jsonb_build_array(jsonb_build_object('attempt', 1, 'at', now(), 'counted', true))) RETURNING id"
    ).fetchone()[0]
    rows = db.execute(
        "SELECT job_id, outcome, queue_wait FROM pgqueue.attempts ORDER BY job_id, history_index"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(cut, "cancelled"), (waiting, "retried")]
    assert rows[0][2].total_seconds() == pytest.approx(2, abs=0.01)


def test_stuck_jobs_lists_expired_leases_and_overdue_jobs(db: psycopg.Connection) -> None:
    lost = db.execute(
        "INSERT INTO pgqueue.jobs (task, status, attempts, worker_id, lease_expires_at) "
        "VALUES ('t', 'running', 1, 'host:1', now() - interval '10 minutes') RETURNING id"
    ).fetchone()[0]
    overdue = db.execute(
        "INSERT INTO pgqueue.jobs (task, run_at) VALUES ('t', now() - interval '1 hour') RETURNING id"
    ).fetchone()[0]
    paused = db.execute(
        "INSERT INTO pgqueue.jobs (task, queue, run_at) VALUES ('t', 'held', now() - interval '2 hours') RETURNING id"
    ).fetchone()[0]
    db.execute("INSERT INTO pgqueue.queues (name, paused) VALUES ('held', true)")
    db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('fresh')")  # due just now: not stuck
    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, attempts, worker_id, lease_expires_at) "
        "VALUES ('fine', 'running', 1, 'host:2', now() + interval '30 seconds')"
    )
    rows = db.execute(
        "SELECT id, problem, worker_id, overdue_by > interval '9 minutes' FROM pgqueue.stuck_jobs ORDER BY id"
    ).fetchall()
    assert rows == [
        (lost, "lease expired", "host:1", True),
        (overdue, "overdue", None, True),
        (paused, "queue paused", None, True),
    ]


def test_attempts_of_one_job_is_an_index_lookup(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pgqueue.jobs (task, status) SELECT 'bulk', 'completed' FROM generate_series(1, 5000)")
    db.execute("ANALYZE pgqueue.jobs")
    plan = "\n".join(row[0] for row in db.execute("EXPLAIN SELECT * FROM pgqueue.attempts WHERE job_id = 42"))
    assert plan.count("Index Scan using jobs_pkey") == 2 and "Seq Scan" not in plan, plan
