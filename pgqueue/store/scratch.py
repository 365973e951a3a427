"""Scratch databases for tests (pgqueue.pytest_plugin): created from a template, dropped with FORCE. The names are
identifiers, quoted with psycopg.sql, never formatted in as text."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgqueue.store.connections import connect_kwargs


def with_database(dsn: str, name: str) -> str:
    """The same server and options, another database."""
    return make_conninfo(dsn, dbname=name)


def _maintenance(server_dsn: str) -> psycopg.Connection:
    dsn = with_database(server_dsn, "postgres")
    return psycopg.connect(dsn, autocommit=True, **connect_kwargs(dsn, "pgqueue tests"))


def create_database(server_dsn: str, name: str, template: str | None = None) -> str:
    """A new database `name` (a copy of `template`, when given); returns its DSN."""
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {} STRATEGY FILE_COPY").format(statement, sql.Identifier(template))
    with _maintenance(server_dsn) as conn:
        conn.execute(statement)
    return with_database(server_dsn, name)


def drop_database(server_dsn: str, name: str) -> None:
    with _maintenance(server_dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
