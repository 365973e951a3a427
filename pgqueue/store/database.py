"""pgqueue's own connections to one database, and running plans on them or on the caller's connection.

One implementation for sync and async code: a plan (store/run.py) says what to send; `run` and `run_async`
only choose the connection, and map driver errors to pgqueue's (store/errors.py) in one place.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgqueue.errors import PgQueueError
from pgqueue.store import connections
from pgqueue.store.errors import database_errors
from pgqueue.store.run import Plan, drive, drive_async

T = TypeVar("T")
# A plan is made knowing whether its connection can take COPY (a psycopg one of the right flavour can).
PlanFactory = Callable[[bool], Plan[T]]


class Database:
    """Two pools, opened on first use: a sync one and an async one, each opened under a lock so that first uses
    at the same time open one pool, not one each."""

    def __init__(self, dsn: Callable[[], str], pool_size: int) -> None:
        self._dsn = dsn
        self.pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._async_pool: AsyncConnectionPool | None = None
        self._lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None

    def run(self, plan: PlanFactory[T], connection: Any = None) -> T:
        """Run a plan on the caller's connection (in its transaction) or on one of ours (autocommit)."""
        with database_errors():
            if connection is not None:
                return drive(plan(isinstance(connection, psycopg.Connection)), connection)
            with self.pool().connection() as own:
                return drive(plan(True), own)

    async def run_async(self, plan: PlanFactory[T], connection: Any = None) -> T:
        with database_errors():
            if connection is not None:
                return await drive_async(plan(isinstance(connection, psycopg.AsyncConnection)), connection)
            pool = await self.async_pool()
            async with pool.connection() as own:
                return await drive_async(plan(True), own)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """One of our sync connections (autocommit) for a function of the store that takes one."""
        with database_errors(), self.pool().connection() as conn:
            yield conn

    def pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = connections.open_pool(self._dsn(), self.pool_size)
            return self._pool

    async def async_pool(self) -> AsyncConnectionPool:
        if self._async_pool is None:
            async with self._opening_lock():
                if self._async_pool is None:
                    self._async_pool = await connections.open_async_pool(self._dsn(), self.pool_size)
        return self._async_pool

    def _opening_lock(self) -> asyncio.Lock:
        # Made in the running loop (an asyncio.Lock belongs to the loop it is first contended in); the
        # threading lock makes two threads agree on one.
        with self._lock:
            if self._async_lock is None:
                self._async_lock = asyncio.Lock()
            return self._async_lock

    def close(self) -> None:
        """Close the sync pool. An open async pool can be closed only by `aclose()` in its event loop: rather
        than leave its connections open unsaid, this says so (after closing the sync pool)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            if self._async_pool is not None:
                raise PgQueueError(
                    "the Queue has async connections open (from enqueue_async): close them with "
                    "`await queue.aclose()` in the event loop that used them"
                )

    async def aclose(self) -> None:
        """Close both pools."""
        if self._async_pool is not None:
            pool, self._async_pool = self._async_pool, None
            self._async_lock = None
            await pool.close()
        self.close()
