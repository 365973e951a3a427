"""pytest fixtures for an app's own tests. Load them in the app's conftest.py:

    pytest_plugins = ["pgqueue.pytest_plugin"]

- `pgqueue_dsn`: a fresh database with pgqueue's tables, one per test, dropped afterwards (cloned from a
  template that is migrated once per test session, so a test costs a CREATE DATABASE, not a migration).
- `pgqueue_server_dsn` (session): the server they are made on: PGQUEUE_TEST_DSN, else the DSN pgqueue would
  use (PGQUEUE_DSN, DATABASE_URL, else the embedded server). Its role needs CREATEDB.

Point the app's Queue at the test's database, and use `queue.drain()` and `queue.enqueued(...)` in the tests:

    @pytest.fixture
    def jobs(pgqueue_dsn):
        app.queue.dsn = pgqueue_dsn
        yield app.queue
        app.queue.close()
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from pgqueue.settings import resolve_dsn
from pgqueue.store import migrate, scratch


@pytest.fixture(scope="session")
def pgqueue_server_dsn() -> str:
    return os.environ.get("PGQUEUE_TEST_DSN") or resolve_dsn(None)


@pytest.fixture(scope="session")
def pgqueue_template(pgqueue_server_dsn: str) -> Iterator[str]:
    """A database migrated once per session (per xdist worker), the template of each test's database."""
    name = f"pgqueue_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    scratch.drop_database(pgqueue_server_dsn, name)
    migrate.upgrade(scratch.create_database(pgqueue_server_dsn, name))
    yield name
    scratch.drop_database(pgqueue_server_dsn, name)


@pytest.fixture
def pgqueue_dsn(pgqueue_server_dsn: str, pgqueue_template: str) -> Iterator[str]:
    name = f"pgqueue_test_{uuid.uuid4().hex[:12]}"
    dsn = scratch.create_database(pgqueue_server_dsn, name, template=pgqueue_template)
    try:
        yield dsn
    finally:
        scratch.drop_database(pgqueue_server_dsn, name)
