"""The application side, what web code imports: the Queue (task registry and enqueue), tasks, retry policies
and the checks that make a valid job. It reaches the database only through pgqueue.store."""

from pgqueue.queue.jobs import JobSpec
from pgqueue.queue.queue import Queue
from pgqueue.queue.retry import Backoff, Fixed
from pgqueue.queue.tasks import Task

__all__ = ["Backoff", "Fixed", "JobSpec", "Queue", "Task"]
