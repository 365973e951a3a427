"""Test databases: PGQUEUE_TEST_DSN's server when set, else one embedded server per test session.

Each test gets a fresh database cloned from a migrated template, so tests never see each other's jobs
or notifications.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgqueue.store import migrate


def _server_dsn() -> str:
    configured = os.environ.get("PGQUEUE_TEST_DSN")
    if configured:
        return configured
    from pgqueue.store import embedded

    data_dir = Path(tempfile.gettempdir()) / f"pgqueue-tests-{os.getuid()}" / "pgdata"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return embedded.server_dsn(data_dir)


def _admin(dsn: str) -> psycopg.Connection:
    return psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True)


@pytest.fixture(scope="session")
def server_dsn() -> str:
    return _server_dsn()


@pytest.fixture(scope="session")
def template_db(server_dsn: str, worker_id: str) -> Iterator[str]:
    # The pid keeps two test runs against one server (two checkouts, say) from dropping each other's template.
    name = f"pgqueue_test_template_{worker_id}_{os.getpid()}"
    with _admin(server_dsn) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(make_conninfo(server_dsn, dbname=name))
    yield name
    with _admin(server_dsn) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _database(server_dsn: str, template: str | None = None) -> Iterator[str]:
    """A new database for one test (empty, or a copy of `template`), dropped afterwards."""
    name = f"pgqueue_test_{uuid.uuid4().hex[:10]}"
    copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    with _admin(server_dsn) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with _admin(server_dsn) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A database with nothing in it (for migration tests)."""
    with _database(server_dsn) as dsn:
        yield dsn


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    with _database(server_dsn, template_db) as fresh:
        yield fresh


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database, for arranging and asserting."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn
