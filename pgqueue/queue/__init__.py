"""The application side, what web code imports: the Queue (task registry and enqueue), tasks, retry policies
and the checks that make a valid job. It reaches the database only through pgqueue.store."""

from pgqueue.queue.jobs import InBatch, JobSpec
from pgqueue.queue.queue import Batch, Queue
from pgqueue.queue.retry import Backoff, Fixed
from pgqueue.queue.tasks import Task

__all__ = ["Backoff", "Batch", "Fixed", "InBatch", "JobSpec", "Queue", "Task"]
