"""pgqueue: durable background jobs and cron for Python, with PostgreSQL as the only infrastructure."""

from pgqueue.cron.expression import CronError
from pgqueue.errors import (
    DatabaseUnavailableError,
    Discard,
    InvalidJobError,
    JobCancelled,
    JobFailed,
    JobNotFoundError,
    PgQueueError,
    SchemaMissingError,
    SchemaOutdatedError,
    Snooze,
    UnknownTaskError,
)
from pgqueue.queue import Backoff, Fixed, JobSpec, Queue, Task
from pgqueue.settings import WorkerSettings
from pgqueue.worker import JobContext, Worker, current_job

__all__ = [
    "Backoff",
    "CronError",
    "DatabaseUnavailableError",
    "Discard",
    "Fixed",
    "InvalidJobError",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobNotFoundError",
    "JobSpec",
    "PgQueueError",
    "Queue",
    "SchemaMissingError",
    "SchemaOutdatedError",
    "Snooze",
    "Task",
    "UnknownTaskError",
    "Worker",
    "WorkerSettings",
    "current_job",
]
