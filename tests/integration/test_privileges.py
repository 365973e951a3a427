"""Least privilege with real roles: a migration role that owns schema pgqueue, an application role that enqueues and a
worker role that runs `pgqueue work`, each holding only the privileges pgqueue.grants gives it.

Each test gets its own database on which PUBLIC has nothing (no CONNECT, no TEMP) and three new roles (cluster-wide,
so their names carry a random suffix; dropped afterwards). The CLI runs as a subprocess as each role.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgqueue import JobSpec, Queue
from pgqueue.queue.jobs import COPY_AT_LEAST
from pgqueue.store import grants, migrate, run, statements
from pgqueue.store.queries import QUERIES

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")


@dataclass(frozen=True)
class Setup:
    """A database and the roles of this test; `dsn(role)` connects as one of them (None: the superuser)."""

    server_dsn: str
    dbname: str
    owner: str
    app: str
    worker: str

    def dsn(self, role: str | None = None) -> str:
        return make_conninfo(self.server_dsn, dbname=self.dbname, **({"user": role} if role else {}))

    def superuser(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn(), autocommit=True)


async def _enqueue_many_async(queue: Queue, jobs: list[Any]) -> list[int]:
    """enqueue_many_async, its async connections closed in the event loop that opened them."""
    try:
        return await queue.enqueue_many_async(jobs)
    finally:
        await queue.aclose()


def _run_as_superuser(server_dsn: str, *statements: sql.Composable, dbname: str = "postgres") -> None:
    with psycopg.connect(make_conninfo(server_dsn, dbname=dbname), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def roles(server_dsn: str) -> Iterator[tuple[str, str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"pgqueue_owner_{suffix}", f"pgqueue_app_{suffix}", f"pgqueue_worker_{suffix}")
    _run_as_superuser(server_dsn, *(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(n)) for n in names))
    yield names
    # The test's database is dropped by then, and with it everything these roles owned or were granted.
    _run_as_superuser(server_dsn, *(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(n)) for n in names))


@pytest.fixture
def fresh(server_dsn: str, roles: tuple[str, str, str]) -> Iterator[Setup]:
    """An empty database: CONNECT for the three roles, CREATE for the owner only, nothing for PUBLIC."""
    owner, app, worker = roles
    setup = Setup(server_dsn, f"pgqueue_test_priv_{uuid.uuid4().hex[:10]}", owner, app, worker)
    database = sql.Identifier(setup.dbname)
    _run_as_superuser(server_dsn, sql.SQL("CREATE DATABASE {}").format(database))
    try:
        _run_as_superuser(
            server_dsn,
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database),
            sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"),
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                database, sql.SQL(", ").join(map(sql.Identifier, roles))
            ),
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(database, sql.Identifier(owner)),
            dbname=setup.dbname,
        )
        yield setup
    finally:
        _run_as_superuser(server_dsn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))


def revoke_create(setup: Setup) -> None:
    _run_as_superuser(
        setup.server_dsn,
        sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(
            sql.Identifier(setup.dbname), sql.Identifier(setup.owner)
        ),
        dbname=setup.dbname,
    )


@pytest.fixture
def migrated(fresh: Setup) -> Setup:
    """Migrated by the owner, who then loses CREATE on the database; the app and worker roles granted."""
    migrate.upgrade(fresh.dsn(fresh.owner))
    revoke_create(fresh)
    with psycopg.connect(fresh.dsn(fresh.owner), autocommit=True) as conn:
        grants.apply(conn, app_role=fresh.app, worker_role=fresh.worker)
    return fresh


def pgqueue_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    return subprocess.run([PGQUEUE, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *texts: str) -> None:
    assert result.returncode == 1, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(text in lines[0] for text in texts), lines[0]


# -- the migration role ---------------------------------------------------------------------------------------------


def test_owner_migrates_an_empty_database_then_checks_it_without_create(fresh: Setup) -> None:
    first = pgqueue_cli("migrate", "--dsn", fresh.dsn(fresh.owner))
    assert first.returncode == 0, first.stderr
    assert f"migrated: empty -> {migrate.head_revision()}" in first.stdout
    with fresh.superuser() as db:
        owners = db.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'pgqueue'::regnamespace"
        ).fetchall()
        assert owners == [(fresh.owner,)]
    revoke_create(fresh)  # an up-to-date database needs no CREATE on it
    second = pgqueue_cli("migrate", "--dsn", fresh.dsn(fresh.owner))
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout


def test_owner_without_create_migrates_into_a_schema_made_for_it(fresh: Setup) -> None:
    revoke_create(fresh)
    refused = pgqueue_cli("migrate", "--dsn", fresh.dsn(fresh.owner))
    assert_one_line_error(refused, "permission denied for database", "needs CREATE on the database")
    with fresh.superuser() as db:
        db.execute(sql.SQL("CREATE SCHEMA pgqueue AUTHORIZATION {}").format(sql.Identifier(fresh.owner)))
    result = pgqueue_cli("migrate", "--dsn", fresh.dsn(fresh.owner))
    assert result.returncode == 0, result.stderr
    assert f"migrated: empty -> {migrate.head_revision()}" in result.stdout


def test_two_migrates_at_once_serialize(fresh: Setup) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL")}
    command = [PGQUEUE, "migrate", "--dsn", fresh.dsn(fresh.owner)]
    both = [
        subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in "ab"
    ]
    results = [process.communicate(timeout=60) for process in both]
    assert [process.returncode for process in both] == [0, 0], results
    assert migrate.current_revision(fresh.dsn()) == migrate.head_revision()


def test_up_to_date_check_needs_only_the_version_table(migrated: Setup) -> None:
    for role in (migrated.app, migrated.worker):
        result = pgqueue_cli("migrate", "--dsn", migrated.dsn(role))
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout
    # Not at head: only the owner can migrate, and anyone else is told so in one line.
    migrate.downgrade(migrated.dsn(migrated.owner), "0004")
    refused = pgqueue_cli("migrate", "--dsn", migrated.dsn(migrated.worker))
    assert_one_line_error(refused, "permission denied for schema pgqueue", "the role that owns schema pgqueue")


def test_missing_lists_what_a_role_lacks(migrated: Setup) -> None:
    with migrated.superuser() as db:
        assert grants.missing(db, app_role=migrated.app, worker_role=migrated.worker) == []
        db.execute(sql.SQL("REVOKE DELETE ON pgqueue.schedule_fires FROM {}").format(sql.Identifier(migrated.worker)))
        db.execute(sql.SQL("REVOKE SELECT (dedup_key) ON pgqueue.jobs FROM {}").format(sql.Identifier(migrated.app)))
        assert grants.missing(db, app_role=migrated.app, worker_role=migrated.worker) == [
            f"{migrated.app}: SELECT (dedup_key) on pgqueue.jobs",
            f"{migrated.worker}: DELETE on pgqueue.schedule_fires",
        ]
        # The owner can grant again at any time: the statements are idempotent.
        with psycopg.connect(migrated.dsn(migrated.owner), autocommit=True) as owner:
            grants.apply(owner, app_role=migrated.app, worker_role=migrated.worker)
            grants.apply(owner, app_role=migrated.app, worker_role=migrated.worker)
        assert grants.missing(db, app_role=migrated.app, worker_role=migrated.worker) == []


def test_grant_command_grants_checks_and_prints(fresh: Setup) -> None:
    """`pgqueue grant` as the schema's owner: --check lists what the roles lack (exit 1), a plain run grants it,
    --check then passes; a non-owner cannot grant, in one line."""
    migrate.upgrade(fresh.dsn(fresh.owner))
    roles = ("--app-role", fresh.app, "--worker-role", fresh.worker)
    lacking = pgqueue_cli("grant", *roles, "--check", "--dsn", fresh.dsn(fresh.owner))
    assert lacking.returncode == 1 and f"missing: {fresh.app}: INSERT on pgqueue.jobs" in lacking.stderr, lacking
    granted = pgqueue_cli("grant", *roles, "--dsn", fresh.dsn(fresh.owner))
    assert granted.returncode == 0 and "privileges granted" in granted.stdout, granted
    checked = pgqueue_cli("grant", *roles, "--check", "--dsn", fresh.dsn(fresh.owner))
    assert (checked.returncode, checked.stderr) == (0, ""), checked
    with fresh.superuser() as db:
        assert grants.missing(db, app_role=fresh.app, worker_role=fresh.worker) == []
    # Run by a role that owns nothing: refused in one line, nothing granted (where PostgreSQL only warns, the
    # check after the statements says what is still missing).
    refused = pgqueue_cli("grant", "--worker-role", fresh.app, "--dsn", fresh.dsn(fresh.app))
    assert_one_line_error(refused, "permission denied")
    with fresh.superuser() as db:
        assert f"{fresh.app}: UPDATE on pgqueue.jobs" in grants.missing(db, worker_role=fresh.app)
    printed = pgqueue_cli("grant", "--app-role", 'web"app', "--print")  # no database at all
    assert printed.returncode == 0 and 'GRANT INSERT ON TABLE "pgqueue"."jobs" TO "web""app";' in printed.stdout
    assert pgqueue_cli("grant").returncode == 2


# -- the application role -------------------------------------------------------------------------------------------


def test_app_role_enqueues_every_way_and_nothing_more(migrated: Setup) -> None:
    queue = Queue(migrated.dsn(migrated.app))
    queue.task(name="noop")(lambda n=0: None)
    try:
        single = queue.enqueue("noop", {"n": 1})
        deduped = queue.enqueue("noop", {"n": 2}, dedup_key="order-42")
        assert queue.enqueue("noop", {"n": 3}, dedup_key="order-42") == deduped
        small = queue.enqueue_many([("noop", {"n": n}) for n in range(10)])  # one INSERT
        assert len(small) == 10
        big = queue.enqueue_many([JobSpec("noop", {"n": n}) for n in range(600)])  # COPY, ids drawn first
        assert COPY_AT_LEAST <= 600 and len(big) == 600 and big == sorted(big)
        big_async = asyncio.run(_enqueue_many_async(queue, [("noop", {"n": n}) for n in range(600)]))
        with psycopg.connect(migrated.dsn(migrated.app)) as conn:  # in the caller's transaction, COPY too
            in_transaction = queue.enqueue_many([("noop", {})] * 600, connection=conn)
            conn.commit()
        assert len(set(big) | set(big_async) | set(in_transaction)) == 1800
    finally:
        queue.close()
    by_cli = pgqueue_cli("enqueue", "noop", "--args", '{"n": 4}', "--dsn", migrated.dsn(migrated.app))
    assert by_cli.returncode == 0, by_cli
    with migrated.superuser() as db:
        assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0] == 3 + 10 + 1800
        assert db.execute("SELECT status FROM pgqueue.jobs WHERE id = %s", (single,)).fetchone() == ("pending",)

    with psycopg.connect(migrated.dsn(migrated.app), autocommit=True) as app:
        app.execute("INSERT INTO pgqueue.jobs (task) VALUES ('by_hand')")  # a hand-written enqueue works too
        for refused in (
            "UPDATE pgqueue.jobs SET priority = 10",
            "DELETE FROM pgqueue.jobs",
            "SELECT args FROM pgqueue.jobs",  # no reading other jobs' arguments
            "INSERT INTO pgqueue.schedules (name, cron, task) VALUES ('x', '* * * * *', 'noop')",
            "SELECT nextval('pgqueue.jobs_id_seq')",  # the sequence stays private: reserve_job_ids draws the ids
            "CREATE TABLE pgqueue.mine (id int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(refused)


def test_app_role_uses_unique_for_debounce_and_waits_for_results(migrated: Setup) -> None:
    queue = Queue(migrated.dsn(migrated.app))
    queue.task(name="noop")(lambda n=0: None)
    try:
        recent = queue.enqueue("noop", dedup_key="report", unique_for=600)
        with migrated.superuser() as db:
            db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now(), result = '7' WHERE id = %s",
                       (recent,))  # fmt: skip
        assert queue.enqueue("noop", dedup_key="report", unique_for=600) == recent
        assert queue.result(recent, timeout=5) == 7
        debounced = queue.enqueue("noop", {"n": 1}, dedup_key="sync", debounce=30)
        assert queue.enqueue("noop", {"n": 2}, dedup_key="sync", debounce=30) == debounced
    finally:
        queue.close()
    with migrated.superuser() as db:
        assert db.execute("SELECT args FROM pgqueue.jobs WHERE id = %s", (debounced,)).fetchone() == ({"n": 2},)


# -- the worker role ------------------------------------------------------------------------------------------------


def test_app_role_enqueues_workflows_and_the_worker_role_releases_them(migrated: Setup) -> None:
    """Dependencies need no UPDATE on jobs for the app role: the triggers that settle them run as the owner."""
    app = Queue(migrated.dsn(migrated.app))
    app.task(name="noop")(lambda n=0: None)
    try:
        first = app.enqueue("noop", {"n": 1})
        chained = app.chain(("noop", {}), ("noop", {}))
        waiting = app.enqueue("noop", {}, after=[first, chained[1]])
        batch = app.batch([("noop", {})] * 3, on_complete=("noop", {}))
    finally:
        app.close()
    with migrated.superuser() as db:
        db.execute("UPDATE pgqueue.jobs SET status = 'completed' WHERE id = %s", (first,))
    again = Queue(migrated.dsn(migrated.app))
    again.task(name="noop")(lambda n=0: None)
    try:  # a parent that has finished already is settled at once, by the app role's statement
        settled = again.enqueue("noop", {}, after=[first])
    finally:
        again.close()
    env = {**os.environ, "PGQUEUE_DSN": migrated.dsn(migrated.worker)}
    worked = subprocess.run(
        [PGQUEUE, "work", "--app", "tests.apps.jobs_app", "--burst"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert worked.returncode == 0, worked.stdout + worked.stderr
    with migrated.superuser() as db:
        statuses = db.execute(
            "SELECT status FROM pgqueue.jobs WHERE id = ANY(%s)", ([*chained, waiting, settled, batch.callback],)
        ).fetchall()
    assert statuses == [("completed",)] * 5


def test_worker_role_runs_jobs_rescues_prunes_and_operates(migrated: Setup) -> None:
    queue = Queue(migrated.dsn(migrated.app))
    queue.task(name="noop")(lambda n=0: None)
    queue.task(name="always_fails", max_attempts=2)(lambda: None)
    try:
        done = [*queue.enqueue_many([("noop", {"n": n}) for n in range(600)]), queue.enqueue("noop")]
        failing = queue.enqueue("always_fails")
    finally:
        queue.close()
    with migrated.superuser() as db:
        (lost,) = db.execute(  # a job whose worker vanished: the burst worker rescues it, then runs it
            "INSERT INTO pgqueue.jobs (task, status, attempts, worker_id, started_at, lease_expires_at) "
            "VALUES ('noop', 'running', 1, 'gone', now() - interval '1 minute', now() - interval '1 second') "
            "RETURNING id"
        ).fetchone()

        for _ in range(10):  # the failing job waits for its retry (0.1 s) between bursts
            result = pgqueue_cli(
                "work", "--app", "tests.apps.jobs_app", "--burst", "--dsn", migrated.dsn(migrated.worker)
            )
            assert result.returncode == 0, result.stderr
            assert "permission denied" not in result.stderr and "Traceback" not in result.stderr, result.stderr
            if db.execute("SELECT status FROM pgqueue.jobs WHERE id = %s", (failing,)).fetchone() == ("failed",):
                break
            time.sleep(0.2)
        statuses = dict(db.execute("SELECT status, count(*) FROM pgqueue.jobs GROUP BY status").fetchall())
        assert statuses == {"completed": len(done) + 1, "failed": 1}
        (errors,) = db.execute("SELECT errors FROM pgqueue.jobs WHERE id = %s", (lost,)).fetchone()
        assert errors and errors[0]["error"].startswith("worker lost")

    # The operator commands, as the worker role.
    worker_dsn = migrated.dsn(migrated.worker)
    retried = pgqueue_cli("retry-failed", "--id", str(failing), "--dsn", worker_dsn)
    assert retried.returncode == 0 and "1 failed job(s) retried" in retried.stdout, retried
    cancelled = pgqueue_cli("cancel", str(failing), "--dsn", worker_dsn)
    assert cancelled.returncode == 0 and f"cancelled 1 job(s): {failing}" in cancelled.stdout, cancelled
    status = pgqueue_cli("status", "--json", "--dsn", worker_dsn)
    assert status.returncode == 0, status
    assert json.loads(status.stdout)["queues"]["default"]["jobs"] == {"cancelled": 1, "completed": 602}
    with psycopg.connect(worker_dsn, autocommit=True) as worker:
        # The timed housekeeping (the pruners run minutes after a worker starts, so not in a burst).
        pruned = worker.execute(QUERIES["prune_finished"], {"retention": "0 seconds", "batch": 5000}).rowcount
        assert pruned == 603
        # The registry of workers, by the worker's own statements: its row upserted (twice: a retried start),
        # its heartbeat with the rescue, its stop, the pruning of rows long silent.
        entry = statements.WorkerEntry(
            worker_id="w1", host="h", pid=1, queues=["a"], concurrency=4, heartbeat_interval=15.0
        )
        for _ in range(2):
            run.count(worker, statements.register_worker(entry))
        assert run.fetch(worker, statements.heartbeat_and_rescue_lost_jobs(entry, running=2)) == []
        run.count(worker, statements.worker_stopped("w1"))
        with migrated.superuser() as db:
            db.execute("UPDATE pgqueue.workers SET heartbeat_at = now() - interval '2 days' WHERE id = 'w1'")
        assert run.count(worker, statements.prune_workers(keep=timedelta(days=1), batch=10)) == 1
        worker.execute("SELECT paused FROM pgqueue.queues")
        for refused in ("DROP TABLE pgqueue.workers", "INSERT INTO pgqueue.queues (name, paused) VALUES ('q', true)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                worker.execute(refused)


def test_worker_role_fires_cron_schedules(migrated: Setup) -> None:
    process = subprocess.Popen(
        [PGQUEUE, "work", "--app", "tests.apps.cron_app", "--concurrency", "2", "--dsn", migrated.dsn(migrated.worker)],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ran = 0
    try:
        with migrated.superuser() as db:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and process.poll() is None:
                (ran,) = db.execute(
                    "SELECT count(*) FROM pgqueue.schedule_fires f JOIN pgqueue.jobs j ON j.id = f.job_id "
                    "WHERE f.schedule = 'every_second' AND j.status = 'completed'"
                ).fetchone()
                if ran >= 2:
                    break
                time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert ran >= 2, output
    assert "permission denied" not in output and "Traceback" not in output, output
    with psycopg.connect(migrated.dsn(migrated.worker), autocommit=True) as worker:  # the fires' pruner
        pruned = worker.execute(QUERIES["prune_schedule_fires"], {"retention": "0 seconds", "batch": 5000}).fetchall()
        assert len(pruned) >= 1


def test_worker_role_reads_the_history_views_and_the_app_role_does_not(migrated: Setup) -> None:
    with migrated.superuser() as db:
        job = db.execute(
            "INSERT INTO pgqueue.jobs (task, status, attempts, started_at, finished_at, meta) "
            "VALUES ('report', 'completed', 1, now() - interval '2 seconds', now(), '{\"order_id\": 42}') RETURNING id"
        ).fetchone()[0]
    with psycopg.connect(migrated.dsn(migrated.worker), autocommit=True) as worker:
        assert worker.execute("SELECT job_id, outcome FROM pgqueue.attempts").fetchall() == [(job, "completed")]
        assert worker.execute("SELECT task, completed FROM pgqueue.task_hours").fetchall() == [("report", 1)]
        assert worker.execute("SELECT count(*) FROM pgqueue.stuck_jobs").fetchone() == (0,)
    for view in ("attempts", "task_hours", "stuck_jobs"):
        with (
            psycopg.connect(migrated.dsn(migrated.app), autocommit=True) as app,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            app.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier("pgqueue", view)))
    shown = pgqueue_cli("jobs", "--meta-contain", '{"order_id": 42}', "--json", "--dsn", migrated.dsn(migrated.worker))
    assert shown.returncode == 0 and [j["id"] for j in json.loads(shown.stdout)] == [job], shown.stderr
