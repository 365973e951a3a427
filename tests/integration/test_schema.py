"""Migrations produce exactly the SQLAlchemy metadata; the claim stays an index scan; the wheel ships migrations."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pgqueue.store import migrate, statements
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


def test_the_worker_led_lease_index_made_beforehand_is_kept(empty_dsn: str) -> None:
    """Migration 0018 rebuilds jobs_lease_idx inside its transaction, holding off writes on a big table. Its
    docstring says how to make the index beforehand without that (CREATE INDEX CONCURRENTLY, then rename); the
    migration must then keep that index, not drop and build it again."""
    migrate.upgrade(empty_dsn, "0017")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE INDEX CONCURRENTLY jobs_lease_new_idx ON pgqueue.jobs (worker_id, lease_expires_at) "
            "WHERE status = 'running'"
        )
        conn.execute("DROP INDEX pgqueue.jobs_lease_idx")
        conn.execute("ALTER INDEX pgqueue.jobs_lease_new_idx RENAME TO jobs_lease_idx")
        made = conn.execute("SELECT 'pgqueue.jobs_lease_idx'::regclass::oid").fetchone()[0]
        migrate.upgrade(empty_dsn)
        assert conn.execute("SELECT 'pgqueue.jobs_lease_idx'::regclass::oid").fetchone()[0] == made
        migrate.downgrade(empty_dsn, "0017")
        definition = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_lease_idx'").fetchone()[0]
        assert "(lease_expires_at)" in definition and "worker_id" not in definition, definition


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


def test_claim_walks_the_partial_index_whatever_the_statistics(db: psycopg.Connection) -> None:
    """The first burst of a fresh install: the table was vacuumed and analyzed empty, so its statistics know no
    job at all. Planned with those, a pick of 512 from 50,000 pending read every pending row by a bitmap scan and
    sorted them on disk (40 ms a claim). The pick inside the claim (pgqueue.pending_in_line and
    queue_pending_in_line, migration 0017) is the ordered scan of the claim index whatever the statistics, and
    stops at the claim's size; the claim joins what it picked by the primary key, never by a scan of the table."""
    db.execute("DELETE FROM pg_statistic WHERE starelid = 'pgqueue.jobs'::regclass")  # as a fresh install's
    db.execute("VACUUM ANALYZE pgqueue.jobs")
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 50000)")
    db.execute("LOAD 'auto_explain'")
    for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_analyze = on"):
        db.execute(f"SET auto_explain.{setting}")
    notices: list[str] = []
    db.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    for name, params in [
        ("claim", {"limit": 512, "free": 512, "worker_id": "w", "lease": "30 seconds"}),
        (
            "claim_from_queues",
            {"limit": 512, "free": 512, "worker_id": "w", "lease": "30 seconds", "queues": ["default"]},
        ),
    ]:
        notices.clear()
        with db.transaction():
            db.execute("SET LOCAL client_min_messages = log")
            claimed = db.execute(QUERIES[name], params).fetchall()
            db.execute("SET LOCAL client_min_messages = notice")
            assert len(claimed) == 512
            raise psycopg.Rollback()
        expected = "jobs_claim_idx" if name == "claim" else "jobs_queue_claim_idx"
        pick = next(message for message in notices if "FROM pgqueue.jobs AS job" in message and "pending" in message)
        assert f"Index Scan using {expected}" in pick and "Sort" not in pick and "Bitmap" not in pick, pick
        # It stops at the claim's 512 rows (PostgreSQL 18 prints rows=512.00).
        assert re.search(r"actual time=\S+ rows=512(\.00)? ", pick.split(f"Index Scan using {expected}")[1]), pick
        claim = next(message for message in notices if "UPDATE pgqueue.jobs AS job" in message)
        assert "Seq Scan on jobs" not in claim, claim


def test_a_claim_prepared_beside_an_empty_table_reads_only_what_it_claims(db: psycopg.Connection) -> None:
    """A worker started beside a near-empty table prepares its claim, and PostgreSQL keeps a plan made once for
    any values (a generic plan) until the statistics change. Made for a table of one page, that plan found the
    picked jobs by a sequential scan, and the claim's acks scanned the table twice more: each claim of 20 read the
    whole table (three times 5,030 rows), more as a burst filled it. The idle claim carries no ack, a busy one
    writes its acks in pgqueue.record_outcomes (migration 0021), and both write the picked jobs in
    pgqueue.claim_picked (migration 0019): each looks its jobs up by primary key."""
    db.execute("DELETE FROM pg_statistic WHERE starelid = 'pgqueue.jobs'::regclass")
    db.execute("VACUUM ANALYZE pgqueue.jobs")
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 40)")
    db.execute("SET plan_cache_mode = force_generic_plan")  # as after a prepared statement's fifth run
    lease = timedelta(seconds=30)
    running: list[tuple[int, int]] = []
    for queues in (None, ["default"]):
        idle = statements.record_outcomes_and_claim(worker_id="w", limit=20, lease=lease, queues=queues)
        # Planned now, beside a table of 40 jobs. Committed, not rolled back: psycopg forgets its prepared
        # statements after a ROLLBACK.
        claimed = db.execute(idle.sql, idle.params, prepare=True).fetchall()
        assert len(claimed) == 20
        running += [(row[0], row[4]) for row in claimed]
    for queues in (None, ["default"]):  # the busy claims, planned beside the same table: one start, one ack
        (started, acked), running = running[:2], running[2:]
        busy = statements.record_outcomes_and_claim(
            worker_id="w", limit=20, lease=lease, queues=queues, started=[started], completed=[(*acked, None)]
        )
        assert db.execute(busy.sql, busy.params, prepare=True).fetchall() == []  # nothing left to claim
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 5000)")
    db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now() WHERE id % 2 = 0 AND id > 40")
    # This backend's reads of the table not yet sent to the statistics (the claim's functions included).
    reads = "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
    for queues in (None, ["default"]):
        (started, acked), running = running[:2], running[2:]
        idle = statements.record_outcomes_and_claim(worker_id="w", limit=20, lease=lease, queues=queues)
        busy = statements.record_outcomes_and_claim(
            worker_id="w", limit=20, lease=lease, queues=queues, started=[started], completed=[(*acked, '"ok"')]
        )
        for claim in (idle, busy):
            with db.transaction():
                before = db.execute(reads).fetchone()
                claimed = db.execute(claim.sql, claim.params, prepare=True).fetchall()
                after = db.execute(reads).fetchone()
            assert before is not None and after is not None
            read = (after[0] - before[0], after[1] - before[1])
            assert len(claimed) == 20
            assert read == (0, 0), (queues, claim is busy, read)
        written = db.execute(
            "SELECT (SELECT started_at IS NOT NULL FROM pgqueue.jobs WHERE id = %s), "
            "(SELECT status = 'completed' AND result = '\"ok\"' FROM pgqueue.jobs WHERE id = %s)",
            [started[0], acked[0]],
        ).fetchone()
        assert written == (True, True), written
    statements_prepared = db.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    prepared = [row[0] for row in statements_prepared if "claim_picked" in row[0]]  # the claims, not `reads`
    assert len(prepared) == 4, prepared
    assert sum("record_outcomes" in text for text in prepared) == 2, prepared


def test_batch_statements_of_a_worker_started_beside_an_empty_table_read_only_their_jobs(dsn: str) -> None:
    """The same for the batch statements a worker sends on their own (outcomes without a claim, failures, snoozes,
    lease renewals): prepared, their plan made beside a table of 40 jobs read the whole table for each batch as
    it filled (10,080 rows to write the outcomes of 10 jobs in a table of 5,040). The acks are written in a
    function that finds their jobs by primary key (migration 0021), the others are planned for their arrays each
    time."""
    from pgqueue.store.run import count, fetch

    def batches(ids: list[int]) -> list[statements.Query[Any] | statements.Command]:
        return [
            statements.record_outcomes(
                worker_id="w", started=[(i, 1) for i in ids[:5]], completed=[(i, 1, None) for i in ids[5:10]]
            ),
            statements.fail_jobs(
                worker_id="w",
                failures=[statements.Failure(i, 1, True, timedelta(seconds=1), "e", None) for i in ids[10:15]],
            ),
            statements.snooze_jobs(worker_id="w", snoozed=[statements.Snoozed(i, 1, 60.0) for i in ids[15:20]]),
            statements.renew_leases(worker_id="w", held=[(i, 1) for i in ids[20:25]], lease=timedelta(minutes=5)),
        ]

    running = (
        "INSERT INTO pgqueue.jobs (task, status, worker_id, attempts, lease_expires_at) "
        "SELECT 'todo', 'running', 'w', 1, now() + interval '1 hour' FROM generate_series(1, %s)"
    )
    reads = "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables WHERE relid = 'pgqueue.jobs'::regclass"
    # Prepared at once, as the worker's connection does (prepare_threshold=1).
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as db:
        db.execute("DELETE FROM pg_statistic WHERE starelid = 'pgqueue.jobs'::regclass")
        db.execute("VACUUM ANALYZE pgqueue.jobs")
        db.execute(running, [40])
        db.execute("SET plan_cache_mode = force_generic_plan")
        ids = [row[0] for row in db.execute("SELECT id FROM pgqueue.jobs ORDER BY id")]
        for batch in batches(ids):
            count(db, batch) if isinstance(batch, statements.Command) else fetch(db, batch)
        db.execute(running, [5000])
        ids = [row[0] for row in db.execute("SELECT id FROM pgqueue.jobs WHERE id > 40 ORDER BY id")]
        for batch in batches(ids):
            with db.transaction():
                before = db.execute(reads).fetchone()
                if isinstance(batch, statements.Command):  # 5 starts and 5 completions
                    count(db, batch)
                    found = db.execute(
                        "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND started_at IS NOT NULL", [ids[:10]]
                    ).fetchone()
                    written, wanted = (found[0] if found else 0), 10
                else:
                    written, wanted = len(fetch(db, batch)), 5
                after = db.execute(reads).fetchone()
            assert before is not None and after is not None
            assert written == wanted, batch.sql
            assert (after[0] - before[0], after[1] - before[1]) == (0, 0), batch.sql


def test_acks_read_the_running_jobs_once_whatever_the_statistics(db: psycopg.Connection) -> None:
    """The acks of the same fresh install: with statistics that know no job, the planner expected one running
    job of the worker and, with the batch joined as a table, looped over the whole batch once per running job
    (loops=512: 26.6 ms for an ack of 115, 47 ms for a failure batch). Each batch statement is one scan of the
    table, its arrays looked up by position: no node of its plan runs more than once, it reads none of the jobs
    other workers run, and it writes exactly the batch's jobs with their own values."""
    db.execute("DELETE FROM pg_statistic WHERE starelid = 'pgqueue.jobs'::regclass")
    db.execute("VACUUM ANALYZE pgqueue.jobs")
    db.execute("INSERT INTO pgqueue.jobs (task) SELECT 'todo' FROM generate_series(1, 50000)")
    db.execute(
        "UPDATE pgqueue.jobs SET status = 'running', worker_id = 'w', attempts = 1, "
        "lease_expires_at = now() + interval '1 minute' WHERE id IN (SELECT id FROM pgqueue.jobs ORDER BY id LIMIT 512)"
    )
    # Jobs another worker runs: this worker's acks must not read them (migration 0018: the running jobs' index leads
    # with the worker; led by the lease time, each ack read every worker's running jobs).
    db.execute(
        "UPDATE pgqueue.jobs SET status = 'running', worker_id = 'v', attempts = 1, "
        "lease_expires_at = now() + interval '1 minute' "
        "WHERE id IN (SELECT id FROM pgqueue.jobs ORDER BY id DESC LIMIT 5000)"
    )
    running = [
        row[0]
        for row in db.execute("SELECT id FROM pgqueue.jobs WHERE status = 'running' AND worker_id = 'w' ORDER BY id")
    ]
    batch = running[100:215][::-1]  # 115 of them, not in table order, so that a mix-up of positions shows
    count = len(batch)
    stale = running[300]  # in the batch with an old attempt number: a late ack, left alone
    ids, attempts = [*batch, stale], [1] * count + [0]
    cases: list[tuple[str, dict[str, object], str]] = [
        (
            "record_outcomes",  # starts, then completions, of the same jobs: both written
            {
                "started_ids": ids,
                "started_attempts": attempts,
                "ids": ids,
                "attempts": attempts,
                "results": [f'{{"n": {i}}}' for i in ids],
                "worker_id": "w",
            },
            "started_at IS NOT NULL AND finished_at IS NOT NULL, result ->> 'n'",
        ),
        (
            "fail_jobs",
            {
                "ids": ids,
                "attempts": attempts,
                "retry": [i % 2 == 0 for i in ids],
                "delays": ["1 hour"] * len(ids),
                "errors": [f"e{i}" for i in ids],
                "tracebacks": [None] * len(ids),
                "trace_ids": [None] * len(ids),
                "worker_id": "w",
            },
            "error",
        ),
        (
            "snooze_jobs",
            {"ids": ids, "attempts": attempts, "delays": ["1 hour"] * len(ids), "worker_id": "w"},
            "snoozes",
        ),
    ]
    # What the statement read of the table, by sequential scans and by index (the function's statements included).
    reads = (
        "SELECT seq_scan, seq_tup_read, coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
        "WHERE relid = 'pgqueue.jobs'::regclass"
    )
    for name, params, written in cases:
        with db.transaction():
            before = db.execute(reads).fetchone()
            plan = "\n".join(row[0] for row in db.execute(f"EXPLAIN (ANALYZE, COSTS off) {QUERIES[name]}", params))
            after = db.execute(reads).fetchone()
            raise psycopg.Rollback()
        assert set(re.findall(r"loops=(\d+)", plan)) == {"1"}, plan
        assert all(int(removed) < 1000 for removed in re.findall(r"Rows Removed by Filter: (\d+)", plan)), plan
        assert before is not None and after is not None
        seq_scans, seq_read, fetched = (late - early for late, early in zip(after, before, strict=True))
        # No scan of the whole table; by index, this worker's running jobs at most, for each of its statements.
        assert (seq_scans, seq_read) == (0, 0) and fetched <= 2 * 512, (name, seq_scans, seq_read, fetched)
        with db.transaction():
            db.execute(QUERIES[name], params)
            rows = db.execute(f"SELECT id, {written}, status FROM pgqueue.jobs WHERE id = ANY(%s)", [ids]).fetchall()
            raise psycopg.Rollback()
        by_id = {row[0]: row[1:] for row in rows}
        if name == "record_outcomes":
            assert by_id[stale] == (False, None, "running"), name
        else:
            untouched = 0 if name == "snooze_jobs" else None  # the stale job's column as it was: snoozes is 0
            assert by_id[stale] == (untouched, "running"), name
        for job_id in batch:
            if name == "record_outcomes":
                assert by_id[job_id] == (True, str(job_id), "completed")
                continue
            value, status = by_id[job_id]
            if name == "fail_jobs":
                assert (value, status) == (f"e{job_id}", "pending" if job_id % 2 == 0 else "failed")
            else:
                assert (value, status) == (1, "pending")


def test_a_batch_with_two_attempts_of_one_job_writes_the_latest(db: psycopg.Connection) -> None:
    """The batch statements read a job's values at the first position of its id. An old attempt's outcome kept
    across a reconnect can sit in a batch before the new attempt's outcome of the same job: the batch keeps the
    latest attempt (statements.latest_attempts), so the new attempt's outcome is written, not lost behind the
    old one's mismatch."""
    db.execute(
        "INSERT INTO pgqueue.jobs (task, status, worker_id, attempts, lease_expires_at) "
        "SELECT 'todo', 'running', 'w', 2, now() + interval '1 minute' FROM generate_series(1, 4)"
    )
    done, failed, snoozed, started = (row[0] for row in db.execute("SELECT id FROM pgqueue.jobs ORDER BY id"))
    starts = {(started, 1): 0.0, (started, 2): 0.0}
    record = statements.record_outcomes(
        worker_id="w", started=starts, completed=[(done, 1, '"old"'), (done, 2, '"new"')]
    )
    db.execute(record.sql, record.params)
    for query in (
        statements.fail_jobs(
            worker_id="w",
            failures=[
                statements.Failure(failed, 1, False, timedelta(0), "old", None),
                statements.Failure(failed, 2, False, timedelta(0), "new", None),
            ],
        ),
        statements.snooze_jobs(
            worker_id="w", snoozed=[statements.Snoozed(snoozed, 1, 60.0), statements.Snoozed(snoozed, 2, 60.0)]
        ),
    ):
        db.execute(query.sql, query.params)
    rows = {
        row[0]: row[1:] for row in db.execute("SELECT id, status, result, error, snoozes, started_at FROM pgqueue.jobs")
    }
    assert rows[done][:2] == ("completed", "new")
    assert (rows[failed][0], rows[failed][2]) == ("failed", "new")
    assert (rows[snoozed][0], rows[snoozed][3]) == ("pending", 1)
    assert rows[started][0] == "running" and rows[started][4] is not None


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


def test_the_claims_functions_keep_their_plans(db: psycopg.Connection) -> None:
    """Before PostgreSQL 18 a SQL function that is not inlined (one with SET options) is planned again on every
    call (migration 0023): the claim's picks and counts are PL/pgSQL, whose plans last the session, and the only
    SQL function with settings is reserve_job_ids (run as its owner, once per batch written with COPY). grant_limits
    plans its statements once for any values."""
    rows = dict(
        db.execute(
            "SELECT p.proname, l.lanname FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang "
            "WHERE p.pronamespace = 'pgqueue'::regnamespace"
        ).fetchall()
    )
    claims = ("pending_in_line", "queue_pending_in_line", "held_in_line", "stripe_running", "grant_limits")
    assert {name: rows[name] for name in claims} == dict.fromkeys(claims, "plpgsql")
    configured_sql = db.execute(
        "SELECT p.proname FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang "
        "WHERE p.pronamespace = 'pgqueue'::regnamespace AND l.lanname = 'sql' AND p.proconfig IS NOT NULL"
    ).fetchall()
    assert configured_sql == [("reserve_job_ids",)]
    (config,) = db.execute("SELECT proconfig FROM pg_proc WHERE proname = 'grant_limits'").fetchone()
    assert "plan_cache_mode=force_generic_plan" in config, config


def test_the_functions_planned_with_sequential_scans_off_never_jit_compile(db: psycopg.Connection) -> None:
    """Before PostgreSQL 18 a step a setting disables is priced over jit_above_cost: a statement of such a function
    with no other way would be compiled to machine code each time it is planned (66 ms in a trial). Each function
    that turns sequential scans off turns JIT off too."""
    rows = db.execute(
        "SELECT proname, proconfig FROM pg_proc WHERE pronamespace = 'pgqueue'::regnamespace "
        "AND 'enable_seqscan=off' = ANY(proconfig)"
    ).fetchall()
    names = {name for name, _config in rows}
    assert {"claim_picked", "record_outcomes", "claim_unlimited"} <= names, names
    assert all("jit=off" in config for _name, config in rows), rows
