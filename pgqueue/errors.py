"""Exceptions pgqueue raises; each message is one line a user can act on."""

from __future__ import annotations


class PgQueueError(Exception):
    """Base class of pgqueue's own errors."""


class UnknownTaskError(PgQueueError, LookupError):
    """No task of that name is registered on the queue."""


class InvalidJobError(PgQueueError, ValueError):
    """Arguments or options that cannot make a job (not JSON, wrong signature, negative delay...)."""


class SchemaMissingError(PgQueueError):
    """The database has no pgqueue schema yet."""

    def __init__(self) -> None:
        super().__init__("the pgqueue tables do not exist in this database: run `pgqueue migrate` first")


class SchemaOutdatedError(PgQueueError):
    """The database's pgqueue schema is older than this code (a migration added what a statement needs)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the pgqueue schema is older than this code ({detail}): run `pgqueue migrate`")


class DatabaseUnavailableError(PgQueueError):
    """The database could not be reached or the statement's commit failed."""


class MigrationPrivilegeError(PgQueueError):
    """`pgqueue migrate` lacks a privilege: the schema's owner must run it (or create the schema first)."""
