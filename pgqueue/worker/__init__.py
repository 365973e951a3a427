"""The worker, as parts with narrow interfaces (docs/architecture.md): connection (the main connection's
owner), listener (LISTEN), producer (the claim loop), slots (running jobs), executor (one handler), completer
(the outcome buffer), leases (renewal on a thread), maintenance (rescue, prune), rules (pure), supervisor."""

from pgqueue.settings import WorkerSettings
from pgqueue.worker.executor import JobContext, current_job
from pgqueue.worker.worker import Worker

__all__ = ["JobContext", "Worker", "WorkerSettings", "current_job"]
