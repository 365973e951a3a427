"""The workers registry written by real `pgqueue work` processes: the row a worker writes as it starts, its heartbeat
and busy slots, its clean stop, a kill -9 shown as dead (on the dashboard too), pruning, and a worker whose writes to
the registry are refused working on regardless."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue.store import grants, migrate
from pgqueue.store.run import OnConnection
from pgqueue.store.schema import REVISION
from pgqueue.store.statements import WorkerEntry
from pgqueue.worker.maintenance import Maintenance
from pgqueue.worker.registry import Registry
from tests.apps.jobs_app import RESULTS_DDL
from tests.integration.test_processes import wait_until

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.jobs_app"


def start_worker(dsn: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    env["PGQUEUE_DSN"] = dsn  # the handlers of jobs_app connect with it
    return subprocess.Popen(
        [PGQUEUE, "work", "--app", APP, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes a test starts; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def registry_row(db: psycopg.Connection, pid: int) -> dict[str, Any] | None:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM pgqueue.workers WHERE pid = %s", (pid,)).fetchone()


def heartbeat_of(db: psycopg.Connection, pid: int) -> datetime:
    row = registry_row(db, pid)
    assert row is not None
    return row["heartbeat_at"]


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


def test_worker_registers_beats_reports_busy_slots_and_stops(
    dsn: str, db: psycopg.Connection, workers: list[subprocess.Popen[str]]
) -> None:
    db.execute(RESULTS_DDL)
    worker = start_worker(dsn, "-q", "reg", "-q", "other", "--concurrency", "3", "--maintenance-interval", "0.5")
    workers.append(worker)
    wait_until(lambda: registry_row(db, worker.pid) is not None, what="the worker's row")
    row = registry_row(db, worker.pid)
    assert row is not None
    assert row["host"] == socket.gethostname()
    assert row["id"].startswith(f"{socket.gethostname()}:{worker.pid}:")
    assert row["queues"] == ["reg", "other"]
    assert row["concurrency"] == 3
    assert row["heartbeat_interval"] == 0.5
    assert row["running"] == 0 and row["stopped_at"] is None
    assert row["started_at"] <= row["heartbeat_at"]

    first = row["heartbeat_at"]
    wait_until(lambda: heartbeat_of(db, worker.pid) > first, what="the heartbeat advances")

    # Busy slots: two jobs that sleep long enough for a heartbeat to see them running.
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, args) VALUES "
        """('reg', 'slow_record', '{"n": 1, "seconds": 60}'), ('reg', 'slow_record', '{"n": 2, "seconds": 60}')"""
    )
    wait_until(lambda: (registry_row(db, worker.pid) or {}).get("running") == 2, what="two busy slots reported")

    worker.send_signal(signal.SIGTERM)
    worker.send_signal(signal.SIGTERM)  # again: hand the sleeping jobs back now
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output
    row = registry_row(db, worker.pid)
    assert row is not None and row["stopped_at"] is not None and row["running"] == 0, row
    assert "Traceback" not in output, output


def test_kill_9_worker_is_shown_dead_on_the_dashboard(
    dsn: str, db: psycopg.Connection, workers: list[subprocess.Popen[str]]
) -> None:
    pytest.importorskip("starlette", reason="the dashboard extra is not installed")
    httpx = pytest.importorskip("httpx")
    from pgqueue.dashboard import create_app
    from tests.integration.dashboard_support import live_server

    # The one that is killed beats every 2 s (dead after 6 s of silence); the one that lives every 10 s, so a
    # loaded machine does not make it look dead while the test reads the page.
    doomed = start_worker(dsn, "-q", "doomed", "--maintenance-interval", "2")
    alive = start_worker(dsn, "-q", "lively", "--maintenance-interval", "10")
    workers += [doomed, alive]
    wait_until(lambda: registry_row(db, doomed.pid) is not None and registry_row(db, alive.pid) is not None)

    def state_on_page(client: httpx.Client, pid: int) -> str | None:
        page = client.get("/")
        assert page.status_code == 200
        for line in page.text.split("<tr ")[1:]:
            if f'<td class="num">{pid}</td>' in line:
                return line.split('class="worker-', 1)[1].split('"', 1)[0]
        return None

    with live_server(create_app(dsn)) as url, httpx.Client(base_url=url, timeout=10) as client:
        wait_until(lambda: state_on_page(client, doomed.pid) == "alive", what="the first worker shown alive")
        wait_until(lambda: state_on_page(client, alive.pid) == "alive", what="the second worker shown alive")
        page = client.get("/").text
        assert "doomed" in page and "lively" in page and socket.gethostname() in page

        doomed.kill()
        doomed.communicate(timeout=30)
        wait_until(lambda: state_on_page(client, doomed.pid) == "dead", what="the killed worker shown dead")
        row = registry_row(db, doomed.pid)
        assert row is not None and row["stopped_at"] is None  # nobody said it stopped: its silence says it
        assert state_on_page(client, alive.pid) == "alive"

        stop(alive)
        assert state_on_page(client, alive.pid) == "stopped"


def test_prune_deletes_rows_of_workers_long_silent(dsn: str, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO pgqueue.workers (id, host, pid, concurrency, heartbeat_at, stopped_at) VALUES "
        "('gone', 'h', 1, 1, now() - interval '25 hours', now() - interval '25 hours'), "
        "('died', 'h', 2, 1, now() - interval '2 days', NULL), "
        "('recent', 'h', 3, 1, now() - interval '23 hours', now() - interval '23 hours')"
    )

    async def prune() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            runner = OnConnection(conn)
            entry = WorkerEntry(worker_id="me", host="h", pid=4, queues=None, concurrency=1, heartbeat_interval=15.0)
            registry = Registry(runner, entry, busy=lambda: 0)
            await registry.register()
            maintenance = Maintenance(runner, retention=timedelta(days=7), dsn=dsn, registry=registry)
            await maintenance.run_once()  # the rescue with the heartbeat
            await maintenance.prune()
        finally:
            await conn.close()

    asyncio.run(prune())
    left = {row[0] for row in db.execute("SELECT id FROM pgqueue.workers")}
    assert left == {"recent", "me"}


# -- refused writes ---------------------------------------------------------------------------------------------


@pytest.fixture
def worker_role(server_dsn: str, dsn: str) -> Iterator[str]:
    """A role with exactly the worker's grants."""
    role = f"pgqueue_noreg_{os.urandom(4).hex()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(RESULTS_DDL)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        grants.apply(conn, worker_role=role)
        conn.execute(sql.SQL("GRANT ALL ON test_results TO {}").format(sql.Identifier(role)))
    yield role
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def revoke_registry(db: psycopg.Connection, role: str) -> None:
    db.execute(sql.SQL("REVOKE ALL ON pgqueue.workers FROM {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("when", ["before it starts", "while it runs"])
def test_worker_refused_by_the_registry_works_on(
    when: str, worker_role: str, dsn: str, db: psycopg.Connection, workers: list[subprocess.Popen[str]]
) -> None:
    role_dsn = psycopg.conninfo.make_conninfo(dsn, user=worker_role)
    if when == "before it starts":
        revoke_registry(db, worker_role)
    worker = start_worker(role_dsn, "--maintenance-interval", "0.2")
    workers.append(worker)
    if when == "while it runs":  # its row written, then its heartbeat refused: the rescue goes on without it
        wait_until(lambda: registry_row(db, worker.pid) is not None, what="the worker's row")
        revoke_registry(db, worker_role)
    ids = [
        row[0]
        for row in db.execute(
            "INSERT INTO pgqueue.jobs (task, args) SELECT 'record', jsonb_build_object('n', n) "
            "FROM generate_series(1, 5) AS n RETURNING id"
        )
    ]
    wait_until(
        lambda: db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'").fetchone()[0] == len(ids),
        what="the jobs done",
    )
    # A job whose worker vanished: the rescue (which the refused heartbeat rode on) still runs.
    db.execute(
        "INSERT INTO pgqueue.jobs (task, args, status, attempts, worker_id, started_at, lease_expires_at) "
        """VALUES ('record', '{"n": 9}', 'running', 1, 'gone', now(), now() - interval '1 second')"""
    )
    wait_until(
        lambda: db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'").fetchone()[0] == 6,
        what="the lost job rescued and run",
    )
    output = stop(worker)
    assert db.execute("SELECT count(*) FROM pgqueue.workers").fetchone()[0] == (when == "while it runs")
    warnings = [line for line in output.splitlines() if "cannot write its row in pgqueue.workers" in line]
    assert len(warnings) == 1, output  # said once, not once per heartbeat
    assert "permission denied" in warnings[0]
    assert "Traceback" not in output, output


def test_worker_on_a_database_behind_the_code_says_so(
    dsn: str, db: psycopg.Connection, workers: list[subprocess.Popen[str]]
) -> None:
    """A database not migrated since pgqueue was upgraded: the worker names both migrations in one line and
    touches no job (it would fail on the tables the newer migrations add, mid-claim)."""
    migrate.downgrade(dsn, "0006")
    db.execute("""INSERT INTO pgqueue.jobs (task, args) VALUES ('record', '{"n": 1}')""")
    env = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    result = subprocess.run(
        [PGQUEUE, "work", "--app", APP, "--burst"],
        cwd=ROOT,
        env={**env, "PGQUEUE_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    assert db.execute("SELECT status FROM pgqueue.jobs").fetchone() == ("pending",)
    assert f"the database is at migration 0006, this code needs {REVISION}" in result.stderr, result.stderr
    assert "pgqueue migrate" in result.stderr and "Traceback" not in result.stderr, result.stderr
