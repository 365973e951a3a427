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
from pgqueue.queue import Backoff, Fixed, JobSpec, Queue, Task
from pgqueue.settings import WorkerSettings
from pgqueue.worker import JobContext, Worker, current_job
from pgqueue.worker.events import JobEvent, Observer

__all__ = [
    "Backoff",
    "CronError",
    "DatabaseUnavailableError",
    "Fixed",
    "InvalidJobError",
    "JobContext",
    "JobEvent",
    "JobSpec",
    "Observer",
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
