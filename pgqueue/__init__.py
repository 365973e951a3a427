"""pgqueue: durable background jobs and cron for Python, with PostgreSQL as the only infrastructure."""

from pgqueue.cron import CronError
from pgqueue.errors import (
    DatabaseUnavailableError,
    InvalidJobError,
    PgQueueError,
    SchemaMissingError,
    UnknownTaskError,
)
from pgqueue.execution import JobContext, current_job
from pgqueue.queue import JobSpec, Queue
from pgqueue.retry import Backoff, Fixed
from pgqueue.tasks import Task
from pgqueue.worker import Worker, WorkerSettings

__all__ = [
    "Backoff",
    "CronError",
    "DatabaseUnavailableError",
    "Fixed",
    "InvalidJobError",
    "JobContext",
    "JobSpec",
    "PgQueueError",
    "Queue",
    "SchemaMissingError",
    "Task",
    "UnknownTaskError",
    "Worker",
    "WorkerSettings",
    "current_job",
]
