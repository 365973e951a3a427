"""Where the database is: --dsn, PGQUEUE_DSN, DATABASE_URL, else the embedded server."""

from __future__ import annotations

import os

DSN_ENV_VARS = ("PGQUEUE_DSN", "DATABASE_URL")


def configured_dsn(explicit: str | None = None) -> str | None:
    """The DSN the user configured, or None when nothing is set."""
    if explicit:
        return normalize_dsn(explicit)
    for name in DSN_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return normalize_dsn(value)
    return None


def resolve_dsn(explicit: str | None = None) -> str:
    """The DSN to use; starts (or reuses) the embedded server when none is configured."""
    dsn = configured_dsn(explicit)
    if dsn is not None:
        return dsn
    from pgqueue import embedded  # imported late: only the zero-set-up path needs it

    return embedded.server_dsn()


def normalize_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (postgresql+psycopg://) as well as libpq ones."""
    dsn = dsn.strip()
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql+asyncpg://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix) :]
    return dsn
