"""Real worker processes, real signals: exactly-once completion, kill -9 recovery, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pgqueue import Queue
from tests.apps.jobs_app import RESULTS_DDL

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.jobs_app"


def start_worker(dsn: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    return subprocess.Popen(
        [PGQUEUE, "work", "--app", APP, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


def count(db: psycopg.Connection, where: str) -> int:
    return db.execute(f"SELECT count(*) FROM pgqueue.jobs WHERE {where}").fetchone()[0]


@pytest.fixture
def jobs(dsn: str, db: psycopg.Connection):
    db.execute(RESULTS_DDL)
    from tests.apps import jobs_app

    q = Queue(dsn)
    q.tasks = jobs_app.queue.tasks  # same task definitions, this test's database
    yield q
    q.close()


def test_exactly_once_over_several_processes(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    total = 3000
    jobs.enqueue_many([("record", {"n": n}) for n in range(total)])
    proc = start_worker(dsn, "--workers", "3", "--concurrency", "8", "--burst")
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    runs, distinct_jobs, distinct_n, processes = db.execute(
        "SELECT count(*), count(DISTINCT job_id), count(DISTINCT n), count(DISTINCT pid) FROM test_results"
    ).fetchone()
    assert (runs, distinct_jobs, distinct_n) == (total, total, total)  # none lost, none twice
    assert processes >= 2
    assert count(db, "status = 'completed'") == total


def test_kill_9_mid_job_then_recovery(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    jobs.enqueue_many([("slow_record", {"n": n, "seconds": 1.5}) for n in range(8)])
    victim = start_worker(dsn, "--concurrency", "4", "--lease", "3")
    # Started, and the start written (within the ack delay): a job killed before that goes back uncharged.
    wait_until(lambda: count(db, "status = 'running' AND started_at IS NOT NULL") == 4, what="4 jobs running")
    victim.kill()  # SIGKILL: no cleanup, no hand-back
    victim.wait(10)
    lost = {row[0] for row in db.execute("SELECT id FROM pgqueue.jobs WHERE status = 'running'")}
    assert len(lost) == 4
    killed_at = time.monotonic()

    rescuer = start_worker(dsn, "--concurrency", "4", "--lease", "3")
    try:
        wait_until(lambda: count(db, "status = 'completed'") == 8, timeout=60, what="all jobs completed")
        recovered_in = time.monotonic() - killed_at
    finally:
        rescuer.send_signal(signal.SIGTERM)
        output, _ = rescuer.communicate(timeout=30)
    assert rescuer.returncode == 0, output
    assert sorted(n for (n,) in db.execute("SELECT DISTINCT n FROM test_results")) == list(range(8))
    # Only the jobs that were mid-run when the worker died may have run twice; the lost attempt is on record.
    for job_id, attempts, errors in db.execute("SELECT id, attempts, errors FROM pgqueue.jobs"):
        if job_id in lost:
            assert attempts == 2 and errors[0]["error"].startswith("worker lost: lease expired")
        else:
            assert attempts == 1 and errors == []
    assert recovered_in < 30


def test_sigterm_lets_running_jobs_finish(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    jobs.enqueue_many([("slow_record", {"n": n, "seconds": 1.0}) for n in range(2)])
    worker = start_worker(dsn, "--concurrency", "2", "--grace-period", "20")
    wait_until(lambda: count(db, "status = 'running'") == 2, what="2 jobs running")
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert count(db, "status = 'completed'") == 2
    assert db.execute("SELECT count(*) FROM test_results").fetchone()[0] == 2


def test_sigterm_past_grace_hands_jobs_back(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    jobs.enqueue_many([("slow_record", {"n": n, "seconds": 30}) for n in range(2)])
    worker = start_worker(dsn, "--concurrency", "2", "--grace-period", "0.5")
    wait_until(lambda: count(db, "status = 'running'") == 2, what="2 jobs running")
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert time.monotonic() - started < 10  # a stuck sync handler does not hold the process
    rows = db.execute("SELECT status, attempts, errors FROM pgqueue.jobs").fetchall()
    # Recorded as interrupted, not counted: a deploy does not use up attempts.
    assert [(status, attempts) for status, attempts, _ in rows] == [("pending", 0)] * 2
    assert all(errors[-1]["error"].startswith("interrupted") and not errors[-1]["counted"] for *_, errors in rows)
    assert "handed 2 unfinished job(s) back" in output


def test_supervisor_sigterm_stops_all_children(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    supervisor = start_worker(dsn, "--workers", "2", "--concurrency", "2")
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
            ).fetchone()[0]
            >= 2
        ),
        what="two listening workers",
    )
    jobs.enqueue("record", {"n": json.loads("7")})
    wait_until(lambda: count(db, "status = 'completed'") == 1, what="job done")
    supervisor.send_signal(signal.SIGTERM)
    output, _ = supervisor.communicate(timeout=60)
    assert supervisor.returncode == 0, output
    assert output.count("stopped:") == 2


def test_supervisor_children_get_every_setting_given(dsn: str, db: psycopg.Connection) -> None:
    """--workers 2 with settings set: each child's command line (and, for a DSN, its environment) carries them."""
    import psutil

    supervisor = start_worker(
        dsn,
        "--workers", "2", "--concurrency", "3", "--lease", "7", "--retention", "36h", "--prefetch", "5",
        "--ack-delay", "0.05", "--poll-interval", "0.5", "-q", "default", "--listen-dsn", dsn,
    )  # fmt: skip
    try:
        wait_until(lambda: len(psutil.Process(supervisor.pid).children()) == 2, what="two children")
        for child in psutil.Process(supervisor.pid).children():
            line = " ".join(child.cmdline())
            for given in ("--concurrency 3", "--lease 7", "--retention 1d12h", "--prefetch 5", "--ack-delay 0.05",
                          "--poll-interval 0.5", "--queue default"):  # fmt: skip
                assert given in line, line
            assert "--listen-dsn" not in line and child.environ()["PGQUEUE_LISTEN_DSN"] == dsn
        # Each child opened its LISTEN connection (named by its application_name; the query text would not do: the
        # listener's probe replaces LISTEN in pg_stat_activity every poll interval).
        listening = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'pgqueue listen'"
        )
        wait_until(lambda: db.execute(listening).fetchone()[0] >= 2, what="two listening workers")
    finally:
        supervisor.send_signal(signal.SIGTERM)
        output, _ = supervisor.communicate(timeout=60)
    assert supervisor.returncode == 0, output
