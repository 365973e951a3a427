"""Alembic environment for pgqueue: version table and objects live in schema `pgqueue`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from pgqueue.store.schema import SCHEMA, metadata

# Any constant works; it only has to be the same for every process running migrations at once.
MIGRATION_LOCK_ID = 0x70677175  # "pgqu"


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # Only our schema: the user's own tables in the same database are none of our business.
    schema = getattr(obj, "schema", None)
    if type_ == "table":
        return schema == SCHEMA
    return True


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    # Looked up after the lock, so a concurrent first migrate has committed the schema by then. Only created when
    # missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists, and a database
    # at head needs nothing but reading pgqueue.alembic_version (Alembic creates its table only when it finds none).
    if connection.execute(text("SELECT to_regnamespace(:schema) IS NULL"), {"schema": SCHEMA}).scalar():
        connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table="alembic_version",
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_object=include_object,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
