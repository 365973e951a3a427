"""Fixtures of the fault-injection suite: a private PostgreSQL server the tests may restart, a fresh migrated
database per test, worker processes that never outlive their test, and the figures table printed at the end.

Every test here is marked `faults` (deselect with `-m "not faults"`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue.store import migrate
from tests.apps.jobs_app import FAULT_RESULTS_DDL
from tests.faults.harness import FaultDatabase, PrivateServer, Workers
from tests.faults.proxy import TcpProxy

FIGURES: list[dict[str, Any]] = []
FIGURE_COLUMNS = ("fault", "enqueued", "completed", "lost", "ran twice", "recovery s", "notes")
TEMPLATE = "pgqueue_faults_template"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    rows = [[str(figure.get(column, "")) for column in FIGURE_COLUMNS] for figure in FIGURES]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(FIGURE_COLUMNS)]
    terminalreporter.write_sep("=", "fault injection: figures")
    terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(FIGURE_COLUMNS, widths, strict=True)))
    for row in rows:
        terminalreporter.write_line("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A test fills in its figures; they are printed (also with -s) and tabled at the end of the session."""
    figure: dict[str, Any] = {"fault": request.node.name.removeprefix("test_")}
    yield figure
    if len(figure) > 1:
        FIGURES.append(figure)
        print("\nfigures:", {k: v for k, v in figure.items() if k != "fault"})


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    try:
        server.start()
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
        migrate.upgrade(server.dsn(TEMPLATE))
        with psycopg.connect(server.dsn(TEMPLATE), autocommit=True) as conn:
            conn.execute(FAULT_RESULTS_DDL)
        yield server
    finally:
        server.destroy()


@pytest.fixture
def fault_db(pg_server: PrivateServer) -> Iterator[FaultDatabase]:
    if not pg_server.is_up():  # a test that failed mid-fault may have left it down
        pg_server.start()
    name = f"faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY')
    conn = psycopg.connect(pg_server.dsn(name), autocommit=True)
    try:
        yield FaultDatabase(name=name, dsn=pg_server.dsn(name), conn=conn)
    finally:
        conn.close()
        if not pg_server.is_up():
            pg_server.start()
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(fault_db: FaultDatabase) -> psycopg.Connection:
    """A fresh connection per use would survive restarts; tests that restart the server reconnect themselves."""
    return fault_db.conn


@pytest.fixture
def workers(request: pytest.FixtureRequest, fault_db: FaultDatabase, tmp_path: Path) -> Iterator[Workers]:
    import os

    env = {**os.environ, "PGQUEUE_RESULTS_DSN": fault_db.dsn}
    env.pop("PGQUEUE_DSN", None)
    started = Workers(directory=tmp_path, env=env)
    try:
        yield started
    finally:
        started.stop_all()
        call = getattr(request.node, "report_call", None)
        if call is not None and call.failed:
            print(started.outputs())


@pytest.fixture
def proxy(pg_server: PrivateServer) -> Iterator[TcpProxy]:
    running = TcpProxy(pg_server.port)
    try:
        yield running
    finally:
        running.close()
