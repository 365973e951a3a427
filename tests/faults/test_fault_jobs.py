"""Bad jobs in real worker processes: over their timeout, poison rows inserted by hand, cancelled mid-run."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import psycopg

from pgqueue import Queue
from tests.apps.jobs_app import queue as app_queue
from tests.faults.harness import PGQUEUE, ROOT, FaultDatabase, Workers, scalar, statuses, wait_until


def make_queue(dsn: str) -> Queue:
    queue = Queue(dsn)
    queue.tasks = app_queue.tasks
    return queue


def outcomes(db: psycopg.Connection, job_id: int) -> list[tuple[int, str]]:
    """(attempt, outcome) rows the handler wrote for this job."""
    query = "SELECT attempt, outcome FROM fault_results WHERE job_id = %s ORDER BY attempt, outcome"
    return [(attempt, outcome) for attempt, outcome in db.execute(query, (job_id,))]


def job(db: psycopg.Connection, job_id: int) -> tuple[str, int, list[str]]:
    status, attempts, errors = db.execute(
        "SELECT status, attempts, errors FROM pgqueue.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    return status, attempts, [error["error"] for error in errors]


def settled(db: psycopg.Connection) -> bool:
    return not set(statuses(db)) & {"pending", "running"}


def test_job_timeouts(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    queue = make_queue(fault_db.dsn)
    # Both tasks: timeout=1, max_attempts=3, Fixed(0.1) retries.
    sync_always = queue.enqueue("fault_sleep_sync", {"seconds": 30})
    sync_stuck_once = queue.enqueue("fault_sleep_sync", {"seconds": 60, "only_attempt": 1, "heed_flag": False})
    async_always = queue.enqueue("fault_sleep_async", {"seconds": 30})
    async_once = queue.enqueue("fault_sleep_async", {"seconds": 30, "only_attempt": 1})
    # One slot: every job after the stuck one proves that its slot came back while its thread still sleeps.
    (worker,) = workers.start_many(1, fault_db.dsn, "--concurrency", "1", "--poll-interval", "1")
    wait_until(lambda: settled(db), timeout=60, what="the timed-out jobs settled")
    followers = [queue.enqueue("fault_record", {"n": n}) for n in range(10)]
    wait_until(lambda: settled(db), timeout=30, what="jobs after the timeouts")
    wait_until(lambda: len(outcomes(db, sync_always)) == 3, timeout=10, what="abandoned threads saw the flag")
    queue.close()

    timed_out = ["timed out after 1 s"]
    assert job(db, sync_always) == ("failed", 3, timed_out * 3)
    assert outcomes(db, sync_always) == [(1, "saw_flag"), (2, "saw_flag"), (3, "saw_flag")]
    assert job(db, sync_stuck_once) == ("completed", 2, timed_out)
    assert outcomes(db, sync_stuck_once) == [(2, "done")]  # attempt 1's thread is still asleep, abandoned
    assert job(db, async_always) == ("failed", 3, timed_out * 3)
    assert outcomes(db, async_always) == [(1, "cancelled"), (2, "cancelled"), (3, "cancelled")]
    assert job(db, async_once) == ("completed", 2, timed_out)
    assert outcomes(db, async_once) == [(1, "cancelled"), (2, "done")]
    assert all(job(db, follower)[:2] == ("completed", 1) for follower in followers)
    assert {pid for (pid,) in db.execute("SELECT DISTINCT pid FROM fault_results")} == {worker.pid}
    assert worker.alive() and "Traceback" not in worker.output()
    figures.update(
        enqueued=14,
        completed=statuses(db)["completed"],
        lost=0,
        **{"ran twice": 0},
        **{"recovery s": "-"},
        notes="8 attempts timed out (1 s): sync slot freed, thread abandoned with its cancel flag set; "
        "async cancelled; retried per policy; 2 failed for good, 2 succeeded on attempt 2",
    )


# (task, args as JSON text, the start of the error the job must fail with)
POISON: list[tuple[str, str, str]] = [
    ("no_such_task", "{}", "unknown task 'no_such_task': no handler registered in this worker"),
    ("fault_record", "[1, 2]", "args must be a JSON object, got list"),
    ("fault_record", '"text"', "args must be a JSON object, got str"),
    ("fault_record", "42", "args must be a JSON object, got int"),
    ("fault_record", "null", "args must be a JSON object, got NoneType"),
    ("fault_record", '{"wrong": 1}', "arguments do not fit task 'fault_record': missing a required argument: 'n'"),
    ("fault_record", '{"n": 1, "extra": 2}', "arguments do not fit task 'fault_record': got an unexpected keyword"),
    ("fault_typed", '{"n": "x"}', "TypeError: can only concatenate str"),
    ("fault_typed", '{"n": {"deep": [1, null]}}', "TypeError: unsupported operand type"),
    ("fault_unserialisable", '{"kind": "object"}', "handler returned a value that is not JSON-serialisable"),
    ("fault_unserialisable", '{"kind": "set"}', "handler returned a value that is not JSON-serialisable"),
    ("fault_unserialisable", '{"kind": "bytes"}', "handler returned a value that is not JSON-serialisable"),
    ("fault_unserialisable", '{"kind": "nan"}', "handler returned a value that is not JSON-serialisable"),
    ("fault_unserialisable", '{"kind": "nul"}', "handler returned a value with a NUL character"),
    *[
        (task, json.dumps({"kind": kind}), f"{exception}: raised by the handler ({kind})")
        for task in ("fault_raise", "fault_raise_async")
        for kind, exception in (
            ("base", "_NotAnException"),
            ("system_exit", "SystemExit"),
            ("keyboard_interrupt", "KeyboardInterrupt"),
            ("generator_exit", "GeneratorExit"),
            ("timeout", "TimeoutError"),
            ("nul_message", "ValueError"),
        )
    ],
]


def test_poison_input(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    pool = workers.start_many(2, fault_db.dsn, "--concurrency", "4", "--poll-interval", "1")
    insert = "INSERT INTO pgqueue.jobs (task, args, max_attempts) VALUES (%s, %s::jsonb, 2) RETURNING id"
    poison_ids = [scalar(db, insert, (task, args)) for task, args, _error in POISON]
    good = make_queue(fault_db.dsn)
    good_ids = [good.enqueue("fault_record", {"n": n}) for n in range(20)]
    good.close()
    wait_until(lambda: settled(db), timeout=60, what="every job settled")

    for job_id, (task, args, error) in zip(poison_ids, POISON, strict=True):
        status, attempts, errors = job(db, job_id)
        assert status == "failed" and errors[-1].startswith(error), (task, args, errors)
        # Bad input can never succeed: failed at once. A raising handler gets its retries (2 attempts here).
        assert attempts == (2 if task.startswith("fault_raise") or task == "fault_typed" else 1), (task, args)
    for job_id, (_task, args, _error) in zip(poison_ids, POISON, strict=True):
        if "nul_message" in args:  # the NUL is spelled out rather than breaking the worker's write
            assert job(db, job_id)[2][-1].endswith("(nul_message)\\x00")
    assert all(job(db, job_id)[:2] == ("completed", 1) for job_id in good_ids)
    for worker in pool:  # the same two processes throughout
        assert worker.alive() and "Traceback" not in worker.output(), worker.output()
    figures.update(
        enqueued=len(POISON) + len(good_ids),
        completed=statuses(db)["completed"],
        lost=0,
        **{"ran twice": 0},
        **{"recovery s": "-"},
        notes=f"{len(POISON)} poison jobs failed with a clear error; both workers kept running",
    )


def cli_cancel(dsn: str, *ids: int) -> subprocess.CompletedProcess[str]:
    command = [PGQUEUE, "cancel", *map(str, ids), "--dsn", dsn]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cancellation(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    queue = make_queue(fault_db.dsn)
    pending = [queue.enqueue("fault_record", {"n": n}, delay=3600) for n in range(3)]
    running = {
        "async via API": queue.enqueue("fault_cancellable_async", {"seconds": 60}),
        "async via CLI": queue.enqueue("fault_cancellable_async", {"seconds": 60}),
        "sync via API": queue.enqueue("fault_cancellable_sync", {"seconds": 60}),
        "sync via CLI": queue.enqueue("fault_cancellable_sync", {"seconds": 60}),
    }
    pool = workers.start_many(2, fault_db.dsn, "--lease", "3", "--poll-interval", "1")

    done = cli_cancel(fault_db.dsn, *pending)
    assert (done.returncode, done.stdout.strip()) == (0, f"cancelled 3 job(s): {', '.join(map(str, pending))}")
    assert all(job(db, job_id)[:2] == ("cancelled", 0) for job_id in pending)  # at once, never started

    for job_id in running.values():
        wait_until(lambda job_id=job_id: (1, "started") in outcomes(db, job_id), what="handlers started")
    cancelled_at = time.monotonic()
    assert queue.cancel(running["async via API"], running["sync via API"]) == sorted(
        [running["async via API"], running["sync via API"]]
    )
    done = cli_cancel(fault_db.dsn, running["async via CLI"], running["sync via CLI"])
    assert done.returncode == 0, done.stderr
    for how, job_id in running.items():
        seen = "cancelled" if how.startswith("async") else "saw_flag"  # CancelledError, or the flag
        wait_until(lambda job_id=job_id, seen=seen: (1, seen) in outcomes(db, job_id), timeout=15, what=how)
    stopped_in = time.monotonic() - cancelled_at

    time.sleep(5)  # past the lease and a maintenance pass: nothing may bring a cancelled job back
    for job_id in [*pending, *running.values()]:
        status, attempts, errors = job(db, job_id)
        assert status == "cancelled" and errors == [], (job_id, status, errors)
        assert attempts <= 1 and all(attempt == 1 for attempt, _ in outcomes(db, job_id))
        assert (1, "done") not in outcomes(db, job_id)

    finished = queue.enqueue("fault_record", {"n": 99})
    wait_until(lambda: job(db, finished)[0] == "completed", what="a job after the cancellations")
    again = cli_cancel(fault_db.dsn, finished)
    assert again.returncode == 1 and f"not cancelled (unknown or already finished): {finished}" in again.stderr
    queue.close()
    assert all(worker.alive() for worker in pool)
    figures.update(
        enqueued=8,
        completed=statuses(db).get("completed", 0),
        lost=0,
        **{"ran twice": 0},
        **{"recovery s": f"{stopped_in:.1f}"},
        notes="3 pending cancelled at once (CLI); 4 running stopped (2 async: CancelledError, 2 sync: flag); "
        "none retried (recovery = until every running handler stopped)",
    )
