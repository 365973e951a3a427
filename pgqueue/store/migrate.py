"""Apply pgqueue's Alembic migrations, from a checkout or from the installed wheel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from pgqueue.errors import MigrationPrivilegeError
from pgqueue.store.schema import SCHEMA
from pgqueue.text import first_line


def migrations_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    packaged = package / "_migrations"  # inside the wheel
    if packaged.is_dir():
        return packaged
    return package.parent / "migrations"  # a source checkout


def engine_for(dsn: str) -> sa.Engine:
    """A SQLAlchemy engine on psycopg 3 that accepts any libpq DSN (URI or key=value).

    READ COMMITTED whatever the server's default: the migration waits for the advisory lock of migrations/env.py
    and must then see what a concurrent migrate committed meanwhile; under REPEATABLE READ its snapshot would be
    older than that commit, and a second first migrate would try to create the tables again."""
    return sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn),
        poolclass=sa.pool.NullPool,
        isolation_level="READ COMMITTED",
    )


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    """Bring the database to `revision`; safe to run concurrently and repeatedly."""
    _run(command.upgrade, dsn, revision)


def downgrade(dsn: str, revision: str) -> None:
    _run(command.downgrade, dsn, revision)


def _run(alembic_command: Callable[[Config, str], None], dsn: str, revision: str) -> None:
    """One Alembic command in one transaction on our own engine (env.py takes the connection from config)."""
    config = alembic_config()
    engine = engine_for(dsn)
    try:
        with _database_errors(), engine.begin() as connection:
            config.attributes["connection"] = connection
            alembic_command(config, revision)
    finally:
        engine.dispose()


@contextmanager
def _database_errors() -> Iterator[None]:
    """psycopg's own errors rather than SQLAlchemy's wrappers (callers handle those), and a missing privilege
    explained: a database at head needs only reading the version table, anything else the schema's owner."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
            reason = first_line(exc.orig)
            if "for database" in reason:
                advice = (
                    f"creating schema {SCHEMA} needs CREATE on the database "
                    f"(or have a superuser run CREATE SCHEMA {SCHEMA} AUTHORIZATION <this role> first)"
                )
            else:
                advice = f"migrate as the role that owns schema {SCHEMA}"
            raise MigrationPrivilegeError(f"{reason}: {advice}") from exc.orig
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from None
        raise


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(dsn: str) -> str | None:
    engine = engine_for(dsn)
    try:
        with _database_errors(), engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table_schema": SCHEMA, "version_table": "alembic_version"}
            )
            return context.get_current_revision()
    finally:
        engine.dispose()
