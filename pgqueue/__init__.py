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
from pgqueue.queue import Backoff, Batch, Fixed, InBatch, JobSpec, Queue, Task
from pgqueue.settings import WorkerSettings
from pgqueue.worker import JobContext, Worker, current_job
from pgqueue.worker.events import JobEvent, Observer

__all__ = [
    "Backoff",
    "Batch",
    "CronError",
    "DatabaseUnavailableError",
    "Discard",
    "Fixed",
    "InBatch",
    "InvalidJobError",
    "JobCancelled",
    "JobContext",
    "JobEvent",
    "JobFailed",
    "JobNotFoundError",
    "JobSpec",
    "Observer",
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
