"""Exceptions pgqueue raises; each message is one line a user can act on."""

from __future__ import annotations

import math
from datetime import timedelta


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


# -- raised by handlers: how this attempt ends ----------------------------------------------------------------

# The longest snooze: a year. Anything longer is almost certainly a unit mistake (milliseconds for seconds).
MAX_SNOOZE_SECONDS = 365 * 24 * 3600


class Discard(Exception):
    """Raise it in a handler to fail the job now, without retrying it: `raise pgqueue.Discard("why")`.

    The job goes to `failed` whatever attempts it has left; the reason is its error."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class Snooze(Exception):
    """Raise it in a handler to run the job again in `seconds` (a number or a timedelta, 0 to a year).

    The attempt is not charged (`attempts` is as before it started), nothing is added to the error history and
    `error` is left as it was; the job's `snoozes` column counts its snoozes. A value that is not a finite
    number in range raises ValueError here, which fails the attempt like any other exception."""

    def __init__(self, seconds: float | timedelta) -> None:
        self.seconds = snooze_seconds(seconds)
        super().__init__(f"snoozed for {self.seconds:g} s")


def snooze_seconds(value: object) -> float:
    """`value` as a number of seconds to snooze, or ValueError saying why it is not one."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(f"Snooze takes seconds (a number or a timedelta), got {type(value).__name__}")
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SNOOZE_SECONDS:
        raise ValueError(f"Snooze({seconds!r}): seconds must be a finite number from 0 to {MAX_SNOOZE_SECONDS}")
    return seconds


# -- raised by Queue.result: how a job that was waited for ended --------------------------------------------


class JobFailed(PgQueueError):
    """The job waited for failed for good; `error` is its last error."""

    def __init__(self, job_id: int, error: str | None) -> None:
        super().__init__(f"job {job_id} failed: {error or 'no error recorded'}")
        self.job_id = job_id
        self.error = error


class JobCancelled(PgQueueError):
    """The job waited for was cancelled."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


class JobNotFoundError(PgQueueError, LookupError):
    """No job has that id (never made, or pruned after its retention)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job {job_id} (never enqueued, or pruned after the retention period)")
        self.job_id = job_id
