"""`pgqueue work --log-format json`: every stderr line of a real worker is one JSON object, with a line per job
event; library warnings and hostile job content included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

from pgqueue import Queue
from tests.apps import observe_app

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
HOSTILE_TASK = "\x1b[2J\x07evil\u202e\n" * 50


def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


@pytest.fixture
def jobs(dsn: str, db: psycopg.Connection):
    db.execute("CREATE TABLE observe_flags (flag text)")
    q = Queue(dsn)
    q.tasks = observe_app.queue.tasks
    yield q
    q.close()


def test_every_line_is_json_with_each_job_event(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    ok = jobs.enqueue("ok", {"n": 1})
    flaky = jobs.enqueue("flaky")
    boom = jobs.enqueue("boom")
    warns = jobs.enqueue("warns")
    held = jobs.enqueue("hold", {"flag": "never"})
    hostile = db.execute("INSERT INTO pgqueue.jobs (task) VALUES (%s) RETURNING id", (HOSTILE_TASK,)).fetchone()[0]
    # A job whose worker vanished mid-run: its lease long expired, its start recorded.
    lost = db.execute(
        "INSERT INTO pgqueue.jobs (task, args, status, attempts, worker_id, started_at, lease_expires_at) "
        "VALUES ('ok', '{\"n\": 2}', 'running', 1, 'gone:1:x', now() - interval '1 hour', now() - interval '1 hour')"
        " RETURNING id"
    ).fetchone()[0]
    worker = subprocess.Popen(
        [PGQUEUE, "work", "--app", "tests.apps.observe_app", "--log-format", "json", "--maintenance-interval", "0.5"],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: (
                db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status IN ('completed', 'failed')").fetchone()[0]
                == 6
            ),
            what="every job but the held one finished",
        )
        wait_until(
            lambda: db.execute("SELECT started_at IS NOT NULL FROM pgqueue.jobs WHERE id = %s", (held,)).fetchone()[0],
            what="the held job started",
        )
        jobs.cancel(held)  # the worker hears of it (NOTIFY, then its lease renewal) and stops the attempt
    finally:
        # Stopping waits for running jobs: the cancelled one stops as soon as the worker sees the cancel.
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=90)
    assert worker.returncode == 0, err

    lines = err.splitlines()
    assert lines, "no output"
    records = []
    for line in lines:
        assert line.isascii() and line.isprintable(), repr(line)  # escaped, nothing a terminal acts on
        record = json.loads(line)  # every line, not only the job events
        assert isinstance(record, dict) and {"time", "level", "logger", "message"} <= record.keys(), line
        records.append(record)
    events: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        if "event" in record:
            assert {"job_id", "task", "queue", "attempt", "worker"} <= record.keys(), record
            events[record["job_id"]].append(record)

    def kinds(job_id: int) -> list[str]:
        return [e["event"] for e in events[job_id]]

    assert kinds(ok) == ["started", "completed"]
    assert kinds(flaky) == ["started", "retried", "started", "completed"]
    assert kinds(boom) == ["started", "retried", "started", "failed"]
    assert kinds(hostile) == ["started", "failed"]
    assert events[hostile][0]["task"] == HOSTILE_TASK  # the name itself, safely escaped by JSON
    assert kinds(lost) == ["rescued", "started", "completed"]
    assert events[lost][0]["status"] == "pending"
    assert kinds(held) == ["started", "cancelled"]
    assert kinds(warns) == ["started", "completed"]
    # Each of those is said once: the worker's text lines about a retry, a failure, a stop or a rescue are left
    # out (and the worker's other lines stay).
    for job_id in (flaky, boom, hostile, lost, held):
        told_twice = [r for r in records if r["logger"] != "pgqueue.events" and f"job {job_id}" in r["message"]]
        assert not told_twice, told_twice
    assert any(r["logger"] == "pgqueue.worker" and "started" in r["message"] for r in records)
    completed = events[ok][1]
    assert completed["duration"] >= 0 and completed["task"] == "ok" and completed["queue"] == "default"
    assert completed["attempt"] == 1 and completed["worker"].split(":")[1] == str(worker.pid)
    assert events[boom][-1]["error"] == "ValueError: always fails" and events[boom][-1]["attempt"] == 2
    assert events[ok][0]["waited"] >= 0
    # A library's warning is a JSON line too, its newline escaped.
    warned = [r for r in records if r["logger"] == "py.warnings"]
    assert len(warned) == 1 and "a library's deprecation\nwith a second line" in warned[0]["message"]


def test_text_stays_the_default(jobs: Queue, dsn: str) -> None:
    jobs.enqueue("boom", max_attempts=1)  # fails for good at once (a burst worker may exit before a retry is due)
    run = subprocess.run(
        [PGQUEUE, "work", "--app", "tests.apps.observe_app", "--burst"],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "WARNING pgqueue.worker: job" in run.stderr
    assert not any(line.startswith("{") for line in run.stderr.splitlines())


def test_bad_log_format_and_errors_as_json(jobs: Queue, dsn: str) -> None:
    run = subprocess.run(
        [PGQUEUE, "work", "--app", "tests.apps.observe_app", "--log-format", "xml", "--burst"],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "log_format must be one of text, json" in run.stderr, run.stderr
    # A failure at startup is still a JSON line (an app that cannot be loaded).
    run = subprocess.run(
        [PGQUEUE, "work", "--app", "tests.apps.no_such_app", "--log-format", "json", "--burst"],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr
    for line in run.stderr.splitlines():
        assert isinstance(json.loads(line), dict), line
    assert json.loads(run.stderr.splitlines()[-1])["message"].startswith("error: ")
