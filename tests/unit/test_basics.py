"""Pure pieces: backoff, durations, DSN resolution, the SQL file, the public surface."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

import pgqueue
from pgqueue.durations import parse_duration
from pgqueue.queue.retry import Backoff, Fixed
from pgqueue.settings import configured_dsn, normalize_dsn
from pgqueue.store.queries import QUERIES, load


def test_public_surface_is_pinned() -> None:
    assert sorted(pgqueue.__all__) == [
        "Backoff",
        "Batch",
        "CronError",
        "DatabaseUnavailableError",
        "Discard",
        "Fixed",
        "InBatch",
        "InvalidJobError",
        "JobCancelled",
        "JobContext",
        "JobEvent",
        "JobFailed",
        "JobNotFoundError",
        "JobSpec",
        "Observer",
        "PgQueueError",
        "Queue",
        "SchemaMissingError",
        "SchemaOutdatedError",
        "Snooze",
        "Task",
        "UnknownTaskError",
        "Worker",
        "WorkerSettings",
        "current_job",
    ]
    for name in pgqueue.__all__:
        assert getattr(pgqueue, name) is not None


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    policy = Backoff(base=2, max_delay=100, jitter=0.1)
    rng = random.Random(1)
    for attempt in range(1, 6):
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.9 * 2**attempt <= d <= 1.1 * 2**attempt for d in delays)
        assert len({round(d, 6) for d in delays}) > 100  # jitter spreads retries
    assert all(90 <= policy.delay(30, rng) <= 110 for _ in range(50))
    assert Backoff(jitter=0).delay(3) == 8
    assert Fixed(1.5).delay(9) == 1.5
    with pytest.raises(ValueError):
        Backoff(base=0.5)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10), ("10s", 10), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "-5s", "5 m", "m5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_dsn_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert configured_dsn(None) is None
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-database-url/db")
    assert configured_dsn(None) == "postgresql://from-database-url/db"
    monkeypatch.setenv("PGQUEUE_DSN", "postgresql+psycopg://from-pgqueue/db")
    assert configured_dsn(None) == "postgresql://from-pgqueue/db"
    assert configured_dsn("host=explicit dbname=x") == "host=explicit dbname=x"


def test_normalize_dsn() -> None:
    assert normalize_dsn("postgres://u@h/d") == "postgresql://u@h/d"
    assert normalize_dsn(" postgresql+psycopg2://u@h/d ") == "postgresql://u@h/d"


def test_sql_file_has_every_statement_and_binds_parameters() -> None:
    expected = {
        "insert_job", "insert_jobs", "claim", "claim_from_queues", "record_outcomes", "fail_jobs", "renew_leases",
        "rescue_lost_jobs", "next_run_at", "prune_finished", "retry_failed", "cancel_jobs",
    }  # fmt: skip
    assert expected <= set(QUERIES)
    for name, query in QUERIES.items():
        assert query and not query.rstrip().endswith(";"), name
        assert "{" not in query.replace("jsonb_build_object", ""), name  # never str.format'ed


def test_sql_loader_reads_every_file_and_refuses_a_name_twice(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: one\n-- why\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: two\nSELECT 2;\n")
    assert load(tmp_path) == {"one": "SELECT 1", "two": "SELECT 2"}
    (tmp_path / "c.sql").write_text("-- name: one\nSELECT 3;\n")
    with pytest.raises(ValueError, match=r"'one' is defined in both a\.sql and c\.sql"):
        load(tmp_path)
    (tmp_path / "c.sql").write_text("-- name: three\nSELECT 3;\n-- name: three\nSELECT 4;\n")
    with pytest.raises(ValueError, match=r"c\.sql: statement 'three' is defined twice"):
        load(tmp_path)


def test_the_shipped_sql_files_are_all_loaded() -> None:
    assert {"claim", "sync_schedules", "demo_history", "probe"} <= set(QUERIES)
