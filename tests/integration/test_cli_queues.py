"""`pgqueue queues`, `queues limit`, `queues pause` and `queues resume`, run as a user runs them, against real
PostgreSQL: what they print, what they change, and one line on stderr for every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
PASSWORD = "s3cretPW42"


def run(*args: str, dsn: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    if dsn is not None:
        environment["PGQUEUE_DSN"] = dsn
    return subprocess.run([PGQUEUE, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_listing_shows_counts_paused_and_limits(dsn: str, db: psycopg.Connection) -> None:
    assert run("queues", dsn=dsn).stdout.strip() == "no queues"
    db.execute("INSERT INTO pgqueue.jobs (queue, task) SELECT 'pdf', 'render' FROM generate_series(1, 3)")
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, status, held_by) VALUES ('mail', 'send', 'held', '[\"task:send\", 1]')"
    )
    db.execute(
        "INSERT INTO pgqueue.limits (name, scope, target, concurrency, key_arg) "
        "VALUES ('task:send', 'task', 'send', 2, 'to')"
    )
    assert run("queues", "limit", "pdf", "4", dsn=dsn).returncode == 0
    assert run("queues", "pause", "mail", dsn=dsn).returncode == 0
    listing = json.loads(run("queues", "--json", dsn=dsn).stdout)
    by_name = {queue["name"]: queue for queue in listing["queues"]}
    assert by_name["pdf"] == {"name": "pdf", "paused": False, "concurrency": 4, "rate": None, "jobs": {"pending": 3}}
    assert by_name["mail"] == {"name": "mail", "paused": True, "concurrency": None, "rate": None, "jobs": {"held": 1}}
    assert {row["name"]: row["concurrency"] for row in listing["limits"]} == {"queue:pdf": 4, "task:send": 2}
    text = run("queues", dsn=dsn).stdout
    assert "held" in text.splitlines()[0] and "paused" in text
    pdf_line = next(line for line in text.splitlines() if line.startswith(" pdf "))
    assert [cell.strip() for cell in pdf_line.split("|")][:5] == ["pdf", "-", "4", "-", "3"]


def test_limit_sets_changes_and_removes(dsn: str, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pgqueue.jobs (queue, task) VALUES ('pdf', 'render')")
    result = run("queues", "limit", "pdf", "4", dsn=dsn)
    assert result.returncode == 0 and "at most 4" in result.stdout, result
    assert run("queues", "limit", "pdf", "7", dsn=dsn).returncode == 0
    assert db.execute("SELECT concurrency FROM pgqueue.limits WHERE name = 'queue:pdf'").fetchall() == [(7,)]
    # Removing a limit releases its held jobs for the claim to decide on.
    db.execute("UPDATE pgqueue.jobs SET status = 'held', held_by = '[\"queue:pdf\"]'")
    result = run("queues", "limit", "pdf", "none", dsn=dsn)
    assert result.returncode == 0 and "no concurrency limit" in result.stdout, result
    assert "1 held job(s) released" in result.stdout
    assert db.execute("SELECT count(*) FROM pgqueue.limits").fetchone()[0] == 0
    assert db.execute("SELECT status, held_by FROM pgqueue.jobs").fetchall() == [("pending", None)]


def test_rate_limit_is_set_beside_the_concurrency_and_removed(dsn: str, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pgqueue.jobs (queue, task) VALUES ('pdf', 'render')")
    assert run("queues", "limit", "pdf", "4", dsn=dsn).returncode == 0
    result = run("queues", "limit", "pdf", "--rate", "10/S", dsn=dsn)
    assert result.returncode == 0 and "at most 10/s starts" in result.stdout, result
    settings = (
        "SELECT concurrency, rate, extract(epoch FROM rate_period)::int FROM pgqueue.limits WHERE name = 'queue:pdf'"
    )
    assert db.execute(settings).fetchall() == [(4, 10, 1)]  # the concurrency stays
    assert run("queues", "limit", "pdf", "none", "--rate", "100/m", dsn=dsn).returncode == 0
    assert db.execute(settings).fetchall() == [(None, 100, 60)]
    listing = json.loads(run("queues", "--json", dsn=dsn).stdout)
    assert [queue["rate"] for queue in listing["queues"]] == ["100/m"]
    assert [(row["name"], row["rate"], row["deferred"]) for row in listing["limits"]] == [("queue:pdf", "100/m", 0)]
    pdf_line = next(line for line in run("queues", dsn=dsn).stdout.splitlines() if line.startswith(" pdf "))
    assert [cell.strip() for cell in pdf_line.split("|")][:4] == ["pdf", "-", "-", "100/m"]
    # A job waiting for the rate's window is due at once when the rate goes: nothing waits on a rate that is gone.
    db.execute(
        "UPDATE pgqueue.jobs SET run_at = now() + interval '1 hour', deferred_by = %s",
        ('["rate", "queue:pdf"]',),
    )
    assert json.loads(run("queues", "--json", dsn=dsn).stdout)["limits"][0]["deferred"] == 1
    result = run("queues", "limit", "pdf", "--rate", "none", dsn=dsn)
    assert result.returncode == 0 and "no rate limit" in result.stdout, result
    assert db.execute("SELECT count(*) FROM pgqueue.limits").fetchone()[0] == 0
    row = db.execute("SELECT run_at <= now(), deferred_by FROM pgqueue.jobs").fetchone()
    assert row == (True, None)


def test_pause_and_resume(dsn: str, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pgqueue.jobs (queue, task) VALUES ('pdf', 'render')")
    result = run("queues", "pause", "pdf", dsn=dsn)
    assert result.returncode == 0 and result.stdout.strip() == "queue 'pdf' paused"
    assert db.execute("SELECT paused FROM pgqueue.queues WHERE name = 'pdf'").fetchall() == [(True,)]
    db.execute("LISTEN pgqueue_jobs")
    result = run("queues", "resume", "pdf", dsn=dsn)
    assert result.returncode == 0 and result.stdout.strip() == "queue 'pdf' resumed"
    assert db.execute("SELECT paused FROM pgqueue.queues WHERE name = 'pdf'").fetchall() == [(False,)]
    # The resume woke the queue's workers.
    notified = [json.loads(n.payload) for n in db.notifies(timeout=5, stop_after=1)]
    assert notified == [{"queue": "pdf", "run_at": 0}]


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["limit", "pdf", "abc"], 2, "not a whole number"),
        (["limit", "pdf", "0"], 2, "not between 1"),
        (["limit", "pdf", "2147483648"], 2, "not between 1"),
        (["limit", "pdf", "99999999999999999999999"], 2, "not between 1"),
        (["limit", "pdf", "1.5"], 2, "not a whole number"),
        (["limit", "pdf", "--", "-3"], 2, "not between 1"),
        (["limit", "pdf", "4\x1b[31m"], 2, "\\x1b"),
        (["pause", "a\x1b]0;owned\x07b"], 2, "control characters"),
        (["pause", ""], 2, "non-empty"),
        (["pause", "x" * 5000], 2, "at most 200"),
        (["resume", "nope"], 1, "unknown queue 'nope'"),
        (["pause", "nope"], 1, "unknown queue 'nope'"),
        (["limit", "nope", "3"], 1, "unknown queue 'nope'"),
        (["limit", "pdf"], 2, "give a concurrency"),
        (["limit", "pdf", "--rate", "10/d"], 2, "must look like '10/s'"),
        (["limit", "pdf", "--rate", "ten/s"], 2, "must look like '10/s'"),
        (["limit", "pdf", "--rate", "0/s"], 2, "between 1 and 10000"),
        (["limit", "pdf", "--rate", "9" * 5000 + "/s"], 2, "between 1 and 10000"),
        (["limit", "pdf", "--rate", "5/s\x1b[31m"], 2, "\\x1b"),
        (["limit", "pdf", "3", "--rate", "bad"], 2, "must look like"),
        (["limit", "nope", "--rate", "5/s"], 1, "unknown queue 'nope'"),
    ],
)
def test_bad_input_is_one_line(dsn: str, db: psycopg.Connection, args: list[str], code: int, text: str) -> None:
    db.execute("INSERT INTO pgqueue.jobs (queue, task) VALUES ('pdf', 'render')")
    line = one_line_error(run("queues", *args, dsn=dsn), code)
    assert text in line and "\x1b" not in line and "\x07" not in line, line
    # Nothing changed.
    assert db.execute("SELECT count(*) FROM pgqueue.limits").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM pgqueue.queues").fetchone()[0] == 0


def test_force_sets_up_a_queue_before_its_first_job(dsn: str, db: psycopg.Connection) -> None:
    assert run("queues", "pause", "later", "--force", dsn=dsn).returncode == 0
    assert run("queues", "limit", "later", "2", "--force", dsn=dsn).returncode == 0
    listing = json.loads(run("queues", "--json", dsn=dsn).stdout)
    assert listing["queues"] == [{"name": "later", "paused": True, "concurrency": 2, "rate": None, "jobs": {}}]


def test_names_from_the_table_are_shown_escaped(dsn: str, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pgqueue.jobs (queue, task) VALUES (%s, 'x')", ("evil\x1b[2J\nqueue",))
    result = run("queues", dsn=dsn)
    assert result.returncode == 0 and "\x1b" not in result.stdout and "evil\\x1b[2J\\nqueue" in result.stdout


def test_unreachable_database_and_password_never_shown() -> None:
    line = one_line_error(run("queues", dsn=f"postgresql://user:{PASSWORD}@127.0.0.1:1/db"), 1)
    assert PASSWORD not in line
    line = one_line_error(run("queues", "pause", "pdf", dsn=f"postgresql//user:{PASSWORD}@host/db"), 1)
    assert PASSWORD not in line
