"""The CLI as a user runs it: a subprocess, real exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgqueue.store import migrate

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.jobs_app"


def run(
    *args: str, dsn: str | None = None, timeout: float = 60, env: dict | None = None
) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    if dsn is not None:
        environment["PGQUEUE_DSN"] = dsn
    environment.update(env or {})
    return subprocess.run([PGQUEUE, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr


def test_migrate_is_idempotent(empty_dsn: str) -> None:
    first = run("migrate", dsn=empty_dsn)
    assert first.returncode == 0 and f"migrated: empty -> {migrate.head_revision()}" in first.stdout
    second = run("migrate", "--dsn", empty_dsn)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_enqueue_prints_id_and_checks_with_app(dsn: str, db: psycopg.Connection) -> None:
    result = run("enqueue", "record", "--args", '{"n": 5}', "--app", APP, "--priority", "3", "--delay", "2m", dsn=dsn)
    assert result.returncode == 0, result.stderr
    job_id = int(result.stdout.strip())
    row = db.execute(
        "SELECT task, args, priority, run_at > now() + interval '100 seconds' FROM pgqueue.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("record", {"n": 5}, 3, True)
    at = run("enqueue", "noop", "--run-at", "2031-01-01T09:00:00+01:00", "-q", "other", dsn=dsn)
    assert at.returncode == 0 and "not checked" in at.stderr
    assert db.execute("SELECT queue, run_at::text FROM pgqueue.jobs WHERE id = %s", (int(at.stdout),)).fetchone() == (
        "other",
        "2031-01-01 08:00:00+00",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "record", "--args", "{not json"], "--args is not valid JSON"),
        (["enqueue", "record", "--args", "[1]"], "must be a JSON object"),
        (["enqueue", "nope", "--app", APP], "unknown task 'nope'"),
        (["enqueue", "record", "--args", '{"m": 1}', "--app", APP], "do not fit task 'record'"),
        (["enqueue", "record", "--delay", "soon"], "invalid duration 'soon'"),
        (["enqueue", "record", "--run-at", "tomorrow"], "not an ISO 8601 time"),
        (["enqueue", "record", "--run-at", "2030-01-01T00:00:00"], "needs a UTC offset"),
        (["work", "--app", "no_such_module", "--burst"], "no module named 'no_such_module'"),
        (["cancel", "999999"], "not cancelled"),
    ],
)
def test_bad_input_one_line_error_nothing_inserted(dsn: str, db: psycopg.Connection, args, message) -> None:
    result = run(*args, dsn=dsn)
    if args[0] == "cancel":
        assert result.returncode == 1 and message in result.stderr
    else:
        assert_one_line_error(result, message)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0] == 0


def test_unreachable_database_is_one_line() -> None:
    result = run("status", dsn="postgresql://nobody@127.0.0.1:1/none", timeout=30)
    assert_one_line_error(result, "database unavailable")
    result = run("enqueue", "x", dsn="postgresql://nobody@127.0.0.1:1/none", timeout=30)
    assert_one_line_error(result, "database unavailable")


def test_schema_missing_is_one_line(empty_dsn: str) -> None:
    assert_one_line_error(run("status", dsn=empty_dsn), "run `pgqueue migrate`")
    assert_one_line_error(run("work", "--app", APP, "--burst", dsn=empty_dsn), "run `pgqueue migrate`")


def test_usage_error_exits_2(dsn: str) -> None:
    result = run("work", "--concurrency", "0", "--app", APP, dsn=dsn)
    assert result.returncode == 2


def test_work_burst_status_and_retry_failed(dsn: str, db: psycopg.Connection) -> None:
    db.execute(__import__("tests.apps.jobs_app", fromlist=["RESULTS_DDL"]).RESULTS_DDL)
    for n in range(20):
        assert run("enqueue", "record", "--args", json.dumps({"n": n}), dsn=dsn).returncode == 0
    assert run("enqueue", "always_fails", "--app", APP, dsn=dsn).returncode == 0

    status = json.loads(run("status", "--json", dsn=dsn).stdout)
    assert status["queues"]["default"]["jobs"] == {"pending": 21}
    assert status["queues"]["default"]["oldest_runnable_seconds"] >= 0

    # Burst exits while the failing job waits for its retry; a second burst finishes it off.
    for _ in range(3):
        worked = run("work", "--app", APP, "--burst", dsn=dsn)
        assert worked.returncode == 0, worked.stderr
        if db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'failed'").fetchone()[0]:
            break
        import time

        time.sleep(0.2)
    assert sorted(n for (n,) in db.execute("SELECT n FROM test_results")) == list(range(20))
    text = run("status", dsn=dsn).stdout
    assert "completed" in text and " 20 " in text

    (failed_id,) = db.execute("SELECT id FROM pgqueue.jobs WHERE status = 'failed'").fetchone()
    dry = run("retry-failed", "--dry-run", dsn=dsn)
    assert dry.returncode == 0 and dry.stdout.strip() == f"1 failed job(s) would be retried: {failed_id}"
    done = run("retry-failed", "--task", "always_fails", dsn=dsn)
    assert done.returncode == 0 and done.stdout.strip() == f"1 failed job(s) retried: {failed_id}"
    assert db.execute(
        "SELECT status, attempts, jsonb_array_length(errors) FROM pgqueue.jobs WHERE task = 'always_fails'"
    ).fetchone() == ("pending", 0, 2)


def test_demo_runs_end_to_end(dsn: str) -> None:
    result = run("demo", dsn=dsn)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rolled back: 0 jobs exist for it" in out
    assert "failed, retry in" in out
    assert "| generate_invoice        | completed | 2 " in out
    assert "ConnectionError: PDF service timed out" in out


def test_status_counts_the_last_hours_finished_jobs_unless_asked_for_all(dsn: str, db: psycopg.Connection) -> None:
    """Finished jobs of any age are the history, not the state: counted only with --all (a scan of the table)."""
    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, finished_at) VALUES "
        "('a', 'completed', now() - interval '2 hours'), ('a', 'completed', now() - interval '10 minutes'), "
        "('a', 'cancelled', now() - interval '3 days'), ('a', 'failed', now() - interval '3 days'), "
        "('a', 'pending', NULL)"
    )
    recent = json.loads(run("status", "--json", dsn=dsn).stdout)
    assert recent["finished_counted"] == "last hour"
    assert recent["queues"]["default"]["jobs"] == {"completed": 1, "failed": 1, "pending": 1}
    everything = json.loads(run("status", "--json", "--all", dsn=dsn).stdout)
    assert everything["finished_counted"] == "all"
    assert everything["queues"]["default"]["jobs"] == {"cancelled": 1, "completed": 2, "failed": 1, "pending": 1}
    header = run("status", dsn=dsn).stdout.splitlines()[0]
    assert "completed (1h)" in header and "cancelled (1h)" in header, header
    assert "(1h)" not in run("status", "--all", dsn=dsn).stdout


def test_status_reads_no_history_row_by_row(db: psycopg.Connection) -> None:
    """With many finished jobs kept, the status query reads partial indexes and the last hour, never the table."""
    from pgqueue.store.queries import QUERIES

    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, finished_at) "
        "SELECT 'done', 'completed', now() - interval '2 days' FROM generate_series(1, 20000)"
    )
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 20)")
    db.execute("ANALYZE pgqueue.jobs")
    plan = "\n".join(row[0] for row in db.execute("EXPLAIN " + QUERIES["queue_status"]))
    assert "Seq Scan on jobs" not in plan, plan
