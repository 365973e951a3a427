"""pgqueue: durable background jobs and cron for Python, with PostgreSQL as the only infrastructure."""

from pgqueue.cron.expression import CronError
from pgqueue.errors import (
    DatabaseUnavailableError,
    InvalidJobError,
    PgQueueError,
    SchemaMissingError,
    SchemaOutdatedError,
    UnknownTaskError,
)
from pgqueue.queue import Backoff, Batch, Fixed, InBatch, JobSpec, Queue, Task
from pgqueue.settings import WorkerSettings
from pgqueue.worker import JobContext, Worker, current_job

__all__ = [
    "Backoff",
    "Batch",
    "CronError",
    "DatabaseUnavailableError",
    "Fixed",
    "InBatch",
    "InvalidJobError",
    "JobContext",
    "JobSpec",
    "PgQueueError",
    "Queue",
    "SchemaMissingError",
    "SchemaOutdatedError",
    "Task",
    "UnknownTaskError",
    "Worker",
    "WorkerSettings",
    "current_job",
]
