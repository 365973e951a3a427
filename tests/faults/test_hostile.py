"""Hostile rows, forged notifications and slow handlers against real worker processes: one bad job, one forged
message or one stalled event loop costs only itself.

Each test here reproduces a defect that once broke a promise of the README (see the fault figures table).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from typing import Any

import psycopg
import pytest

from pgqueue import InvalidJobError, JobSpec, Queue
from tests.apps.jobs_app import queue as app_queue
from tests.faults.harness import (
    APP,
    PGQUEUE,
    ROOT,
    FaultDatabase,
    PrivateServer,
    WorkerProcess,
    Workers,
    runs_per_job,
    scalar,
    statuses,
    wait_until,
    worker_pid,
)


def make_queue(dsn: str) -> Queue:
    queue = Queue(dsn)
    queue.tasks = app_queue.tasks  # the workers' task definitions, this test's database
    return queue


def outcomes(db: psycopg.Connection, job_id: int) -> list[tuple[int, str]]:
    rows = db.execute("SELECT attempt, outcome FROM fault_results WHERE job_id = %s ORDER BY at", (job_id,))
    return [(attempt, outcome) for attempt, outcome in rows]


def job_row(db: psycopg.Connection, job_id: int) -> dict[str, Any]:
    """The job's row; `args` as text, since a poison row's args cannot be turned into Python."""
    cursor = db.execute(
        "SELECT (SELECT string_agg(CASE WHEN column_name = 'args' THEN 'args::text AS args' ELSE quote_ident("
        "column_name) END, ', ' ORDER BY ordinal_position) FROM information_schema.columns "
        "WHERE table_schema = 'pgqueue' AND table_name = 'jobs')"
    )
    (columns,) = cursor.fetchone() or ("*",)
    cursor = db.execute(f"SELECT {columns} FROM pgqueue.jobs WHERE id = %s", (job_id,))  # type: ignore[arg-type]
    names = [column.name for column in cursor.description or []]
    row = cursor.fetchone()
    assert row is not None, f"job {job_id} does not exist"
    return dict(zip(names, row, strict=True))


def worker_id_of(worker: WorkerProcess) -> str:
    match = re.search(r"worker (\S+) started", worker.output())
    assert match, worker.output()
    return match.group(1)


def insert_raw(db: psycopg.Connection, task: str, args_sql: str, **columns: Any) -> int:
    """A job written by hand-made SQL, as anyone with INSERT on the table could: `args_sql` is an SQL expression."""
    names = ", ".join(["task", "args", *columns])
    values = ", ".join(["%s", args_sql, *(["%s"] * len(columns))])
    row = db.execute(
        f"INSERT INTO pgqueue.jobs ({names}) VALUES ({values}) RETURNING id",  # type: ignore[arg-type]
        (task, *columns.values()),
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- 1. poison rows ------------------------------------------------------------------------------------------


def test_poison_args_fail_alone_and_the_worker_goes_on(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    """Args psycopg cannot turn into Python (nested thousands deep, an integer of 5,000 digits) fail their job at
    once; the innocent jobs claimed in the same batch run normally and the worker keeps running."""
    deep = int(
        db.execute(
            "INSERT INTO pgqueue.jobs (task, args) VALUES ('fault_record', "
            "('{\"n\": ' || repeat('[', 5000) || '1' || repeat(']', 5000) || '}')::jsonb) RETURNING id"
        ).fetchone()[0]
    )
    huge = int(
        db.execute(
            "INSERT INTO pgqueue.jobs (task, args) VALUES ('fault_record', "
            "('{\"n\": ' || repeat('7', 5000) || '}')::jsonb) RETURNING id"
        ).fetchone()[0]
    )
    total = 60
    make_queue(fault_db.dsn).enqueue_many([JobSpec("fault_record", {"n": n}) for n in range(total)])
    worker = workers.start_many(1, fault_db.dsn, "--concurrency", "4", "--lease", "3")[0]
    wait_until(lambda: statuses(db).get("completed") == total, timeout=60, what="the innocent jobs completed")
    wait_until(lambda: statuses(db).get("failed") == 2, timeout=10, what="the poison jobs failed")

    for job_id, what in ((deep, "nested too deeply"), (huge, "digits")):
        row = job_row(db, job_id)
        assert row["status"] == "failed" and row["attempts"] == 1, row
        assert row["error"].startswith("args cannot be read") and what in row["error"], row["error"]
    runs = runs_per_job(db)
    assert len(runs) == total and set(runs.values()) == {1}
    assert worker.alive(), worker.output()
    assert scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE attempts <> 1") == 0  # no innocent job lost a turn
    figures.update(
        enqueued=total + 2,
        completed=total,
        lost=0,
        **{"ran twice": 0},
        notes="2 poison rows (args nested 5,000 deep; a 5,000-digit integer) failed at once; worker kept running",
    )


def test_enqueue_refuses_args_it_could_not_read_back(fault_db: FaultDatabase, db: psycopg.Connection) -> None:
    queue = make_queue(fault_db.dsn)
    nested: Any = 1
    for _ in range(1000):
        nested = [nested]
    try:
        with pytest.raises(InvalidJobError, match="nested"):
            queue.enqueue("fault_record", {"n": nested})
        with pytest.raises(InvalidJobError, match="nested"):
            queue.enqueue_many([JobSpec("fault_record", {"n": 1}), JobSpec("fault_record", {"n": nested})])
        with pytest.raises(InvalidJobError):
            queue.enqueue("fault_record", {"n": 10**5000})
    finally:
        queue.close()
    assert scalar(db, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_attempts_at_the_integer_maximum_fail_that_job_only(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers
) -> None:
    """`attempts + 1` must not overflow inside the claim: that would make every claim fail."""
    stuck = insert_raw(db, "fault_record", "'{\"n\": -1}'::jsonb", attempts=2147483647)
    make_queue(fault_db.dsn).enqueue_many([JobSpec("fault_record", {"n": n}) for n in range(20)])
    worker = workers.start(fault_db.dsn, "--burst")
    assert worker.process.wait(60) == 0, worker.output()
    row = job_row(db, stuck)
    assert row["status"] == "failed" and "max_attempts" in row["error"], row
    assert statuses(db) == {"completed": 20, "failed": 1}


# -- 2, 3, suspected: the lease of a running attempt ------------------------------------------------------------


@pytest.mark.parametrize("task", ["fault_cancellable_async", "fault_cancellable_sync"])
def test_live_worker_reclaims_its_own_rescued_job(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, task: str, figures: dict[str, Any]
) -> None:
    """The job's lease lapsed while attempt 1 still ran here (an outage, a stalled loop) and it was rescued: the
    same worker claims attempt 2. Attempt 1 is stopped (async) or its outcome ignored (sync), attempt 2 is
    tracked and renewed, and the job ends completed."""
    worker = workers.start_many(1, fault_db.dsn, "--lease", "3", "--poll-interval", "0.5")[0]
    job_id = make_queue(fault_db.dsn).enqueue(task, {"seconds": 4})
    wait_until(lambda: (1, "started") in outcomes(db, job_id), what="attempt 1 started")
    # What a rescue does to a job whose lease lapsed (its error history aside).
    db.execute(
        "UPDATE pgqueue.jobs SET status = 'pending', worker_id = NULL, lease_expires_at = NULL WHERE id = %s",
        (job_id,),
    )
    wait_until(lambda: job_row(db, job_id)["status"] == "completed", timeout=30, what="the job completed")
    row = job_row(db, job_id)
    assert row["attempts"] == 2, (row, outcomes(db, job_id), worker.output())
    seen = outcomes(db, job_id)
    stopped = "cancelled" if task.endswith("async") else "saw_flag"
    assert (1, stopped) in seen and (2, "done") in seen and (1, "done") not in seen, seen
    assert worker.alive()
    time.sleep(4)  # attempt 2 keeps its lease past a whole lease period: nothing rescues it again
    assert job_row(db, job_id)["attempts"] == 2
    figures.update(enqueued=1, completed=1, lost=0, **{"ran twice": 0}, notes=f"{task}: attempt 1 superseded")


def test_blocked_event_loop_keeps_its_jobs(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    """Sync code in an `async def` handler blocks the loop for almost three leases: the worker's jobs keep their
    leases (renewed off the loop), no other worker takes them, and the stall is logged with the job named."""
    options = ("--lease", "3", "--poll-interval", "0.5", "--concurrency", "8")
    blocked = workers.start_many(1, fault_db.dsn, *options)[0]
    queue = make_queue(fault_db.dsn)
    ids = queue.enqueue_many(
        [JobSpec("fault_record", {"n": n, "seconds": 6}) for n in range(3)]
        + [JobSpec("fault_block_loop", {"seconds": 8})]
    )
    wait_until(
        lambda: scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE status = 'running'") == 4, what="all 4 running"
    )
    rescuer = workers.start_many(1, fault_db.dsn, *options)[0]  # would rescue any job whose lease lapsed
    wait_until(lambda: statuses(db).get("completed") == 4, timeout=40, what="all completed")
    runs = runs_per_job(db)
    assert runs == {job_id: 1 for job_id in ids}, (runs, blocked.output(), rescuer.output())
    for job_id in ids:
        row = job_row(db, job_id)
        assert (row["attempts"], row["errors"]) == (1, []), row
        assert worker_pid(row["worker_id"]) == blocked.pid
    assert re.search(rf"event loop .*blocked.*job {ids[-1]}\b", blocked.output()), blocked.output()
    figures.update(
        enqueued=4,
        completed=4,
        lost=0,
        **{"ran twice": 0},
        notes="event loop blocked 8 s with lease 3 s and a second worker rescuing: leases kept, stall logged",
    )


def test_stale_ack_after_retry_failed_cannot_complete_the_new_run(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers
) -> None:
    """retry-failed resets attempts, so attempt numbers repeat: the old run's ack must not complete the new one."""
    workers.start_many(1, fault_db.dsn, "--lease", "3", "--poll-interval", "0.5")
    job_id = make_queue(fault_db.dsn).enqueue("fault_traced", {"seconds": 3})
    wait_until(lambda: any(o.startswith("started") for _a, o in outcomes(db, job_id)), what="run 1 started")
    # A rescue on its last attempt, then an operator's retry-failed: attempt 1 again, while run 1 is still running.
    db.execute(
        "UPDATE pgqueue.jobs SET status = 'failed', finished_at = now(), lease_expires_at = NULL WHERE id = %s",
        (job_id,),
    )
    retried = subprocess.run(
        [PGQUEUE, "retry-failed", "--id", str(job_id), "--dsn", fault_db.dsn], capture_output=True, text=True
    )
    assert retried.returncode == 0, retried.stderr
    wait_until(lambda: job_row(db, job_id)["status"] == "completed", timeout=30, what="completed")
    rows = db.execute("SELECT outcome, at FROM fault_results WHERE job_id = %s ORDER BY at", (job_id,)).fetchall()
    starts = [at for outcome, at in rows if outcome.startswith("started")]
    assert len(starts) == 2, rows
    second_token = next(outcome.split()[1] for outcome, at in rows if at == starts[1])
    done = [at for outcome, at in rows if outcome == f"done {second_token}"]
    assert done and job_row(db, job_id)["finished_at"] >= done[0], (rows, job_row(db, job_id))


# -- 4. forged and garbage notifications ----------------------------------------------------------------------


def listen_pids(db: psycopg.Connection) -> set[int]:
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgqueue listen'"
    )
    return {pid for (pid,) in rows}


GARBAGE = [
    "[1,2]",
    '{"id": "abc"}',
    '{"id": 1e400}',
    '{"id": 99999999999999999999999999}',
    '{"queue": 5, "run_at": "soon"}',
    '{"queue": "default", "run_at": 1e308}',
    '{"queue": "default", "run_at": -1e308}',
    "null",
    "not json at all \x1b[31m",
    "x" * 7000,
]


def test_forged_cancel_and_garbage_notifications_change_nothing(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    """Anyone who can connect can NOTIFY: the worker acts only on what the jobs table says, and garbage on its
    channels is ignored without tearing down the LISTEN connection."""
    worker = workers.start_many(1, fault_db.dsn)[0]  # default lease 30 s: a heartbeat (10 s) is not what acts here
    queue = make_queue(fault_db.dsn)
    victim = queue.enqueue("fault_cancellable_async", {"seconds": 3})
    wait_until(lambda: (1, "started") in outcomes(db, victim), what="the job started")
    before = listen_pids(db)
    assert len(before) == 1
    db.execute("SELECT pg_notify('pgqueue_cancel', %s)", (json.dumps({"id": victim}),))
    for payload in GARBAGE:
        for channel in ("pgqueue_cancel", "pgqueue_jobs"):
            db.execute("SELECT pg_notify(%s, %s)", (channel, payload))
    wait_until(lambda: job_row(db, victim)["status"] == "completed", timeout=20, what="the forged-at job completed")
    assert outcomes(db, victim) == [(1, "started"), (1, "done")]
    assert listen_pids(db) == before, worker.output()

    # The LISTEN connection still works: a real cancel stops a running job at once, not at the next heartbeat.
    real = queue.enqueue("fault_cancellable_async", {"seconds": 30})
    wait_until(lambda: (1, "started") in outcomes(db, real), what="the second job started")
    cancel = subprocess.run([PGQUEUE, "cancel", str(real), "--dsn", fault_db.dsn], capture_output=True, text=True)
    assert cancel.returncode == 0, cancel.stderr
    took = wait_until(lambda: (1, "cancelled") in outcomes(db, real), timeout=5, what="the real cancel acted")
    assert worker.alive()
    log = worker.output()
    assert "\x1b" not in log and len([line for line in log.splitlines() if "notification" in line]) <= 2, log
    queue.close()
    figures.update(
        enqueued=2,
        completed=1,
        lost=0,
        **{"ran twice": 0},
        notes=f"forged cancel + {2 * len(GARBAGE)} garbage payloads ignored; real cancel acted in {took:.2f} s",
    )


def test_a_flood_of_forged_cancels_costs_few_statements(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers
) -> None:
    """Each cancel notification asks the table whether the worker's attempts are still its own; a flood of forged
    ones must not become a flood of statements (early renewals are spaced out), and the job runs on."""
    worker = workers.start_many(1, fault_db.dsn)[0]
    victim = make_queue(fault_db.dsn).enqueue("fault_cancellable_async", {"seconds": 6})
    wait_until(lambda: (1, "started") in outcomes(db, victim), what="the job started")
    time.sleep(1.0)  # the start is written; stats of that are flushed

    def updates() -> int:
        db.execute("SELECT pg_stat_clear_snapshot()")
        return scalar(db, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgqueue.jobs'::regclass")

    before = updates()
    flood_started = time.monotonic()
    for _ in range(100):  # 1,000 forged cancels over about a second, in 100 transactions
        db.execute(
            "SELECT pg_notify('pgqueue_cancel', json_build_object('id', %s, 'n', n)::text) "
            "FROM generate_series(1, 10) AS n",
            (victim,),
        )
        time.sleep(0.01)
    flood_took = time.monotonic() - flood_started
    time.sleep(1.5)  # the worker's renewals are done and their stats flushed (at most once a second)
    renewals = updates() - before
    # At most one early renewal per 0.1 s while the flood lasts and while the worker reads the notifications still
    # queued when it ends (give that half a second), and perhaps one regular heartbeat (every lease/3 = 10 s).
    # Unspaced, it was one or more per transaction: 79 in this test before the spacing.
    assert renewals <= (flood_took + 0.5) / 0.1 + 3, (renewals, flood_took)
    wait_until(lambda: job_row(db, victim)["status"] == "completed", timeout=20, what="the job completed")
    assert outcomes(db, victim) == [(1, "started"), (1, "done")]
    assert worker.alive()


# -- 5, 8. what a killed or stopped worker costs ----------------------------------------------------------------


def test_kill_9_never_fails_a_job_that_never_ran(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    """Jobs on their last attempt (max_attempts=1) claimed ahead or not yet started when their worker is killed go
    back without charge; only jobs whose handler started can fail as `worker lost`."""
    total, concurrency = 3000, 6
    make_queue(fault_db.dsn).enqueue_many(
        [JobSpec("fault_started_record", {"n": n}, max_attempts=1) for n in range(total)]
    )
    options = ("--concurrency", str(concurrency), "--lease", "3", "--poll-interval", "1")
    starts_file = workers.directory / "starts"
    workers.env["FAULT_STARTS_FILE"] = str(starts_file)
    victim = workers.start_many(1, fault_db.dsn, *options)[0]
    wait_until(lambda: scalar(db, "SELECT count(*) FROM fault_results") >= 400, what="jobs flowing")
    held_query = "SELECT id FROM pgqueue.jobs WHERE status = 'running'"
    victim.process.kill()
    victim.process.wait(10)
    died = time.monotonic()
    held = {job_id for (job_id,) in db.execute(held_query)}
    survivor = workers.start(fault_db.dsn, *options)
    wait_until(
        lambda: scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE status IN ('pending', 'running')") == 0,
        timeout=120,
        what="every job finished",
    )
    recovered = time.monotonic() - died
    started = {int(line) for line in starts_file.read_text().split()}
    failed = {job_id for (job_id,) in db.execute("SELECT id FROM pgqueue.jobs WHERE status = 'failed'")}
    final = statuses(db)
    assert final.get("completed", 0) + final.get("failed", 0) == total, final
    assert failed <= held, failed - held
    never_ran = failed - started
    assert not never_ran, f"{len(never_ran)} failed jobs never ran: {sorted(never_ran)[:10]}"
    for job_id in failed:
        assert job_row(db, job_id)["error"].startswith("worker lost"), job_row(db, job_id)
    assert survivor.alive()
    twice = sum(1 for count in runs_per_job(db).values() if count > 2)  # started + done per run
    figures.update(
        enqueued=total,
        completed=final.get("completed", 0),
        lost=0,
        **{"ran twice": twice},
        **{"recovery s": f"{recovered:.1f}"},
        notes=f"max_attempts=1, {len(held)} held at kill -9; {len(failed)} failed, all had started; the rest ran",
    )


def test_hand_back_on_the_last_attempt_does_not_exceed_max_attempts(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers
) -> None:
    """A job handed back at shutdown goes back uncharged: it later runs as attempt 1 of 1, not 2 of 1."""
    worker = workers.start_many(1, fault_db.dsn, "--grace-period", "0.5")[0]
    job_id = make_queue(fault_db.dsn).enqueue("fault_stubborn", {"seconds": 3})
    wait_until(lambda: (1, "started") in outcomes(db, job_id), what="started")
    assert worker.terminate() == 0
    row = job_row(db, job_id)
    assert (row["status"], row["attempts"]) == ("pending", 0), row
    assert row["errors"][-1]["counted"] is False and "interrupted" in row["errors"][-1]["error"], row["errors"]
    workers.start(fault_db.dsn, "--burst").process.wait(60)
    row = job_row(db, job_id)
    assert (row["status"], row["attempts"], row["max_attempts"]) == ("completed", 1, 1), row


def test_database_down_during_shutdown_does_not_keep_the_worker(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, pg_server: PrivateServer
) -> None:
    """SIGTERM while the database is down: the worker gives up writing once the grace period is over and exits;
    the jobs it could not report are rescued after their lease, as for a killed worker."""
    worker = workers.start_many(1, fault_db.dsn, "--grace-period", "2", "--lease", "3")[0]
    job_id = make_queue(fault_db.dsn).enqueue("fault_stubborn", {"seconds": 1})
    wait_until(lambda: (1, "started") in outcomes(db, job_id), what="started")
    pg_server.stop("immediate")
    try:
        time.sleep(1.5)  # the job finishes; its ack cannot be written
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(20)
        took = time.monotonic() - started
    finally:
        pg_server.start()
    assert took < 15, worker.output()
    assert "could not" in worker.output()


# -- 10. unbounded and unprintable text -------------------------------------------------------------------------


def test_error_text_is_capped_and_control_characters_escaped(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers
) -> None:
    big = make_queue(fault_db.dsn).enqueue("fault_raise_big", {"size": 5_000_000})
    evil = insert_raw(db, "\x1b[2J\x1b[31mevil\ntask", "'{}'::jsonb", max_attempts=1)
    worker = workers.start(fault_db.dsn, "--burst")
    assert worker.process.wait(60) == 0, worker.output()[:2000]
    row = job_row(db, big)
    assert row["status"] == "failed" and len(row["error"]) < 3000 and "characters cut" in row["error"], row["error"][
        :200
    ]
    assert len(json.dumps(row["errors"])) < 20_000
    assert job_row(db, evil)["status"] == "failed"
    log = worker.output()
    assert len(log) < 50_000 and "\x1b" not in log, log[:2000]
    assert "\\x1b[31mevil\\ntask" in log


def test_oversized_result_fails_only_its_job(fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers) -> None:
    queue = make_queue(fault_db.dsn)
    big = queue.enqueue("fault_big_result", {"size": 2_000_000})
    others = queue.enqueue_many([JobSpec("fault_record", {"n": n}) for n in range(20)])
    worker = workers.start(fault_db.dsn, "--burst")
    assert worker.process.wait(60) == 0, worker.output()[:2000]
    row = job_row(db, big)
    assert row["status"] == "failed" and "result" in row["error"] and "too large" in row["error"], row["error"]
    assert scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND status = 'completed'", (others,)) == 20


def test_an_outcome_the_database_refuses_costs_only_its_job(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers
) -> None:
    """The acks of a busy worker travel in one statement with its next claim. A value the database refuses (here
    a trigger stands in for any refusal: a size or type limit, a constraint of the user's) must fail only its own
    job: the other acks of that statement are written one by one."""
    db.execute(
        "CREATE FUNCTION refuse_result() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'this result is refused'; END $$"
    )
    db.execute(
        "CREATE TRIGGER refuse_result BEFORE UPDATE ON pgqueue.jobs FOR EACH ROW "
        "WHEN (NEW.result @> '{\"refuse\": true}') EXECUTE FUNCTION refuse_result()"
    )
    queue = make_queue(fault_db.dsn)
    others = queue.enqueue_many([JobSpec("fault_record", {"n": n}) for n in range(30)])
    refused = queue.enqueue("fault_return", {"value": {"refuse": True}})
    others += queue.enqueue_many([JobSpec("fault_record", {"n": n}) for n in range(30, 60)])
    worker = workers.start(fault_db.dsn, "--burst")
    assert worker.process.wait(60) == 0, worker.output()[:3000]
    row = job_row(db, refused)
    assert row["status"] == "failed" and "could not be stored" in row["error"], row
    assert "this result is refused" in row["error"]
    assert scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND status = 'completed'", (others,)) == 60
    assert runs_per_job(db) == {job_id: 1 for job_id in others}
    # Its own tally agrees: a write that failed and was made again one by one is counted once.
    assert "stopped: 60 completed, 0 retried, 1 failed" in worker.output(), worker.output()[-2000:]


# -- 12. delayed jobs and retries -------------------------------------------------------------------------------


def test_delayed_jobs_and_retries_start_on_time(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    """Several future jobs held at once by an idle worker (default 30 s poll): each starts within a moment of its
    run_at, and so does a retry waiting out its backoff."""
    workers.start_many(1, fault_db.dsn)
    queue = make_queue(fault_db.dsn)
    delayed = [queue.enqueue("fault_record", {"n": n}, delay=delay) for n, delay in enumerate((1, 3, 6, 4.5))]
    retried = queue.enqueue("fault_fail_once", delay=0.5)
    ids = [*delayed, retried]
    wait_until(
        lambda: scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'") == len(ids),
        timeout=30,
        what="all ran",
    )
    lateness = dict(
        db.execute(
            "SELECT job.id, extract(epoch FROM result.at - job.run_at) FROM pgqueue.jobs AS job "
            "JOIN fault_results AS result ON result.job_id = job.id AND result.outcome = 'done' WHERE job.id = ANY(%s)",
            (ids,),
        ).fetchall()
    )
    assert set(lateness) == set(ids)
    assert max(lateness.values()) < 0.5, lateness
    figures.update(
        enqueued=len(ids),
        completed=len(ids),
        lost=0,
        **{"ran twice": 0},
        notes=f"4 delays (1-6 s) + a 2 s retry, idle worker: latest start {max(lateness.values()) * 1000:.0f} ms late",
    )


# -- 13. a claim whose answer is lost; burst runs ----------------------------------------------------------------


def test_jobs_of_a_lost_claim_answer_are_released_after_reconnect(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    """The server committed a claim whose answer never reached the worker: after reconnecting the worker finds the
    jobs the table says it holds but it does not, and releases them at once without charging an attempt."""
    worker = workers.start_many(1, fault_db.dsn)[0]  # lease 30 s: waiting for it would take half a minute
    me = worker_id_of(worker)
    orphans = [
        int(row[0])
        for row in db.execute(
            "INSERT INTO pgqueue.jobs (task, args, status, attempts, worker_id, lease_expires_at) "
            "SELECT 'fault_record', jsonb_build_object('n', n), 'running', 1, %s, now() + interval '30 seconds' "
            "FROM generate_series(1, 5) AS n RETURNING id",
            (me,),
        )
    ]
    # The connection the claim went out on dies; the worker finds out at its next statement.
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgqueue worker'")
    started = time.monotonic()
    make_queue(fault_db.dsn).enqueue("fault_record", {"n": 0})
    wait_until(
        lambda: (
            scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND status = 'completed'", (orphans,))
            == len(orphans)
        ),
        timeout=15,
        what="the orphaned jobs ran",
    )
    took = time.monotonic() - started
    for job_id in orphans:
        assert job_row(db, job_id)["attempts"] == 1, job_row(db, job_id)
    figures.update(
        enqueued=6,
        completed=6,
        lost=0,
        **{"ran twice": 0},
        **{"recovery s": f"{took:.1f}"},
        notes="5 jobs of a claim whose answer was lost: released after the reconnect, no attempt charged",
    )


def test_burst_run_rescues_expired_leases_before_it_exits(fault_db: FaultDatabase, db: psycopg.Connection) -> None:
    """A deployment that runs only burst workers must not leave a vanished worker's jobs stuck: the burst run
    rescues expired leases before it decides that nothing is runnable. The job whose handler had started is
    charged the lost attempt; the one that never started is not."""
    lost = {"worker_id": "gone-host:1:abcdef", "lease_expires_at": "2020-01-01T00:00:00Z"}
    cut_short = insert_raw(
        db, "fault_record", "'{\"n\": 1}'::jsonb", status="running", attempts=1, started_at="2020-01-01", **lost
    )
    never_started = insert_raw(db, "fault_record", "'{\"n\": 2}'::jsonb", status="running", attempts=1, **lost)
    result = subprocess.run(
        [PGQUEUE, "work", "--app", APP, "--dsn", fault_db.dsn, "--burst"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PGQUEUE_DSN": fault_db.dsn},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for job_id, attempts, counted in ((cut_short, 2, True), (never_started, 1, False)):
        row = job_row(db, job_id)
        assert (row["status"], row["attempts"]) == ("completed", attempts), row
        assert [error["counted"] for error in row["errors"]] == [counted], row["errors"]
        assert row["errors"][0]["error"].startswith("worker lost"), row["errors"]
