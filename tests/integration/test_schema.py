"""Migrations produce exactly the SQLAlchemy metadata; the claim stays an index scan; the wheel ships migrations."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pgqueue.store import migrate
from pgqueue.store.queries import QUERIES
from pgqueue.store.schema import REVISION, SCHEMA, metadata

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_match_metadata(empty_dsn: str) -> None:
    migrate.upgrade(empty_dsn)
    engine = migrate.engine_for(empty_dsn)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "version_table_schema": SCHEMA,
                "include_object": lambda obj, name, type_, reflected, other: (
                    type_ != "table" or getattr(obj, "schema", None) == SCHEMA
                ),
                "compare_server_default": True,
            },
        )
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []


def test_the_code_needs_the_newest_migration() -> None:
    """Workers refuse a database behind REVISION: it must name the newest migration, and revisions must sort."""
    assert migrate.head_revision() == REVISION
    assert all(
        len(name.split("_")[0]) == 4
        for name in (p.name for p in Path(migrate.__file__).parents[2].glob("migrations/versions/0*.py"))
    )


def test_upgrade_twice_and_downgrade(empty_dsn: str) -> None:
    migrate.upgrade(empty_dsn)
    migrate.upgrade(empty_dsn)
    assert migrate.current_revision(empty_dsn) == migrate.head_revision()
    migrate.downgrade(empty_dsn, "base")
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('pgqueue.jobs')").fetchone()[0] is None


def test_upgrade_keeps_jobs_and_the_rules_hold_for_hand_written_sql(empty_dsn: str) -> None:
    """0001 had table CHECK constraints, 0002 domains: the rows survive the upgrade and the same rules hold."""
    migrate.upgrade(empty_dsn, "0001")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pgqueue.jobs (task, status) VALUES ('kept', 'failed')")
        migrate.upgrade(empty_dsn)
        assert conn.execute("SELECT task, status, max_attempts FROM pgqueue.jobs").fetchall() == [("kept", "failed", 5)]
        with pytest.raises(psycopg.errors.CheckViolation, match="job_status"):
            conn.execute("INSERT INTO pgqueue.jobs (task, status) VALUES ('x', 'complete')")
        with pytest.raises(psycopg.errors.CheckViolation, match="job_status"):
            conn.execute("UPDATE pgqueue.jobs SET status = 'done'")
        with pytest.raises(psycopg.errors.CheckViolation, match="attempt_limit"):
            conn.execute("INSERT INTO pgqueue.jobs (task, max_attempts) VALUES ('x', 0)")
        options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'pgqueue.jobs'::regclass").fetchone()[0]
        assert "autovacuum_vacuum_scale_factor=0" in options and "vacuum_index_cleanup=on" in options


def test_claim_uses_partial_index_with_many_finished_rows(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, finished_at) "
        "SELECT 'done', 'completed', now() FROM generate_series(1, 20000)"
    )
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 50)")
    db.execute("ANALYZE pgqueue.jobs")
    for name, params in [
        ("claim", {"limit": 10, "free": 10, "worker_id": "w", "lease": "30 seconds"}),
        (
            "claim_from_queues",
            {"limit": 10, "free": 10, "worker_id": "w", "lease": "30 seconds", "queues": ["default"]},
        ),
    ]:
        with db.transaction():
            plan = "\n".join(row[0] for row in db.execute("EXPLAIN " + QUERIES[name], params))
            expected = "jobs_claim_idx" if name == "claim" else "jobs_queue_claim_idx"
            assert f"Index Scan using {expected}" in plan, plan
            # The pending rows come in index order: no sort where they are picked and locked. (A limited
            # claim sorts its few limited candidates by their place in the claim, elsewhere in the plan.)
            picking = plan.split("CTE picked")[1].split("CTE decided")[0]
            assert "Seq Scan on jobs" not in plan and "Sort" not in picking.split("LockRows")[1], plan


@pytest.mark.timeout(300)
def test_wheel_ships_migrations(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("pgqueue-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pgqueue/_migrations/env.py" in names
    assert "pgqueue/_migrations/versions/0001_initial.py" in names
    assert "pgqueue/sql/queries.sql" in names
    assert "pgqueue/sql/demo.sql" in names  # every .sql file of the folder: the store's loader reads them all
    for package in ("store", "queue", "worker", "cron", "cli"):
        assert f"pgqueue/{package}/__init__.py" in names
