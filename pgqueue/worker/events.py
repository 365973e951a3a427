"""What the worker tells observers: one `JobEvent` per step of a job's life in this worker, through one narrow
interface, so that metrics, structured logs and tracing hook in at one place instead of calls scattered over the
parts.

Slots and maintenance call `Observers.emit(...)` only when an observer is registered (`if observers:`): a worker
without any pays one truth test per event. An observer that raises is logged once and then ignored: a broken
exporter must not fail a job or stop the worker.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger("pgqueue.worker")

# `extra` of the worker's text lines that tell what a JobEvent tells too (a retry, a failure, a stop, a rescue):
# with `--log-format json` each event is its own structured line, and these are left out so that nothing is
# said twice (cli/errors.py filters them).
TOLD_AS_EVENT = "told_as_event"
AS_EVENT = {TOLD_AS_EVENT: True}


class Event(StrEnum):
    STARTED = "started"  # the handler started
    COMPLETED = "completed"
    RETRIED = "retried"  # the attempt failed; the job runs again after its backoff
    FAILED = "failed"  # the attempt failed for good (last attempt, or a permanent failure)
    CANCELLED = "cancelled"  # stopped: the table no longer gives this attempt to this worker (cancelled, rescued)
    HANDED_BACK = "handed_back"  # stopped at shutdown past the grace period; back to pending, not counted
    RESCUED = "rescued"  # this worker's maintenance found the job's own worker lost (its lease expired)


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and two events are built per job.
@dataclass(slots=True)
class JobEvent:
    event: Event
    id: int
    task: str
    queue: str
    attempt: int
    worker: str
    duration: float | None = None  # seconds the handler ran (completed, retried, failed)
    waited: float | None = None  # seconds the job was runnable before it was claimed (started)
    error: str | None = None  # the attempt's error (retried, failed) or why it was stopped
    status: str | None = None  # the job's status after a rescue (pending or failed)
    trace_context: str | None = None  # the enqueuing trace context, as the row holds it (started; unchecked)


@dataclass(slots=True)
class AttemptScope:
    """Shared by the attempt's observers while its handler runs: a tracer sets `trace_id`; the slots set
    `error` (the attempt failed) before the scope ends."""

    trace_id: str | None = None
    error: str | None = None


class Observer:
    """The hooks an observer may implement; each does nothing here.

    `attempt(started, scope)` wraps the handler's run (on the job's own asyncio task, so what it makes current,
    such as a tracing span, is current in the handler); it may set `scope.trace_id`, which is stored with the
    attempt's error, and read `scope.error` as it ends."""

    def job_event(self, event: JobEvent) -> None:
        pass

    @contextlib.contextmanager
    def attempt(self, started: JobEvent, scope: AttemptScope) -> Iterator[None]:
        yield

    def close(self) -> None:
        pass


class Observers:
    """The registered observers, called in turn. False when there are none (callers skip building events)."""

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self._observers = list(observers or [])
        self._broken: set[int] = set()
        self.traces = any(type(o).attempt is not Observer.attempt for o in self._observers)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)
        self.traces = self.traces or type(observer).attempt is not Observer.attempt

    def emit(self, event: JobEvent) -> None:
        for observer in self._observers:
            try:
                observer.job_event(event)
            except Exception:
                self._failed(observer)

    @contextlib.contextmanager
    def attempt(self, started: JobEvent) -> Iterator[AttemptScope]:
        """The observers' attempt scopes, nested, around one handler run."""
        scope = AttemptScope()
        with contextlib.ExitStack() as stack:
            for observer in self._observers:
                stack.enter_context(self._guarded(observer, started, scope))
            yield scope

    @contextlib.contextmanager
    def _guarded(self, observer: Observer, started: JobEvent, scope: AttemptScope) -> Iterator[None]:
        """One observer's scope, whose own failures (entering or leaving) are the observer's, not the job's."""
        try:
            inner = observer.attempt(started, scope)
            inner.__enter__()
        except Exception:
            self._failed(observer)
            yield
            return
        try:
            yield
        except BaseException as exc:
            try:
                inner.__exit__(type(exc), exc, exc.__traceback__)
            except Exception:
                self._failed(observer)
            raise
        try:
            inner.__exit__(None, None, None)
        except Exception:
            self._failed(observer)

    def close(self) -> None:
        for observer in self._observers:
            try:
                observer.close()
            except Exception:
                self._failed(observer)

    def _failed(self, observer: Observer) -> None:
        if id(observer) not in self._broken:
            self._broken.add(id(observer))
            log.exception("observer %s failed; its later failures are not logged", type(observer).__name__)
