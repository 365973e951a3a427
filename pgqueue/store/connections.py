"""Connections: running a statement on whatever connection the caller hands over (the one place that
dispatches on its type), and opening pgqueue's own (connect options, pooler detection, the pools)."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgqueue.errors import InvalidJobError
from pgqueue.store import django as django_integration
from pgqueue.store import statements
from pgqueue.store.errors import schema_error

# TCP keepalives make a silently dead connection (a cut cable, a vanished host) fail in about
# 20 s instead of hanging for the kernel's two hours; they cost no statements.
KEEPALIVE_KWARGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
    "connect_timeout": 10,
}


def connect_kwargs(dsn: str, application_name: str | None = None) -> dict[str, Any]:
    """Keepalives apply to TCP only; a Unix-socket DSN (the embedded server) must not carry them.

    `application_name` names the connection in pg_stat_activity unless the user named it already.
    """
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    host = str(info.get("host") or "")
    kwargs: dict[str, Any] = {"connect_timeout": 10} if not host or host.startswith("/") else dict(KEEPALIVE_KWARGS)
    if application_name and not info.get("application_name") and not os.environ.get("PGAPPNAME"):
        kwargs["application_name"] = application_name
    return kwargs


# -- the caller's connection ---------------------------------------------------------------------------------
# To support another kind of connection (a framework's), add its case to execute_in / execute_in_async: one
# line delegating to a module of its own in store/ (as store/django.py) that runs the statement on it.


def execute_in(connection: Any, query: LiteralString, params: Mapping[str, Any] | None) -> Sequence[Any]:
    """Run `query` inside the caller's transaction: psycopg Connection, SQLAlchemy Connection or Session."""
    if isinstance(connection, psycopg.Connection):
        return connection.execute(query, params).fetchall()
    if django_integration.is_django_connection(connection):
        return django_integration.execute(connection, query, params)
    sa_connection = _sqlalchemy_connection(connection)
    with _sqlalchemy_schema_errors():
        return sa_connection.exec_driver_sql(query, params).fetchall()


async def execute_in_async(connection: Any, query: LiteralString, params: Mapping[str, Any] | None) -> Sequence[Any]:
    """The same for psycopg AsyncConnection, SQLAlchemy AsyncConnection or AsyncSession."""
    if isinstance(connection, psycopg.AsyncConnection):
        cursor = await connection.execute(query, params)
        return await cursor.fetchall()
    if django_integration.is_django_connection(connection):
        return await django_integration.execute_async(connection, query, params)
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(connection, AsyncSession):
        connection = await connection.connection()
    if isinstance(connection, AsyncConnection):
        _check_driver(connection.dialect.driver)
        with _sqlalchemy_schema_errors():
            result = await connection.exec_driver_sql(query, params)
        return result.fetchall()
    if isinstance(connection, psycopg.Connection):
        return execute_in(connection, query, params)
    raise InvalidJobError(f"cannot enqueue on a {type(connection).__name__}: pass a psycopg or SQLAlchemy connection")


def _sqlalchemy_connection(connection: Any) -> Any:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(connection, Session):
        connection = connection.connection()
    if not isinstance(connection, Connection):
        raise InvalidJobError(
            f"cannot enqueue on a {type(connection).__name__}: pass a psycopg Connection or a SQLAlchemy "
            "Connection or Session (for async ones use enqueue_async)"
        )
    _check_driver(connection.dialect.driver)
    return connection


@contextmanager
def _sqlalchemy_schema_errors() -> Iterator[None]:
    """SQLAlchemy wraps the driver's error: a missing or outdated schema gets the same one clear error as on a
    psycopg connection (other errors stay SQLAlchemy's, which the caller's code expects)."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as exc:
        mapped = schema_error(exc.orig) if exc.orig is not None else None
        if mapped is None:
            raise
        raise mapped from None


def _check_driver(driver: str) -> None:
    # Our statements use the pyformat placeholders of the psycopg family.
    if driver not in ("psycopg", "psycopg2", "psycopg_async"):
        raise InvalidJobError(f"SQLAlchemy driver {driver!r} is not supported: use postgresql+psycopg")


# -- our own connections -------------------------------------------------------------------------------------


def behind_pooler(conn: psycopg.Connection[Any]) -> bool:
    """True when a pooler such as PgBouncer sits between us and PostgreSQL."""
    query = statements.backend_pid()
    found = conn.execute(query.sql).fetchone()
    return found is not None and query.row(*found).pid != conn.info.backend_pid


async def behind_pooler_async(conn: psycopg.AsyncConnection[Any]) -> bool:
    query = statements.backend_pid()
    found = await (await conn.execute(query.sql)).fetchone()
    return found is not None and query.row(*found).pid != conn.info.backend_pid


def _hung_up(conn: psycopg.BaseConnection[Any]) -> bool:
    """An idle connection has nothing to read unless the server said goodbye (restart, terminated backend)."""
    if conn.closed:
        return True
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return bool(readable)


# Pool hooks. The check costs a system call, a round trip only for a connection with something to read:
# after a server restart the pool then replaces its stale connections instead of failing an enqueue
# that never reached the server. Behind a pooler, prepared statements are turned off (a statement may
# run on another server connection, where they do not exist).


def _check(conn: psycopg.Connection[Any]) -> None:
    if _hung_up(conn):
        ConnectionPool.check_connection(conn)


async def _check_async(conn: psycopg.AsyncConnection[Any]) -> None:
    if _hung_up(conn):
        await AsyncConnectionPool.check_connection(conn)


def _configure(conn: psycopg.Connection[Any]) -> None:
    if behind_pooler(conn):
        conn.prepare_threshold = None


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    if await behind_pooler_async(conn):
        conn.prepare_threshold = None


def _pool_options(dsn: str, max_size: int) -> dict[str, Any]:
    """What both pools share: autocommit connections, keepalives, opened by open_pool / open_async_pool."""
    return {"min_size": 1, "max_size": max_size, "kwargs": {"autocommit": True, **connect_kwargs(dsn)}, "open": False}


def open_pool(dsn: str, max_size: int) -> ConnectionPool:
    # Fail fast with the server's own message rather than a pool timeout after retrying for seconds.
    psycopg.connect(dsn, **connect_kwargs(dsn)).close()
    pool = ConnectionPool(dsn, **_pool_options(dsn, max_size), configure=_configure, check=_check, name="pgqueue")
    pool.open(wait=True, timeout=15)
    return pool


async def open_async_pool(dsn: str, max_size: int) -> AsyncConnectionPool:
    await (await psycopg.AsyncConnection.connect(dsn, **connect_kwargs(dsn))).close()
    options = _pool_options(dsn, max_size)
    pool = AsyncConnectionPool(dsn, **options, configure=_configure_async, check=_check_async, name="pgqueue-async")
    await pool.open(wait=True, timeout=15)
    return pool
