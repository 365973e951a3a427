"""The jobs running in this worker: starting a claimed job on its handler, recording how it ended, stopping
an attempt that is no longer ours. The handler itself runs in executor.py; outcomes go to the completer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pgqueue.queue.tasks import Task
from pgqueue.store.rows import Attempt, ClaimedJob
from pgqueue.store.statements import Failure, Snoozed
from pgqueue.text import printable, shown
from pgqueue.worker.completer import Completer
from pgqueue.worker.events import AS_EVENT, Event, JobEvent, Observers
from pgqueue.worker.executor import HandlerThreads, JobContext, Outcome, failure, run_handler, unreadable_args
from pgqueue.worker.rules import PREFETCH_BELOW_SECONDS, average_job_seconds

log = logging.getLogger("pgqueue.worker")

_ATTEMPTS_USED_UP = (
    "attempt {job.attempt} is past max_attempts {job.max_attempts}: the job was made runnable with its attempts "
    "used up (run `pgqueue retry-failed`, which resets them, to run it again)"
)


@dataclass
class RunningJob:
    id: int
    attempt: int
    max_attempts: int
    task_name: str
    context: JobContext
    handle: asyncio.Task[None] | None = None
    stopped: bool = False  # cancelled by a user, rescued elsewhere, superseded or handed back: record nothing
    waited: float = 0.0  # seconds it was runnable before its claim (for observers)
    trace_id: str | None = None  # the attempt's trace, when an observer traces: kept with its error
    trace_context: str | None = None  # the enqueuing trace context (the row's: unchecked)

    @property
    def key(self) -> Attempt:
        return (self.id, self.attempt)


class Slots:
    """At most `concurrency` jobs at once. `on_free()` is called as each slot frees (the claim loop refills it)."""

    def __init__(
        self,
        tasks: dict[str, Task],
        completer: Completer,
        *,
        concurrency: int,
        on_free: Callable[[], None],
        observers: Observers | None = None,
        worker_id: str = "",
    ) -> None:
        self._tasks = tasks
        self._observers = observers if observers is not None else Observers()
        self._worker_id = worker_id
        self._completer = completer
        self.threads: HandlerThreads | None = None  # the event loop's, set when the worker starts
        self.concurrency = concurrency
        self._on_free = on_free
        self.running: dict[int, RunningJob] = {}
        self.job_seconds = PREFETCH_BELOW_SECONDS  # moving average of handler run times; prefetch when short

    def __len__(self) -> int:
        return len(self.running)

    @property
    def free(self) -> int:
        return self.concurrency - len(self.running)

    def start(self, claimed: ClaimedJob) -> None:
        context = JobContext(
            id=claimed.id,
            task=claimed.task,
            queue=claimed.queue,
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
        )
        task = self._tasks.get(claimed.task)
        context._queue = task.enqueuer if task is not None else None
        job = RunningJob(
            claimed.id,
            claimed.attempt,
            claimed.max_attempts,
            claimed.task,
            context,
            waited=claimed.waited,
            trace_context=claimed.trace_context,
        )
        previous = self.running.get(job.id)
        if previous is not None:
            # Its lease lapsed while it still ran here (an outage, a stalled loop), it was rescued, and now we
            # claimed it again: the older attempt is superseded and must not disturb this one.
            self.stop(previous, f"superseded by attempt {job.attempt}: its lease had lapsed", Event.CANCELLED)
            self._completer.forget_start(previous.key)
        if claimed.attempt > claimed.max_attempts:
            # Only hand-written SQL gets a job here (a pending row whose attempts are used up).
            self._record(job, Outcome(ok=False, error=_ATTEMPTS_USED_UP.format(job=job), permanent=True))
            return
        try:
            args = json.loads(claimed.args_text)
        except (ValueError, RecursionError) as exc:
            self._record(job, Outcome(ok=False, error=unreadable_args(exc), permanent=True))
            return
        self.running[job.id] = job
        self._completer.started(job.key, time.monotonic())
        log.debug("job %d %s attempt %d started", job.id, shown(job.task_name), job.attempt)
        if self._observers:
            self._observers.emit(self._event(job, Event.STARTED, waited=job.waited))
        job.handle = asyncio.create_task(self._run(job, args), name=f"pgqueue-job-{job.id}")

    async def _run(self, job: RunningJob, args: Any) -> None:
        assert self.threads is not None
        task = self._tasks.get(job.task_name)
        started = time.monotonic()
        completer = self._completer
        key = job.key

        def enter() -> None:  # on the handler's thread, for a sync handler
            completer.entered(key)

        try:
            if self._observers.traces:
                started_event = self._event(job, Event.STARTED, waited=job.waited, trace_context=job.trace_context)
                with self._observers.attempt(started_event) as scope:
                    outcome = await run_handler(task, job.task_name, args, job.context, self.threads, enter)
                    job.trace_id = scope.trace_id
                    scope.error = None if outcome.ok else (outcome.error or "error")
            else:
                outcome = await run_handler(task, job.task_name, args, job.context, self.threads, enter)
        except asyncio.CancelledError:
            outcome = None
        except BaseException as exc:
            # run_handler catches everything, but CPython lets a GeneratorExit raised through a future skip
            # the except clauses of some awaiting frames; it must fail the attempt, not leave it running.
            outcome = failure(exc)
        finally:
            ran = time.monotonic() - started
            self.job_seconds = average_job_seconds(self.job_seconds, ran)
            if self.running.get(job.id) is job:  # not superseded by a newer attempt meanwhile
                del self.running[job.id]
            self._on_free()
        if outcome is None or job.stopped:
            self._completer.forget_start(job.key)
            return
        self._record(job, outcome, ran)

    def _record(self, job: RunningJob, outcome: Outcome, ran: float | None = None) -> None:
        """`ran`: seconds the handler ran (None for a job failed without running)."""
        self._completer.forget_start(job.key)  # the outcome's write records the start too
        if outcome.ok:
            self._completer.completed(job.id, job.attempt, outcome.result_json)
            log.debug("job %d %s attempt %d completed", job.id, shown(job.task_name), job.attempt)
            if self._observers:
                self._observers.emit(self._event(job, Event.COMPLETED, duration=ran))
            return
        if outcome.snooze is not None:
            self._completer.snoozed(Snoozed(job.id, job.attempt, outcome.snooze))
            log.info(
                "job %d %s attempt %d snoozed for %g s (attempt not counted)",
                job.id,
                shown(job.task_name),
                job.attempt,
                outcome.snooze,
            )
            return
        task = self._tasks.get(job.task_name)
        retry = not outcome.permanent and job.attempt < job.max_attempts
        delay = timedelta(seconds=task.retry.delay(job.attempt)) if retry and task else timedelta(0)
        error = outcome.error or "error"
        self._completer.failed(Failure(job.id, job.attempt, retry, delay, error, outcome.traceback, job.trace_id))
        if self._observers:
            self._observers.emit(self._event(job, Event.RETRIED if retry else Event.FAILED, duration=ran, error=error))
        if retry:
            log.info(
                "job %d %s attempt %d/%d failed, retry in %.1f s: %s",
                job.id,
                shown(job.task_name),
                job.attempt,
                job.max_attempts,
                delay.total_seconds(),
                printable(error),
                extra=AS_EVENT,
            )
        else:
            log.warning(
                "job %d %s attempt %d/%d failed for good: %s",
                job.id,
                shown(job.task_name),
                job.attempt,
                job.max_attempts,
                printable(error),
                extra=AS_EVENT,
            )

    def stop(self, job: RunningJob, reason: str, event: Event = Event.CANCELLED) -> None:
        """The attempt is no longer ours (cancelled, rescued elsewhere, superseded): stop it and record nothing."""
        if job.stopped:
            return
        job.stopped = True
        job.context.cancel()
        if job.handle is not None:
            job.handle.cancel()
        log.info("job %d %s attempt %d stopped: %s", job.id, shown(job.task_name), job.attempt, reason, extra=AS_EVENT)
        if self._observers:
            self._observers.emit(self._event(job, event, error=reason))

    def _event(self, job: RunningJob, event: Event, **details: Any) -> JobEvent:
        context = job.context
        return JobEvent(event, job.id, job.task_name, context.queue, job.attempt, self._worker_id, **details)

    def stop_lost(self, lost: list[Attempt], reason: str) -> None:
        """Stop the running attempts among `lost` (the lease renewal found them no longer ours)."""
        for job_id, attempt in lost:
            job = self.running.get(job_id)
            if job is not None and job.attempt == attempt:
                self.stop(job, reason)
                self._completer.forget_start(job.key)

    def stop_all(self, reason: str) -> list[RunningJob]:
        """Stop every running attempt (to hand them back); returns them."""
        jobs = [job for job in self.running.values() if not job.stopped]
        for job in jobs:
            self.stop(job, reason, Event.HANDED_BACK)
            self._completer.forget_start(job.key)
        return jobs

    def held(self) -> list[Attempt]:
        """The running attempts (called from the lease thread: list() copies the dict's values in one step)."""
        return [job.key for job in list(self.running.values()) if not job.stopped]

    def async_jobs(self) -> str:
        """For the stall warning (called from the lease thread): one of these holds the event loop."""
        names = [
            f"job {job.id} {shown(job.task_name)} (attempt {job.attempt})"
            for job in list(self.running.values())
            if (task := self._tasks.get(job.task_name)) is not None and task.is_async
        ]
        return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
