"""Concurrency limits with real worker processes: every start and end is recorded by the handlers, and the
number of moments with more jobs running than the limit allows must be zero, across kill -9 and rescue too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pgqueue import Queue
from tests.apps import limits_app
from tests.apps.limits_app import RUNS_DDL
from tests.integration.test_processes import count, wait_until

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.limits_app"

# For each recorded start: how many runs of the same group (task, and key when given) were running at that
# instant, itself included. A run still open (its worker was killed) runs until its lease was rescued, which
# its job's error history records. The limit holds when no start sees more than the limit.
OVERLAPS = """
WITH runs AS (
    SELECT r.job_id, r.attempt, r.task, r.key, r.started_at,
           coalesce(r.ended_at, (
               SELECT min((e ->> 'at')::timestamptz)
               FROM pgqueue.jobs AS j, jsonb_array_elements(j.errors) AS e
               WHERE j.id = r.job_id AND (e ->> 'attempt')::int = r.attempt
           ), 'infinity') AS ended_at
    FROM limit_runs AS r
    WHERE r.task = ANY(%(tasks)s)
)
SELECT coalesce(max(concurrent), 0), count(*) FILTER (WHERE concurrent > %(limit)s)
FROM (
    SELECT s.job_id, (
        SELECT count(*) FROM runs AS o
        WHERE (NOT %(per_key)s OR o.key = s.key) AND o.started_at <= s.started_at AND o.ended_at > s.started_at
    ) AS concurrent
    FROM runs AS s
) AS per_start
"""


def overlaps(db: psycopg.Connection, tasks: list[str], limit: int, *, per_key: bool = False) -> tuple[int, int]:
    """(the most runs seen at once, the starts that saw more than `limit`)."""
    row = db.execute(OVERLAPS, {"tasks": tasks, "limit": limit, "per_key": per_key}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def start_worker(dsn: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    return subprocess.Popen(
        [PGQUEUE, "work", "--app", APP, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    return output


@pytest.fixture
def jobs(dsn: str, db: psycopg.Connection):
    db.execute(RUNS_DDL)
    q = Queue(dsn)
    q.tasks = limits_app.queue.tasks  # same task definitions, this test's database
    q.queue_limits = limits_app.queue.queue_limits
    yield q
    q.close()


@pytest.mark.timeout(300)
def test_limits_hold_over_four_processes_claiming_ahead(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    """4 processes, each running 4 at once and claiming ahead: the task, per-key and queue limits all hold,
    and the unlimited jobs behind the held ones run meanwhile."""
    jobs.enqueue_many(
        [("limited", {"n": n}) for n in range(60)]
        + [("per_customer", {"customer_id": n % 3}) for n in range(45)]
        + [("render", {"n": n}) for n in range(30)]
        + [("unlimited", {"n": n}) for n in range(200)]
    )
    proc = start_worker(dsn, "--workers", "4", "--concurrency", "4", "--prefetch", "8", "--burst")
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert count(db, "status = 'completed'") == 335, output
    assert count(db, "attempts <> 1") == 0  # held jobs spent no attempt
    assert db.execute("SELECT count(DISTINCT pid) FROM limit_runs").fetchone()[0] >= 2
    most, above = overlaps(db, ["limited"], limits_app.CONCURRENCY)
    assert (most, above) == (limits_app.CONCURRENCY, 0)
    most, above = overlaps(db, ["per_customer"], limits_app.PER_CUSTOMER, per_key=True)
    assert (most, above) == (limits_app.PER_CUSTOMER, 0)
    most, above = overlaps(db, ["render"], limits_app.PDF_QUEUE)
    assert (most, above) == (limits_app.PDF_QUEUE, 0)
    # Other customers ran meanwhile: more than one per_customer job ran at some moment.
    assert overlaps(db, ["per_customer"], 1)[0] > 1
    # Unlimited jobs were not kept behind the held ones: many of them ran before the limited ones were done.
    last_limited = db.execute("SELECT max(started_at) FROM limit_runs WHERE task = 'limited'").fetchone()[0]
    early = db.execute(
        "SELECT count(*) FROM limit_runs WHERE task = 'unlimited' AND started_at < %s", (last_limited,)
    ).fetchone()[0]
    assert early >= 100, early


@pytest.mark.timeout(300)
def test_a_killed_workers_slot_frees_only_when_its_lease_is_rescued(
    jobs: Queue, dsn: str, db: psycopg.Connection
) -> None:
    jobs.enqueue_many([("limited", {"n": n, "seconds": 1.0}) for n in range(4)])
    jobs.enqueue_many([("limited", {"n": n, "seconds": 0.05}) for n in range(4, 20)])
    victim = start_worker(dsn, "--concurrency", "3", "--lease", "3")
    wait_until(lambda: count(db, "status = 'running' AND started_at IS NOT NULL") == 3, what="3 jobs running")
    victim.kill()  # SIGKILL: no hand-back; its 3 jobs keep their slots until their leases expire
    victim.wait(10)
    lost = {row[0] for row in db.execute("SELECT id FROM pgqueue.jobs WHERE status = 'running'")}
    assert len(lost) == 3
    others = [start_worker(dsn, "--concurrency", "4", "--lease", "3") for _ in range(2)]
    try:
        wait_until(lambda: count(db, "status = 'completed'") == 20, timeout=120, what="all jobs completed")
    finally:
        outputs = [stop(proc) for proc in others]
    assert all(proc.returncode == 0 for proc in others), outputs
    # The lost attempts' runs end when their leases were rescued; nothing else of the task started before that.
    most, above = overlaps(db, ["limited"], limits_app.CONCURRENCY)
    assert above == 0 and most == limits_app.CONCURRENCY
    rescued_at = db.execute(
        "SELECT min((e ->> 'at')::timestamptz) FROM pgqueue.jobs, jsonb_array_elements(errors) AS e WHERE id = ANY(%s)",
        (list(lost),),
    ).fetchone()[0]
    first_other = db.execute(
        "SELECT min(started_at) FROM limit_runs WHERE NOT job_id = ANY(%s) OR attempt > 1", (list(lost),)
    ).fetchone()[0]
    assert first_other >= rescued_at


@pytest.mark.timeout(120)
def test_pause_stops_claims_and_resume_wakes_at_once(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    jobs.pause("pdf")
    worker = start_worker(dsn, "--concurrency", "4", "--poll-interval", "60")
    try:
        jobs.enqueue_many([("render", {"n": n, "seconds": 0}) for n in range(5)] + [("unlimited", {"n": 1})])
        wait_until(lambda: count(db, "task = 'unlimited' AND status = 'completed'") == 1, what="unlimited ran")
        time.sleep(0.5)  # the render jobs were notified too: no claim took them
        assert count(db, "task = 'render' AND status = 'pending'") == 5
        jobs.resume("pdf")
        # Woken by the resume's notification, not by the 60 s poll.
        wait_until(lambda: count(db, "task = 'render' AND status = 'completed'") == 5, timeout=30, what="resumed")
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output


@pytest.mark.timeout(120)
def test_held_jobs_wake_when_a_slot_frees_without_polling(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    """Held jobs cost idle workers nothing (no poll within the test) and run as slots free."""
    jobs.enqueue_many([("limited", {"n": n, "seconds": 0.3}) for n in range(9)])
    workers = [start_worker(dsn, "--concurrency", "4", "--poll-interval", "120") for _ in range(2)]
    try:
        wait_until(lambda: count(db, "status = 'completed'") == 9, timeout=60, what="all jobs completed")
    finally:
        outputs = [stop(proc) for proc in workers]
    assert all(proc.returncode == 0 for proc in workers), outputs
    assert overlaps(db, ["limited"], limits_app.CONCURRENCY) == (limits_app.CONCURRENCY, 0)
    assert count(db, "attempts <> 1") == 0


def test_hostile_keys_and_rows_cost_only_themselves(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    """A huge or odd key value, a hand-written held row with a bad key and a forged notification: the limit
    still holds, every job runs, and the worker's maintenance never fails on them."""
    huge = "c" * 200_000
    odd = ["\x1b[2J", {"nested": [1, 2]}, None, 1, "1", huge, huge]
    jobs.enqueue_many([("per_customer", {"customer_id": value, "seconds": 0.2}) for value in odd])
    jobs.enqueue_many([("unlimited", {"n": n}) for n in range(20)])
    for held_by in ("not json [", None):
        db.execute(
            "INSERT INTO pgqueue.jobs (task, args, status, held_by) VALUES ('unlimited', '{\"n\": 1}', 'held', %s)",
            (held_by,),
        )
    db.execute("""NOTIFY pgqueue_jobs, '{"queue": "default", "run_at": "soon"}'""")
    worker = start_worker(dsn, "--concurrency", "8", "--maintenance-interval", "0.5")
    try:
        # The two hand-written held rows have no limit: maintenance sends them back, and they run too.
        wait_until(lambda: count(db, "status = 'completed'") == len(odd) + 22, what="every job completed")
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    assert "Traceback" not in output and "housekeeping failed" not in output, output
    # 1 and "1" are different customers, the two huge ids the same one: one at a time per customer.
    assert overlaps(db, ["per_customer"], 1, per_key=True) == (1, 0)
    assert count(db, "attempts <> 1") == 0


def test_a_repeatable_read_session_cannot_grant_slots(db: psycopg.Connection) -> None:
    """Its snapshot would not see claims committed while it waited for a key's lock: refused, never granted."""
    from pgqueue.store.queries import QUERIES

    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:a', 'task', 'a', 1)")
    db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('a'), ('b')")
    db.execute("SET default_transaction_isolation = 'repeatable read'")
    params = {"limit": 10, "free": 10, "worker_id": "w", "lease": "30 seconds"}
    with pytest.raises(psycopg.errors.RaiseException, match="READ COMMITTED"):
        db.execute(QUERIES["claim"], params)
    db.execute("SET default_transaction_isolation = 'read committed'")
    claimed = db.execute(QUERIES["claim"], params).fetchall()
    assert sorted((row[2], row[6]) for row in claimed) == [("a", False), ("b", False)]


def test_with_no_limits_the_claim_never_calls_grant_limits(db: psycopg.Connection) -> None:
    from pgqueue.store.queries import QUERIES

    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'a' FROM generate_series(1, 5)")
    params = {"limit": 10, "free": 10, "worker_id": "w", "lease": "30 seconds"}
    plan = "\n".join(row[0] for row in db.execute("EXPLAIN (ANALYZE, COSTS OFF) " + QUERIES["claim"], params))
    grant = next(line for line in plan.splitlines() if "grant_limits" in line)
    assert "never executed" in grant, plan
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'running'").fetchone()[0] == 5


def _claim_with_acks(
    db: psycopg.Connection, worker: str, done: list[tuple[int, int]], limit: int = 10
) -> list[tuple[int, str | None, bool]]:
    """One worker's claim that also completes `done` (id, attempt): (id, task, held) of each row it returns (a job
    left pending for want of a slot comes back held, without a task)."""
    from datetime import timedelta

    from pgqueue.store import statements
    from pgqueue.store.run import fetch

    query = statements.record_outcomes_and_claim(
        worker_id=worker, limit=limit, lease=timedelta(seconds=30), queues=None,
        completed=[(job_id, attempt, None) for job_id, attempt in done],
    )  # fmt: skip
    return [(job.id, job.task, job.held) for job in fetch(db, query)]


def _statuses(db: psycopg.Connection) -> dict[int, str]:
    return dict(db.execute("SELECT id, status FROM pgqueue.jobs").fetchall())


def test_the_claim_that_frees_a_slot_hands_it_to_the_held_job_first(db: psycopg.Connection) -> None:
    """A held job goes straight to running in the statement that completes the job holding its slot, ahead of the
    pending job behind it, which that claim leaves pending and untouched (its worker holds the key's slot again and
    claims as it frees); and the completion wakes nothing: the slot was handed on."""
    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:a', 'task', 'a', 1)")
    first, second = (row[0] for row in db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('a'), ('a') RETURNING id"))
    assert _claim_with_acks(db, "w", [], limit=1) == [(first, "a", False)]
    # Another worker, which holds no slot of the key, parks the job it cannot start.
    assert _claim_with_acks(db, "v", []) == [(second, "a", True)]
    assert _statuses(db) == {first: "running", second: "held"}
    (third,) = db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('a') RETURNING id").fetchone()
    updates = "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
    with db.transaction():
        (before,) = db.execute(updates).fetchone()  # this backend's row writes not yet sent to the statistics
        claimed = _claim_with_acks(db, "w", [(first, 1)])
        (after,) = db.execute(updates).fetchone()
    # Two rows written: first completed, second running (third is left as it was). The acks are written in a
    # function, whose row triggers would fire before the claim took the slot: the wake is deferred to the commit,
    # where it sees the slot taken. Fired at once, it would have woken the second job first (held -> pending ->
    # running: 3).
    assert after - before == 2
    assert claimed == [(second, "a", False), (third, None, True)]
    assert _statuses(db) == {first: "completed", second: "running", third: "pending"}
    assert db.execute("SELECT attempts, worker_id FROM pgqueue.jobs WHERE id = %s", (second,)).fetchone() == (1, "w")
    assert db.execute("SELECT attempts FROM pgqueue.jobs WHERE id = %s", (third,)).fetchone() == (0,)


@pytest.mark.timeout(120)
def test_a_stopping_worker_tells_the_queues_it_held_slots_in(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    """A worker claims 4 jobs of a task limited to 3: it starts 3 and leaves the fourth pending, untouched, for its
    own next claim. Stopped instead, it finishes the 3 and then notifies their queue, so that an idle worker takes
    the fourth at once rather than at its next poll."""
    import json

    listening = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_jobs")
        worker = start_worker(dsn, "--concurrency", "4", "--poll-interval", "120")
        try:
            # Idle and listening (its claims at start have found nothing): one claim, on the enqueue's notification.
            wait_until(lambda: db.execute(listening).fetchone()[0] >= 2, what="the worker listening")
            time.sleep(0.5)
            jobs.enqueue_many([("limited", {"n": n, "seconds": 1.0}) for n in range(4)])
            wait_until(lambda: _count(db, "running") == 3, what="3 limited jobs running")
            assert (_count(db, "pending"), _count(db, "held")) == (1, 0)
            list(listener.notifies(timeout=0.2))  # the enqueue's
        finally:
            output = stop(worker)
        assert (_count(db, "completed"), _count(db, "pending")) == (3, 1), output
        told = [json.loads(note.payload) for note in listener.notifies(timeout=5, stop_after=1)]
    assert told == [{"queue": "default", "run_at": 0}]


@pytest.mark.timeout(120)
def test_a_queue_name_too_long_to_notify_costs_only_a_warning_at_stop(
    jobs: Queue, dsn: str, db: psycopg.Connection
) -> None:
    """A limited job moved by hand into a queue whose name is longer than a notification can carry (an insert
    there fails: its own notification would): the worker runs it, and at its stop the notice to that queue fails
    with one warning, not a traceback."""
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, args, run_at) VALUES ('q', 'limited', %s, 'infinity')", ('{"n": 1}',)
    )
    db.execute("UPDATE pgqueue.jobs SET queue = repeat('q', 9000), run_at = now()")
    worker = start_worker(dsn, "--concurrency", "2", "--poll-interval", "120")
    try:
        wait_until(lambda: _count(db, "completed") == 1, what="the job done")
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    assert "Traceback" not in output, output
    warnings = [line for line in output.splitlines() if "could not notify queue" in line]
    assert len(warnings) == 1 and len(warnings[0]) < 400, warnings


def test_a_freed_slot_is_not_handed_to_a_held_job_of_a_paused_queue(db: psycopg.Connection) -> None:
    """The held job's queue is paused: the claim leaves it, and the completion wakes it (pending, for when the
    queue resumes) as it did before claims took held jobs."""
    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:a', 'task', 'a', 1)")
    inserted = db.execute("INSERT INTO pgqueue.jobs (task, queue) VALUES ('a', 'q'), ('a', 'q') RETURNING id")
    first, second = (row[0] for row in inserted)
    _claim_with_acks(db, "w", [])
    db.execute("INSERT INTO pgqueue.queues (name, paused) VALUES ('q', true)")
    assert _claim_with_acks(db, "w", [(first, 1)]) == []
    assert _statuses(db) == {first: "completed", second: "pending"}


def test_held_in_line_takes_the_index_in_claim_order_whatever_the_statistics(db: psycopg.Connection) -> None:
    """Statistics taken before any job was held (the usual case after a burst) must not make the lookup read every
    held job: the plan inside pgqueue.held_in_line is the ordered scan of jobs_held_idx, and it stops at `wanted`."""
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'a' FROM generate_series(1, 5000)")
    db.execute("ANALYZE pgqueue.jobs")
    db.execute("UPDATE pgqueue.jobs SET status = 'held', held_by = '[\"task:a\"]', priority = id % 3 WHERE id % 5 <> 0")
    db.execute("LOAD 'auto_explain'")
    db.execute("SET auto_explain.log_min_duration = 0")
    db.execute("SET auto_explain.log_nested_statements = on")
    db.execute("SET auto_explain.log_analyze = on")
    db.execute("SET client_min_messages = log")
    notices: list[str] = []
    db.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    with db.transaction():
        rows = db.execute("SELECT id FROM pgqueue.held_in_line('[\"task:a\"]', 3, ARRAY[]::text[], NULL)").fetchall()
    db.execute("SET client_min_messages = notice")
    expected = db.execute(
        "SELECT id FROM pgqueue.jobs WHERE status = 'held' ORDER BY priority DESC, run_at, id LIMIT 3"
    ).fetchall()
    assert rows == expected
    inner = next(message for message in notices if "jobs_held_idx" in message or "Sort" in message)
    assert "Index Scan using jobs_held_idx" in inner and "Sort" not in inner, inner
    # PostgreSQL 18 prints actual rows with two decimals (rows=3.00), earlier versions as an integer.
    assert re.search(r"actual time=\S+ rows=3(\.00)? ", inner.split("Index Scan using jobs_held_idx")[1]), inner


CLAIM_PARAMS = {"worker_id": "w", "lease": "30 seconds"}


def _claim(conn: psycopg.Connection, limit: int, free: int) -> list[tuple]:
    """The claim as a worker with `free` free slots sends it, for up to `limit` jobs (the rest claimed ahead)."""
    from pgqueue.store.queries import QUERIES

    return conn.execute(QUERIES["claim"], {**CLAIM_PARAMS, "limit": limit, "free": free}).fetchall()


def _count(db: psycopg.Connection, status: str) -> int:
    return db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = %s", (status,)).fetchone()[0]


def test_two_claims_of_one_key_do_not_wait_for_each_other_and_stay_exact(dsn: str, db: psycopg.Connection) -> None:
    """A claim still in flight holds one stripe of the key (2 of its 8 slots): a second claim skips that stripe
    instead of waiting for it (a wait would hit lock_timeout), takes the other stripes' 6 slots and leaves the
    rest pending (its worker holds slots of the key and claims again as they free); once both commit, exactly 8
    run."""
    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:a', 'task', 'a', 8)")
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'a' FROM generate_series(1, 16)")
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        assert len(_claim(first, 2, 2)) == 2  # its transaction stays open: its stripe stays locked
        second.execute("SET lock_timeout = '500ms'")
        claimed = _claim(second, 10, 10)
        running = [row for row in claimed if not row[6]]  # column 6: held
        assert (len(running), len(claimed) - len(running)) == (6, 4)
        first.commit()
    assert (_count(db, "running"), _count(db, "held"), _count(db, "pending")) == (8, 0, 8)
    stripes = db.execute(
        "SELECT limit_stripe, count(*) FROM pgqueue.jobs WHERE status = 'running' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert stripes == [(0, 2), (1, 2), (2, 2), (3, 2)]


@pytest.mark.parametrize("stripe", [None, 99, -1], ids=["no stripe", "stripe 99", "stripe -1"])
def test_a_running_job_of_no_stripe_counts_in_every_stripe(db: psycopg.Connection, stripe: int | None) -> None:
    """A job set running without a stripe (by a release before stripes, or by hand) may be in any of them: each
    stripe counts it, so the limit can never be exceeded around it; so does a hand-edited stripe out of range. A
    limit of 4 (one slot per stripe) with such a job running grants nothing until it ends."""
    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:a', 'task', 'a', 4)")
    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, attempts, worker_id, lease_expires_at, limit_keys, limit_stripe) "
        "VALUES ('a', 'running', 1, 'old', now() + interval '1 hour', ARRAY['[\"task:a\"]'], %s)",
        (stripe,),
    )
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'a' FROM generate_series(1, 5)")
    claimed = _claim(db, 5, 5)
    assert [row[6] for row in claimed] == [True] * 5
    assert (_count(db, "running"), _count(db, "held")) == (1, 5)
    db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now() WHERE worker_id = 'old'")
    db.execute("UPDATE pgqueue.jobs SET status = 'pending', held_by = NULL WHERE status = 'held'")
    assert [row[6] for row in _claim(db, 5, 5)] == [False] * 4 + [True]


def test_a_limited_job_claimed_ahead_is_left_pending_when_no_slot_is_free(db: psycopg.Connection) -> None:
    """One slot of the limit's 3 is free. A worker with 1 free slot claims 5: the first job takes both (its slot
    and the limit's); the 4 it would only hold in memory find the limit full and are left pending, untouched,
    coming back as no_slot rows: nothing parked that a worker with a free slot could take."""
    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:a', 'task', 'a', 3)")
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'a' FROM generate_series(1, 2)")
    assert len(_claim(db, 2, 2)) == 2
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'a' FROM generate_series(1, 5)")
    claimed = _claim(db, 5, 1)
    no_slot = [row for row in claimed if row[10]]  # column 10: no_slot
    assert (len(claimed), len(no_slot)) == (5, 4)
    assert (_count(db, "running"), _count(db, "held"), _count(db, "pending")) == (3, 0, 4)
    unspent = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'pending' AND attempts = 0").fetchone()
    assert unspent == (4,)


def test_held_jobs_taken_for_freed_slots_count_towards_the_claims_limit(db: psycopg.Connection) -> None:
    """The claim that completes the job holding the only slot, for 1 job, takes the held job next in line and
    nothing more: the pending job behind it is left pending (untouched, unspent), not picked only to be parked."""
    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:a', 'task', 'a', 1)")
    first, second = (row[0] for row in db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('a'), ('a') RETURNING id"))
    assert _claim_with_acks(db, "w", [], limit=1) == [(first, "a", False)]
    assert _claim_with_acks(db, "v", []) == [(second, "a", True)]  # parked by a worker without a slot of the key
    (third,) = db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('a') RETURNING id").fetchone()
    from datetime import timedelta

    from pgqueue.store import statements
    from pgqueue.store.run import fetch

    query = statements.record_outcomes_and_claim(
        worker_id="w", limit=1, lease=timedelta(seconds=30), queues=None, completed=[(first, 1, None)]
    )
    assert [(job.id, job.held) for job in fetch(db, query)] == [(second, False)]
    assert _statuses(db) == {first: "completed", second: "running", third: "pending"}
    assert db.execute("SELECT attempts FROM pgqueue.jobs WHERE id = %s", (third,)).fetchone() == (0,)


def test_a_no_slot_row_of_a_concurrency_limit_is_not_reported_rate_limited(db: psycopg.Connection) -> None:
    """A job left pending for want of a slot under a concurrency limit says so (no_slot) without claiming to be
    rate-limited: `rated` is the job's own."""
    db.execute("INSERT INTO pgqueue.limits (name, scope, target, concurrency) VALUES ('task:a', 'task', 'a', 1)")
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'a' FROM generate_series(1, 3)")
    claimed = _claim(db, 3, 1)
    no_slot = [row for row in claimed if row[10]]  # column 10: no_slot, 11: rated
    assert len(no_slot) == 2 and all(row[11] is False for row in no_slot)
