"""The worker's main connection and its owner: one round trip at a time, no answer within a lease counts as
lost, reconnect with backoff, one warning per outage (shared with the LISTEN connection).

Claims, acks, maintenance and the scheduler all go through `MainConnection`; it is the AsyncRunner they get,
so none of them holds a connection or knows how one is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from pgqueue.errors import SchemaOutdatedError
from pgqueue.store import connections, statements
from pgqueue.store.errors import schema_error
from pgqueue.store.rows import SchemaRevision
from pgqueue.store.run import count_async, fetch_async
from pgqueue.store.schema import REVISION
from pgqueue.store.statements import Command, Query
from pgqueue.text import first_line
from pgqueue.worker.rules import reconnect_delays

log = logging.getLogger("pgqueue.worker")

R = TypeVar("R")


def _check_revision(found: list[SchemaRevision]) -> None:
    revision = found[0].version_num if found else "none"
    if revision < REVISION:  # revisions are numbered: "0006" < "0008"
        raise SchemaOutdatedError(f"the database is at migration {revision}, this code needs {REVISION}")


class Outages:
    """One warning per outage, whichever connection notices first; the rest is debug detail."""

    def __init__(self) -> None:
        self._since: float | None = None  # a connection was lost and none has been re-established yet

    def lost(self, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            log.warning("database connection lost (%s); reconnecting with backoff", first_line(exc))
        else:
            log.debug("database still unreachable (%s)", first_line(exc))

    def back(self) -> None:
        if self._since is not None:
            log.info("database connection re-established after %.1f s", time.monotonic() - self._since)
            self._since = None


class MainConnection:
    """The worker's connection for everything but LISTEN and lease renewal.

    `after_reconnect(conn)` runs on every new connection but the first, before anything else uses it (the
    worker releases there the jobs of a claim whose answer the outage swallowed).
    """

    def __init__(
        self,
        dsn: str,
        *,
        lease: float,
        reconnect_max_delay: float,
        outages: Outages,
        after_reconnect: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]],
    ) -> None:
        self._dsn = dsn
        self._lease = lease
        self._max_delay = reconnect_max_delay
        self._outages = outages
        self._after_reconnect = after_reconnect
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """The first connection: fails at once when the database has no (or an outdated) pgqueue schema."""
        await self._connect(first=True)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    # -- AsyncRunner ------------------------------------------------------------------------------------

    async def fetch(self, query: Query[R]) -> list[R]:
        """One statement; its rows."""
        async with self.round_trip() as conn:
            return await fetch_async(conn, query)

    async def count(self, command: Command) -> int:
        """One statement; the number of rows it changed."""
        async with self.round_trip() as conn:
            return await count_async(conn, command)

    @contextlib.asynccontextmanager
    async def round_trip(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The connection for one exchange, under the lock.

        A failed connection is dropped here, under the lock, so that one caller reconnects for all (the
        claim loop and housekeeping never race to replace it). No answer within a lease counts as lost
        too: a black-holed network path that TCP keepalives cannot see would otherwise hang the worker,
        and past a lease our running jobs are being rescued elsewhere anyway.
        """
        async with self._lock:
            conn = await self._connection()
            try:
                async with asyncio.timeout(self._lease):
                    yield conn
            except TimeoutError:
                await self._drop(conn)
                raise psycopg.OperationalError(f"no answer from the database for {self._lease:g} s") from None
            except psycopg.OperationalError:
                await self._drop(conn)
                raise
            except psycopg.Error as exc:
                mapped = schema_error(exc)  # a database behind this code's schema: say so, not the driver
                if mapped is None:
                    raise
                raise mapped from None

    # -- reconnecting -----------------------------------------------------------------------------------

    async def reconnect(
        self, exc: BaseException, *, keep_trying: Callable[[], bool], pause: Callable[[float], Awaitable[None]]
    ) -> bool:
        """Report the outage, then reconnect with backoff (the round trip that failed dropped the connection)
        while `keep_trying()`; `pause(seconds)` waits between attempts (and may return early). True once
        connected."""
        self._outages.lost(exc)
        for delay in reconnect_delays(self._max_delay):
            if not keep_trying():
                return False
            try:
                async with self._lock:
                    await self._connection()
                return True
            except psycopg.OperationalError as again:
                self._outages.lost(again)
                await pause(delay)
        return False  # the delays never end; for the type checker

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            await self._connect()
        assert self._conn is not None
        return self._conn

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._conn is conn:
            self._conn = None
        with contextlib.suppress(Exception):
            await conn.close()

    async def _connect(self, *, first: bool = False) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, prepare_threshold=1, **connections.connect_kwargs(self._dsn, "pgqueue worker")
        )
        try:
            if await connections.behind_pooler_async(conn):
                # Transaction pooling may run each statement on another server connection, where our
                # prepared statements do not exist.
                conn.prepare_threshold = None
                if first:
                    log.info("connection pooler detected: prepared statements off")
            if first:
                _check_revision(await fetch_async(conn, statements.check_schema()))
            else:
                await self._after_reconnect(conn)
        except psycopg.Error as exc:
            await conn.close()
            mapped = schema_error(exc)
            if mapped is None:
                raise
            raise mapped from None
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._outages.back()
