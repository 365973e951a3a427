"""Running Statements: on a psycopg connection (sync or async), on the caller's connection, or as a plan.

A plan is a generator that yields statements and receives their rows back: logic that needs several
statements (a dedup retry, COPY after reserving ids) is written once, as a plan, and `drive` or `drive_async`
runs it on a sync or an async connection. The pairs below differ only by `await`.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from pgqueue.store import connections
from pgqueue.store.statements import Command, Copy, Query

R = TypeVar("R")
T = TypeVar("T")

Step = Query[Any] | Copy
Plan = Generator[Step, Any, T]  # yields a Query (gets its rows back) or a Copy (gets None); returns T


class AsyncRunner(Protocol):
    """What runs one statement at a time for the worker's parts (maintenance, scheduler): the worker's
    connection owner, or `OnConnection` below."""

    async def fetch(self, query: Query[R]) -> list[R]: ...

    async def count(self, command: Command) -> int: ...


def fetch(conn: psycopg.Connection[Any], query: Query[R]) -> list[R]:
    return _rows(query, conn.execute(query.sql, query.params, prepare=query.prepare).fetchall())


async def fetch_async(conn: psycopg.AsyncConnection[Any], query: Query[R]) -> list[R]:
    return _rows(query, await (await conn.execute(query.sql, query.params, prepare=query.prepare)).fetchall())


def count(conn: psycopg.Connection[Any], command: Command) -> int:
    return conn.execute(command.sql, command.params, prepare=command.prepare).rowcount


async def count_async(conn: psycopg.AsyncConnection[Any], command: Command) -> int:
    return (await conn.execute(command.sql, command.params, prepare=command.prepare)).rowcount


class Sent(Generic[R]):
    """A query sent inside a pipeline (`conn.pipeline()`), its rows read once the pipeline has synced."""

    def __init__(self, query: Query[R], cursor: psycopg.AsyncCursor[Any]) -> None:
        self._row = query.row
        self._cursor = cursor

    async def rows(self) -> list[R]:
        return [self._row(*values) for values in await self._cursor.fetchall()]


async def send_async(conn: psycopg.AsyncConnection[Any], query: Query[R]) -> Sent[R]:
    return Sent(query, await conn.execute(query.sql, query.params, prepare=query.prepare))


def first(conn: psycopg.Connection[Any], query: Query[R]) -> R | None:
    found = fetch(conn, query)
    return found[0] if found else None


class OnConnection:
    """An AsyncRunner on one psycopg AsyncConnection (autocommit: each statement its own transaction)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def fetch(self, query: Query[R]) -> list[R]:
        return await fetch_async(self.conn, query)

    async def count(self, command: Command) -> int:
        return await count_async(self.conn, command)


def drive(plan: Plan[T], connection: Any) -> T:
    """Run `plan` on a sync connection: psycopg's (ours or the caller's) or the caller's SQLAlchemy one."""
    answer: Any = None
    while True:
        try:
            step = plan.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Copy):
            with connection.cursor() as cursor, cursor.copy(step.sql) as copy:
                for values in step.rows:
                    copy.write_row(values)
            answer = None
        else:
            answer = _rows(step, connections.execute_in(connection, step.sql, step.params))


async def drive_async(plan: Plan[T], connection: Any) -> T:
    """The same on an async connection (psycopg's, or SQLAlchemy's AsyncConnection/AsyncSession)."""
    answer: Any = None
    while True:
        try:
            step = plan.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Copy):
            async with connection.cursor() as cursor, cursor.copy(step.sql) as copy:
                for values in step.rows:
                    await copy.write_row(values)
            answer = None
        else:
            answer = _rows(step, await connections.execute_in_async(connection, step.sql, step.params))


def _rows(query: Query[R], found: Sequence[Sequence[Any]]) -> list[R]:
    row = query.row
    return [row(*values) for values in found]
