"""Running one job's handler: sync ones on daemon threads, async ones on the loop; the outcome as data."""

from __future__ import annotations

import asyncio
import contextvars
import json
import queue as stdlib_queue
import re
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgqueue.errors import Discard, InvalidJobError, Snooze, snooze_seconds
from pgqueue.queue.tasks import Enqueuer, Task
from pgqueue.text import clip

# Stored per attempt in jobs.errors and written to the log: bounded, whatever a handler raises.
ERROR_LIMIT = 2000  # characters of an error message
TRACEBACK_LIMIT = 4000  # characters of a traceback (its end, which names the failing call)
# A result is stored in the job's row and sent with the batched acks of other jobs: one too big to handle
# fails its own job, with a message saying so, instead of the whole batch.
RESULT_LIMIT = 1024 * 1024  # characters of a result's JSON
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL, not an escaped backslash + "u0000"


@dataclass
class JobContext:
    """What a running handler can learn about its job: `pgqueue.current_job()`."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    # A plain flag, not a threading.Event: reading it from a handler thread is safe, and it costs nothing
    # per job (an Event per job was a measurable share of a no-op job's cost).
    _cancelled: bool = field(default=False, init=False, repr=False)
    # The job's Queue, which reads its parents (workflows) on its own connections when asked.
    _queue: Enqueuer | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled or its worker is shutting down past the grace period.

        Long sync handlers should check it between steps and return early; async handlers are
        cancelled for them (CancelledError).
        """
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def parents(self) -> list[Any]:
        """The jobs this one was enqueued `after` (pgqueue.store.rows.Parent: id, task, status, result, error),
        read now. One query on the Queue's own connection: from an async handler use `parents_async`."""
        return self._reader().parents(self.id)

    async def parents_async(self) -> list[Any]:
        return await self._reader().parents_async(self.id)

    def parent_results(self) -> dict[int, Any]:
        """The stored results of the parents that completed, by job id (a chain's previous job: one entry)."""
        return {parent.id: parent.result for parent in self.parents() if parent.status == "completed"}

    async def parent_results_async(self) -> dict[int, Any]:
        return {parent.id: parent.result for parent in await self.parents_async() if parent.status == "completed"}

    def _reader(self) -> Enqueuer:
        if self._queue is None:
            raise LookupError(f"job {self.id}: its task is not registered on a Queue, which reads its parents")
        return self._queue


_current_job: contextvars.ContextVar[JobContext] = contextvars.ContextVar("pgqueue_current_job")


def current_job() -> JobContext:
    """The job this handler is running for; raises LookupError outside a handler."""
    return _current_job.get()


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. `permanent` failures are not retried (the job can never succeed as is)."""

    ok: bool
    result_json: str | None = None
    error: str | None = None
    traceback: str | None = None
    permanent: bool = False
    # The handler raised Snooze: run again after this many seconds, the attempt not charged (not a failure).
    snooze: float | None = None


class HandlerThreads:
    """Daemon threads for sync handlers, started on demand.

    Daemon threads, unlike ThreadPoolExecutor's, never keep the process alive: a handler stuck past the
    shutdown grace period must not stop the worker from handing its job back and exiting.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._work: stdlib_queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None] = (
            stdlib_queue.SimpleQueue()
        )
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        # Outcomes reach the loop in batches: one wake-up of the loop for all handlers that finished meanwhile.
        self._finished: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._wakeup_pending = False

    def submit(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._lock:
            if self._idle == 0:
                thread = threading.Thread(target=self._serve, name=f"pgqueue-handler-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
        self._work.put((future, call))
        return future

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, call = item
            try:
                outcome: tuple[asyncio.Future[Any], Any, BaseException | None] = (future, call(), None)
            except BaseException as exc:  # a handler's SystemExit must end its job, not its thread
                outcome = (future, None, exc)
            with self._lock:
                self._idle += 1
                self._finished.append(outcome)
                if self._wakeup_pending:
                    continue
                self._wakeup_pending = True
            self._loop.call_soon_threadsafe(self._settle_finished)

    def _settle_finished(self) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
            self._wakeup_pending = False
        for future, result, exc in finished:
            _settle(future, result, exc)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._work.put(None)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # timed out or cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


async def run_handler(
    task: Task | None,
    name: str,
    args: Any,
    context: JobContext,
    threads: HandlerThreads,
    on_enter: Callable[[], None] = lambda: None,
) -> Outcome:
    """Run one attempt; every failure becomes an Outcome (CancelledError alone propagates).

    `on_enter` is called just before the handler itself is (on its thread, for a sync handler): from then on
    the attempt counts as started, and a rescue charges it."""
    if task is None:
        error = f"unknown task {clip(name, 200)!r}: no handler registered in this worker"
        return Outcome(ok=False, error=_storable(error), permanent=True)
    if not isinstance(args, dict):
        return Outcome(ok=False, error=f"args must be a JSON object, got {type(args).__name__}", permanent=True)
    if not task.fits(args):
        try:
            task.signature.bind(**args)
        except TypeError as exc:
            error = clip(f"arguments do not fit task {name!r}: {exc}", ERROR_LIMIT)
            return Outcome(ok=False, error=_storable(error), permanent=True)
    if task.typed:  # parameters typed with a pydantic model or a dataclass get instances, checked again
        try:
            args = task.decode_args(args)
        except InvalidJobError as exc:
            return Outcome(ok=False, error=_storable(clip(str(exc), ERROR_LIMIT)), permanent=True)

    _current_job.set(context)
    # Awaited inline under asyncio.timeout, not via wait_for: on Python 3.11 wait_for runs a coroutine in a
    # task of its own, and a KeyboardInterrupt or SystemExit escaping such a task stops the whole event loop.
    # Without a timeout there is no deadline to enter: that saves a few microseconds per job.
    deadline = asyncio.timeout(task.timeout) if task.timeout is not None else None
    try:
        if deadline is None:
            result = await _call(task, args, threads, on_enter)
        else:
            async with deadline:
                result = await _call(task, args, threads, on_enter)
    except asyncio.CancelledError:
        context.cancel()
        raise
    except Snooze as exc:
        return snoozed(exc)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt in a handler fail the job only
        if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():  # ours, not the handler's
            context.cancel()  # a sync handler can notice and stop; its slot is free already
            # retry_on decides about our timeout as about the handler's own TimeoutError.
            return Outcome(ok=False, error=f"timed out after {task.timeout:g} s", permanent=not task.retries(exc))
        # Discard: the handler says this job can never succeed; retry_on: only the listed exceptions are retried.
        permanent = isinstance(exc, Discard) or not task.retries(exc)
        return Outcome(ok=False, error=_describe(exc), traceback=_short_traceback(exc), permanent=permanent)
    if result is None:
        return Outcome(ok=True)
    try:
        result_json = json.dumps(result, allow_nan=False, ensure_ascii=False)
        result_json.encode("utf-8")  # an unpaired surrogate cannot be sent
    except (TypeError, ValueError, RecursionError) as exc:
        error = _storable(clip(f"handler returned a value that is not JSON-serialisable: {exc}", ERROR_LIMIT))
        return Outcome(ok=False, error=error, permanent=True)
    if len(result_json) > RESULT_LIMIT:
        error = (
            f"handler returned a result too large to store ({len(result_json):,} characters of JSON; the limit is "
            f"{RESULT_LIMIT:,}): store it elsewhere and return a reference to it"
        )
        return Outcome(ok=False, error=error, permanent=True)
    if _JSON_NUL.search(result_json):
        error = "handler returned a value with a NUL character, which jsonb cannot store"
        return Outcome(ok=False, error=error, permanent=True)
    return Outcome(ok=True, result_json=result_json)


async def _call(task: Task, args: dict[str, Any], threads: HandlerThreads, on_enter: Callable[[], None]) -> Any:
    if task.is_async:
        on_enter()
        return await task.fn(**args)
    call_context = contextvars.copy_context()

    def enter_and_call() -> Any:
        on_enter()
        return call_context.run(task.fn, **args)

    return await threads.submit(enter_and_call)


def snoozed(exc: Snooze) -> Outcome:
    """The outcome of an attempt that raised Snooze. Its seconds were checked when it was made, but a subclass or
    a handler may have changed them since: checked again, and a bad value fails the attempt, saying why."""
    try:
        seconds = snooze_seconds(getattr(exc, "seconds", None))
    except ValueError as bad:
        return Outcome(ok=False, error=_storable(clip(f"invalid snooze: {bad}", ERROR_LIMIT)), permanent=True)
    return Outcome(ok=False, snooze=seconds)


def failure(exc: BaseException) -> Outcome:
    """The outcome of an attempt that raised `exc`."""
    return Outcome(ok=False, error=_describe(exc), traceback=_short_traceback(exc))


def unreadable_args(exc: BaseException) -> str:
    """The error of a job whose args cannot be turned into Python (it can never succeed as it is)."""
    if isinstance(exc, RecursionError):
        return "args cannot be read: nested too deeply"
    return _storable(clip(f"args cannot be read: {exc}", ERROR_LIMIT))


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc).strip()
    except Exception:  # an exception whose __str__ raises
        text = "(its message could not be read)"
    return _storable(clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, ERROR_LIMIT))


def _short_traceback(exc: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:
        return "(the traceback could not be formatted)"
    return _storable(clip(text, TRACEBACK_LIMIT, keep="tail"))


def _storable(text: str) -> str:
    """Text PostgreSQL accepts: a NUL or an unpaired surrogate in an error message must not stop its ack."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
