"""Enqueue inside a Django transaction: `queue.enqueue(..., connection=django.db.connection)`.

The statement runs through Django's own cursor (`connection.cursor()`), so it is part of whatever Django has open:
the transaction of `transaction.atomic()` (and its savepoints), or a statement of its own in autocommit mode. Django
opens, commits and rolls back; pgqueue never does. Going through the cursor keeps Django's checks and hooks: a broken
atomic block raises Django's TransactionManagementError, `connection.execute_wrapper()` and query logging see the
INSERT, and the binding mode and `prepare_threshold` are those of the database's OPTIONS (Django's defaults,
client-side binding and no prepared statements, are safe behind PgBouncer).

Django is never imported from here: an object can only be one of its connections once Django is loaded.
"""

from __future__ import annotations

import select
import sys
from collections.abc import Sequence
from typing import Any, LiteralString

import psycopg
import psycopg.errors

from pgqueue.errors import DatabaseUnavailableError, InvalidJobError, SchemaMissingError


def is_django_connection(connection: Any) -> bool:
    """`django.db.connection` (a proxy to this thread's connection) or a `django.db.connections[alias]`."""
    if "django.db" not in sys.modules:
        return False
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.utils.connection import ConnectionProxy

    return isinstance(connection, BaseDatabaseWrapper | ConnectionProxy)


def execute(connection: Any, query: LiteralString, params: dict[str, Any]) -> Sequence[Any]:
    """Run `query` on the Django connection, in its current transaction; returns the rows."""
    from django.db import connections

    # The proxy stands for the calling thread's connection; a wrapper is used as given.
    wrapper = connections[connection.alias] if _is_proxy(connection) else connection
    return _execute(wrapper, query, params)


async def execute_async(connection: Any, query: LiteralString, params: dict[str, Any]) -> Sequence[Any]:
    """For `enqueue_async` in async Django code: on the connection Django's async ORM uses.

    Django's connections are synchronous: its async ORM (`acreate`, `aget`...) runs each query through
    `sync_to_async(thread_sensitive=True)`, on that thread's connection. We do the same, so the job is written on
    the connection of the ORM calls around it. `transaction.atomic()` is synchronous in Django: a transaction that
    spans an order and its jobs is a sync function (wrapped in `sync_to_async`) calling `queue.enqueue`.
    """
    from asgiref.sync import sync_to_async

    alias = connection.alias

    def run() -> Sequence[Any]:
        from django.db import connections

        return _execute(connections[alias], query, params)

    return await sync_to_async(run, thread_sensitive=True)()


def _is_proxy(connection: Any) -> bool:
    from django.utils.connection import ConnectionProxy

    return isinstance(connection, ConnectionProxy)


def _execute(wrapper: Any, query: LiteralString, params: dict[str, Any]) -> Sequence[Any]:
    from django.db import DatabaseError, transaction

    if wrapper.vendor != "postgresql":
        raise InvalidJobError(
            f"cannot enqueue on Django database {wrapper.alias!r}: its ENGINE is {wrapper.settings_dict['ENGINE']!r} "
            f"({wrapper.display_name}); pgqueue needs PostgreSQL (django.db.backends.postgresql)"
        )
    _drop_if_lost(wrapper)
    try:
        # As Model.save() does: an error inside atomic() marks the block for rollback, so that Django neither runs
        # further queries in the aborted transaction nor commits it as if nothing had happened.
        with transaction.mark_for_rollback_on_error(wrapper.alias), wrapper.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()
    except DatabaseError as exc:
        translated = _translated(exc)
        if translated is None:
            raise  # Django's own error, as its ORM would raise it (TransactionManagementError among them)
        raise translated from exc


def _drop_if_lost(wrapper: Any) -> None:
    """A connection the server has hung up on (a restart, a terminated backend) is reopened when that loses nothing:
    in autocommit mode outside atomic(), where Django's cursor() then connects anew. Inside a transaction (atomic()
    or set_autocommit(False)) the transaction died with the connection: DatabaseUnavailableError, and an atomic
    block is marked for rollback."""
    raw = wrapper.connection
    if raw is None or not _hung_up(raw):
        return
    if not wrapper.in_atomic_block and wrapper.get_autocommit():
        if raw.closed or not wrapper.is_usable():
            wrapper.close()
        return
    if raw.closed:
        if wrapper.in_atomic_block:
            wrapper.needs_rollback = True
        raise DatabaseUnavailableError(
            f"database unavailable: Django's connection {wrapper.alias!r} was lost inside its transaction, and the "
            "transaction with it; leave the atomic block (it rolls back) and try again"
        )


def _hung_up(raw: Any) -> bool:
    # An idle connection has nothing to read unless the server said goodbye; one in a transaction is not probed
    # (it may legitimately have nothing to say, and its errors will surface on the statement itself).
    if not isinstance(raw, psycopg.Connection):
        return False
    if raw.closed:
        return True
    if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    readable, _, _ = select.select([raw.fileno()], [], [], 0)
    return bool(readable)


def _translated(exc: Exception) -> Exception | None:
    """pgqueue's errors for the causes pgqueue names for every other connection; None to re-raise Django's."""
    cause = exc.__cause__
    if isinstance(cause, psycopg.errors.UndefinedTable):
        return SchemaMissingError()
    if isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError):
        text = str(cause).strip()
        first_line = text.splitlines()[0] if text else type(cause).__name__
        return DatabaseUnavailableError(f"database unavailable: {first_line}")
    return None
