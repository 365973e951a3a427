"""The one mapping of driver errors to pgqueue's own: what every caller of the store (the API, the CLI, the
worker) reports when the schema is missing or behind the code, or the database cannot be reached."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.errors
from psycopg_pool import PoolTimeout

from pgqueue.errors import (
    DatabaseUnavailableError,
    InvalidJobError,
    PgQueueError,
    SchemaMissingError,
    SchemaOutdatedError,
)
from pgqueue.text import first_line

# A statement of this code names a table, column or function a migration of this code adds: the database has
# not been migrated since pgqueue was upgraded.
_OUTDATED = (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedColumn)


def schema_error(exc: BaseException) -> PgQueueError | None:
    """SchemaMissingError or SchemaOutdatedError when `exc` says so, else None."""
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return SchemaMissingError()
    if isinstance(exc, _OUTDATED):
        return SchemaOutdatedError(first_line(exc))
    return None


_KEY = re.compile(r"\(depends_on\)=\((-?\d+)\)")


def dependency_error(exc: BaseException) -> InvalidJobError | None:
    """A job enqueued with `after` naming a job that does not exist (or itself): the statement inserted nothing."""
    diag = getattr(exc, "diag", None)
    constraint = diag.constraint_name if diag is not None else None
    if isinstance(exc, psycopg.errors.ForeignKeyViolation) and constraint == "job_dependencies_depends_on_fkey":
        found = _KEY.search(diag.message_detail or "") if diag is not None else None
        which = f"job {found.group(1)}" if found else "a job named in after"
        return InvalidJobError(f"{which} does not exist (never enqueued, or finished and pruned): nothing was enqueued")
    if isinstance(exc, psycopg.errors.CheckViolation) and constraint == "job_dependencies_not_itself":
        return InvalidJobError(
            "a job cannot depend on itself, nor by id on a job of the same call (name those with InBatch): "
            "nothing was enqueued"
        )
    return None


def unavailable(exc: BaseException) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(f"database unavailable: {first_line(exc)}")


def translate(exc: BaseException) -> PgQueueError | None:
    """pgqueue's error for a driver error (schema missing or outdated, database unreachable), else None."""
    mapped = schema_error(exc)
    if mapped is not None:
        return mapped
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return unavailable(exc)
    return dependency_error(exc)


@contextmanager
def database_errors() -> Iterator[None]:
    """Raise pgqueue's error in place of the driver's where translate() has one; other errors pass unchanged."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        if isinstance(mapped, DatabaseUnavailableError):
            raise mapped from exc  # the driver's detail (host, port, reason) stays in the chain
        raise mapped from None
