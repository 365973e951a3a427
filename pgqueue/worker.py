"""The worker: claim loop, bounded slots, batched acks, lease heartbeat, LISTEN wake-up, graceful stop.

One asyncio loop per process with two connections: `main` (claims, acks, heartbeats, maintenance;
one statement at a time) and `listen` (LISTEN only). Sync handlers run on daemon threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, LiteralString

import psycopg
import psycopg.errors

from pgqueue import connections
from pgqueue.errors import SchemaMissingError
from pgqueue.execution import HandlerThreads, JobContext, Outcome, failure, run_handler, unreadable_args
from pgqueue.leases import Attempt, LeaseKeeper
from pgqueue.maintenance import Maintenance
from pgqueue.queue import Queue
from pgqueue.sanitize import clip, first_line, printable
from pgqueue.scheduler import Scheduler
from pgqueue.sql import QUERIES

log = logging.getLogger("pgqueue.worker")

JOBS_CHANNEL = "pgqueue_jobs"
# Claim ahead only while handlers take less than this on average: longer jobs are better left in the table,
# where an idle worker elsewhere can take them.
PREFETCH_BELOW_SECONDS = 0.01
# ... and no more than about this much work per process: the last job claimed ahead starts within it.
PREFETCH_AHEAD_SECONDS = 0.05
# The default ceiling of one claim (slots + claimed ahead). Since acks ride on the claim statement, bigger
# claims pay (measured, no-op jobs, 1 process, concurrency 16: claims up to 48 -> 23k jobs/s, 256 -> 39k,
# 512 -> 43k); each is one index scan and one UPDATE however many rows it takes.
PREFETCH_CLAIM_UP_TO = 512
CANCEL_CHANNEL = "pgqueue_cancel"
GARBAGE_LOG_EVERY = 60.0  # seconds: a flood of malformed notifications costs one log line a minute
HANDED_BACK = "interrupted: worker stopped before the job finished (attempt not counted)"
# Errors that say "try the same statement again", not "this data cannot be written".
TRANSIENT_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


@dataclass
class WorkerSettings:
    queues: list[str] | None = None  # None: every queue
    concurrency: int = 16
    burst: bool = False  # exit once nothing is runnable now
    poll_interval: float = 30.0  # fallback when no notification arrives (a dead LISTEN, a missed one)
    lease: float = 30.0  # a running job whose lease is not renewed for this long counts as lost
    grace_period: float = 30.0  # on SIGTERM: time for running jobs to finish before they are handed back
    maintenance_interval: float | None = None  # rescue of lost jobs, pruning; default: lease / 2, at most 15 s
    retention: timedelta = field(default_factory=lambda: timedelta(days=7))
    ack_delay: float = 0.02  # completions are batched for at most this long
    # Jobs claimed ahead of free slots while handlers are short (0: never). The next claim's round trip then
    # overlaps the running batch instead of following it, and claims come in bigger batches (fewer commits
    # per job). None: as many as fill a claim of PREFETCH_CLAIM_UP_TO jobs. Either way no more than about
    # PREFETCH_AHEAD_SECONDS of work at the current average run time, and none while jobs take 10 ms or more.
    prefetch: int | None = None
    reconnect_max_delay: float = 10.0
    # Where to LISTEN; default: the worker's DSN. Behind a transaction-pooling PgBouncer, point this at
    # PostgreSQL directly: LISTEN cannot work through such a pooler, and without it the worker polls.
    listen_dsn: str | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease < 3:
            raise ValueError("lease must be at least 3 seconds")
        if self.poll_interval <= 0 or self.grace_period < 0:
            raise ValueError("poll_interval must be positive and grace_period not negative")
        if self.maintenance_interval is None:
            self.maintenance_interval = min(15.0, self.lease / 2)
        if self.prefetch is None:
            self.prefetch = max(0, PREFETCH_CLAIM_UP_TO - self.concurrency)
        if self.prefetch < 0:
            raise ValueError("prefetch must not be negative")


@dataclass
class RunningJob:
    id: int
    attempt: int
    max_attempts: int
    task_name: str
    context: JobContext
    handle: asyncio.Task[None] | None = None
    stopped: bool = False  # cancelled by a user, rescued elsewhere, superseded or handed back: record nothing

    @property
    def key(self) -> Attempt:
        return (self.id, self.attempt)


@dataclass(frozen=True)
class ClaimedJob:
    """A row of the claim: the job's args still as text, parsed when it starts (an unreadable one fails alone)."""

    id: int
    queue: str
    task: str
    args_text: str
    attempt: int
    max_attempts: int

    @property
    def key(self) -> Attempt:
        return (self.id, self.attempt)


@dataclass(frozen=True)
class Failure:
    id: int
    attempt: int
    retry: bool
    delay: timedelta
    error: str
    traceback: str | None


@dataclass
class _Results:
    """Outcomes (and handler starts) waiting for the next batched write."""

    # Handlers started and still running, with when they started (monotonic): written within ack_delay, so
    # that a rescue can tell a job cut short from one that never started. A job that finishes first drops out
    # (its completion or failure records the start).
    started: dict[Attempt, float] = field(default_factory=dict)
    completed: list[tuple[int, int, str | None]] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.started) + len(self.completed) + len(self.failed)

    def ids(self) -> list[int]:
        return [job_id for job_id, _ in self.started] + [row[0] for row in self.completed] + [f.id for f in self.failed]

    def oldest_start(self) -> float | None:
        return next(iter(self.started.values()), None)


class Worker:
    def __init__(self, queue: Queue, settings: WorkerSettings | None = None, *, dsn: str | None = None) -> None:
        self.queue = queue
        self.settings = settings or WorkerSettings()
        self.dsn = dsn or queue.dsn
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[int, RunningJob] = {}
        self.prefetched: collections.deque[ClaimedJob] = collections.deque()  # claimed, waiting for a slot
        self.stats = {"completed": 0, "failed": 0, "retried": 0}
        self._results = _Results()
        self._main: psycopg.AsyncConnection[Any] | None = None
        self._outage_since: float | None = None  # a connection was lost and none has been re-established yet
        self._db_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._force_stop = False
        self._stop_deadline: float | None = None  # past it, a stopping worker stops waiting for the database
        self._claim_wanted = True  # there may be runnable jobs: claim when a slot is free
        self._next_due: float | None = None  # epoch of the earliest known future job
        self._due_unknown = True  # _next_due may have missed jobs (start, poll, LISTEN reconnect, a due time)
        self._next_poll = 0.0
        self._threads: HandlerThreads | None = None
        self._leases: LeaseKeeper | None = None
        self._maintenance = Maintenance(self)
        self._params_lease = timedelta(seconds=self.settings.lease)
        self._job_seconds = PREFETCH_BELOW_SECONDS  # moving average of handler run times; prefetch when short
        self._garbage_logged_at = -GARBAGE_LOG_EVERY

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until stopped by SIGINT/SIGTERM (or, with burst, until nothing is runnable)."""
        asyncio.run(self.run_async(install_signal_handlers=True))

    def stop(self) -> None:
        """Stop claiming; running jobs get the grace period. A second call hands them back at once."""
        if self._stopping:
            self._force_stop = True
        else:
            self._stop_deadline = time.time() + self.settings.grace_period
        self._stopping = True
        self._wake.set()

    async def run_async(self, *, install_signal_handlers: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._threads = HandlerThreads(loop)
        if install_signal_handlers:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal, signum)
        await self._connect_main(first=True)
        self._leases = LeaseKeeper(
            self.dsn,
            self.id,
            self.settings.lease,
            loop,
            held=self._held_attempts,
            on_lost=self._on_attempts_lost,
            stalled_jobs=self._async_jobs_running,
        )
        self._leases.start()
        listener = asyncio.create_task(self._listen(), name="pgqueue-listen")
        housekeeping = asyncio.create_task(self._housekeeping(), name="pgqueue-housekeeping")
        backgrounds = [listener, housekeeping]
        if self.queue.periodic_tasks:
            # Every worker runs the scheduler: each fire is claimed in the database, so no leader is needed.
            scheduler = Scheduler.for_worker(self).run()
            backgrounds.append(asyncio.create_task(scheduler, name="pgqueue-scheduler"))
        log.info(
            "worker %s started: queues=%s concurrency=%d",
            self.id,
            ",".join(map(_shown, self.settings.queues)) if self.settings.queues else "*",
            self.settings.concurrency,
        )
        try:
            await self._claim_loop()
            await self._drain_on_stop()
        finally:
            for background in backgrounds:
                background.cancel()
            await asyncio.gather(*backgrounds, return_exceptions=True)
            self._leases.stop()
            self._threads.shutdown()
            if self._main is not None:
                await self._main.close()
            if install_signal_handlers:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
        log.info(
            "worker %s stopped: %d completed, %d retried, %d failed",
            self.id,
            self.stats["completed"],
            self.stats["retried"],
            self.stats["failed"],
        )

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            log.warning("%s again: handing running jobs back now", name)
        else:
            log.info(
                "%s: no new jobs; %d running get %.0f s to finish",
                name,
                len(self.running),
                self.settings.grace_period,
            )
        self.stop()

    # -- the claim loop -------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        settings = self.settings
        burst_rescued = False
        while not self._stopping:
            await asyncio.sleep(0)  # let jobs that finish together free their slots together
            now = time.time()
            if self._next_due is not None and self._next_due <= now:
                # Look again once this one is claimed: later due times may have been forgotten meanwhile
                # (only the earliest is kept), and the table knows them all.
                self._next_due = None
                self._claim_wanted = self._due_unknown = True
            if now >= self._next_poll:
                self._claim_wanted = self._due_unknown = True
            if settings.burst and not self.running and not self._results:
                self._claim_wanted = True  # one more claim decides whether we are done
            self._start_prefetched()
            free = settings.concurrency - len(self.running)
            room = free + self._prefetch_room()
            if self._claim_wanted and room > 0:
                # Cleared before the claim, not after: a job notified while the claim is on its way may have
                # committed after the claim's snapshot, and its wake-up must not be lost (it would wait for
                # the next notification or the poll).
                self._claim_wanted = False
                claimed = await self._flush_and_claim(room)
                if claimed is None:  # database unreachable (retried after the reconnect delay) or a bad outcome
                    self._claim_wanted = True
                    continue
                self._next_poll = time.time() + settings.poll_interval
                self.prefetched.extend(claimed)
                self._start_prefetched()
                if len(claimed) >= room:
                    self._claim_wanted = True  # a full batch: there may be more
                else:
                    if self._due_unknown:
                        # Only now and then: notifications and our own retries keep _next_due current.
                        self._due_unknown = False
                        await self._refresh_next_due()
                    if settings.burst and not claimed and not self.running and not self.prefetched:
                        await self._flush()
                        # Jobs of a vanished worker are runnable once rescued: a deployment that runs only
                        # burst workers must not leave them stuck.
                        if not burst_rescued and await self._rescue_for_burst():
                            burst_rescued = True
                            self._claim_wanted = True
                            continue
                        return
                continue
            oldest_start = self._results.oldest_start()
            start_due = oldest_start is not None and time.monotonic() - oldest_start >= settings.ack_delay
            if start_due or (self._results and (not self.running or free > 0)):
                # Outcomes wait at most ack_delay so a quiet queue still records completions promptly; so do
                # the starts of handlers that are still running, which a rescue reads.
                await self._sleep_until_woken(0 if start_due else settings.ack_delay)
                if start_due or not self._claim_wanted or free == 0:
                    await self._flush()
                continue
            timeout = self._idle_timeout()
            if oldest_start is not None:
                timeout = min(timeout, max(0.0, oldest_start + settings.ack_delay - time.monotonic()))
            await self._sleep_until_woken(timeout)

    def _prefetch_room(self) -> int:
        if self._job_seconds >= PREFETCH_BELOW_SECONDS:
            return 0
        worth = int(self.settings.concurrency * PREFETCH_AHEAD_SECONDS / max(self._job_seconds, 1e-6))
        return max(0, min(self.settings.prefetch or 0, worth) - len(self.prefetched))

    def _start_prefetched(self) -> None:
        while self.prefetched and len(self.running) < self.settings.concurrency and not self._stopping:
            self._start(self.prefetched.popleft())

    def _idle_timeout(self) -> float:
        deadline = self._next_poll
        if self._next_due is not None:
            deadline = min(deadline, self._next_due)
        return max(0.0, deadline - time.time())

    async def _sleep_until_woken(self, timeout: float) -> None:
        if timeout > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def wake(self, *, claim: bool = True) -> None:
        if claim:
            self._claim_wanted = True
        self._wake.set()

    # -- jobs -----------------------------------------------------------------------------------

    def _start(self, claimed: ClaimedJob) -> None:
        context = JobContext(
            id=claimed.id,
            task=claimed.task,
            queue=claimed.queue,
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
        )
        job = RunningJob(claimed.id, claimed.attempt, claimed.max_attempts, claimed.task, context)
        previous = self.running.get(job.id)
        if previous is not None:
            # Its lease lapsed while it still ran here (an outage, a stalled loop), it was rescued, and now we
            # claimed it again: the older attempt is superseded and must not disturb this one.
            self.stop_job(previous, f"superseded by attempt {job.attempt}: its lease had lapsed")
            self._results.started.pop(previous.key, None)
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
        self._results.started[job.key] = time.monotonic()
        log.debug("job %d %s attempt %d started", job.id, _shown(job.task_name), job.attempt)
        job.handle = asyncio.create_task(self._run(job, args), name=f"pgqueue-job-{job.id}")

    async def _run(self, job: RunningJob, args: Any) -> None:
        assert self._threads is not None
        task = self.queue.tasks.get(job.task_name)
        started = time.monotonic()
        try:
            outcome = await run_handler(task, job.task_name, args, job.context, self._threads)
        except asyncio.CancelledError:
            outcome = None
        except BaseException as exc:
            # run_handler catches everything, but CPython lets a GeneratorExit raised through a future skip
            # the except clauses of some awaiting frames; it must fail the attempt, not leave it running.
            outcome = failure(exc)
        finally:
            self._job_seconds += (time.monotonic() - started - self._job_seconds) * 0.2
            if self.running.get(job.id) is job:  # not superseded by a newer attempt meanwhile
                del self.running[job.id]
            self._start_prefetched()  # the free slot goes to a claimed job at once, without a round trip
            self._wake.set()  # a free slot: claim more (if there may be more) or flush the ack
        if outcome is None or job.stopped:
            self._results.started.pop(job.key, None)
            return
        self._record(job, outcome)

    def _record(self, job: RunningJob, outcome: Outcome) -> None:
        self._results.started.pop(job.key, None)  # the outcome's write records the start too
        if outcome.ok:
            self._results.completed.append((job.id, job.attempt, outcome.result_json))
            log.debug("job %d %s attempt %d completed", job.id, _shown(job.task_name), job.attempt)
            return
        task = self.queue.tasks.get(job.task_name)
        retry = not outcome.permanent and job.attempt < job.max_attempts
        delay = timedelta(seconds=task.retry.delay(job.attempt)) if retry and task else timedelta(0)
        error = outcome.error or "error"
        self._results.failed.append(Failure(job.id, job.attempt, retry, delay, error, outcome.traceback))
        if retry:
            log.info(
                "job %d %s attempt %d/%d failed, retry in %.1f s: %s",
                job.id,
                _shown(job.task_name),
                job.attempt,
                job.max_attempts,
                delay.total_seconds(),
                printable(error),
            )
        else:
            log.warning(
                "job %d %s attempt %d/%d failed for good: %s",
                job.id,
                _shown(job.task_name),
                job.attempt,
                job.max_attempts,
                printable(error),
            )

    # -- database round trips -------------------------------------------------------------------

    def _claim_params(self, limit: int, results: _Results) -> tuple[LiteralString, dict[str, Any]]:
        """The claim statement, which also records the buffered starts and completions, and its parameters."""
        params: dict[str, Any] = {"limit": limit, "lease": self._params_lease, **self._outcome_params(results)}
        if self.settings.queues:
            params["queues"] = self.settings.queues
            return QUERIES["record_outcomes_and_claim_from_queues"], params
        return QUERIES["record_outcomes_and_claim"], params

    def _outcome_params(self, results: _Results) -> dict[str, Any]:
        completed = results.completed
        values = [value for _id, _attempt, value in completed]
        return {
            "started_ids": _int_array(job_id for job_id, _attempt in results.started),
            "started_attempts": _int_array(attempt for _job_id, attempt in results.started),
            "ids": _int_array(job_id for job_id, _attempt, _value in completed),
            "attempts": _int_array(attempt for _job_id, attempt, _value in completed),
            # Most handlers return nothing: a NULL array is padded out by unnest, and costs nothing to send.
            "results": values if any(value is not None for value in values) else None,
            "worker_id": self.id,
        }

    async def _flush_and_claim(self, limit: int | None) -> list[ClaimedJob] | None:
        """Write buffered outcomes and, given a limit, claim up to that many jobs, in one round trip.

        Returns the claimed jobs ([] without a limit), or None when nothing could be claimed: the database was
        unreachable, or an outcome it refused was written on its own.
        """
        try:
            async with self._round_trip() as conn:
                results, self._results = self._results, _Results()
                try:
                    if limit is not None and not results.failed:
                        # The common case: starts, acks (if any) and the claim as one statement. It costs a
                        # busy worker less than a pipeline of two (measured: about 15% more jobs/s in a drain).
                        cursor = await conn.execute(*self._claim_params(limit, results))
                        rows = await cursor.fetchall()
                        self.stats["completed"] += len(results.completed)
                        return [ClaimedJob(*row) for row in rows]
                    async with conn.pipeline():
                        await self._write_results(conn, results)
                        claim = self._claim_params(limit, _Results()) if limit is not None else None
                        cursor = await conn.execute(*claim) if claim else None
                    return [ClaimedJob(*row) for row in await cursor.fetchall()] if cursor else []
                except BaseException:
                    self._requeue_results(results)
                    raise
        except psycopg.OperationalError as exc:
            await self._lost_connection(exc)
            return None
        except TRANSIENT_ERRORS as exc:
            log.info("writing outcomes: %s; trying again", first_line(exc))
            return None
        except psycopg.Error as exc:
            if not self._results:
                raise  # the claim itself fails, not an outcome: nothing to retry it with
            # Nothing of the statement was written. One outcome the database refuses (a value too big for it,
            # say) must cost only its own job: write them one by one, failing the ones refused.
            log.warning("writing outcomes failed (%s); writing them one by one", first_line(exc))
            await self._write_one_by_one()
            return None

    async def _flush(self) -> None:
        if self._results:
            await self._flush_and_claim(None)

    def _requeue_results(self, results: _Results) -> None:
        # Kept for the next attempt: an outcome is only forgotten once it is written.
        results.started.update(self._results.started)
        results.completed.extend(self._results.completed)
        results.failed.extend(self._results.failed)
        self._results = results

    async def _write_results(self, conn: psycopg.AsyncConnection[Any], results: _Results) -> None:
        if results.started or results.completed:
            await conn.execute(QUERIES["record_outcomes"], self._outcome_params(results))
            self.stats["completed"] += len(results.completed)
        if results.failed:
            failed = results.failed
            cursor = await conn.execute(
                QUERIES["fail_jobs"],
                {
                    "ids": [f.id for f in failed],
                    "attempts": [f.attempt for f in failed],
                    "retry": [f.retry for f in failed],
                    "delays": [f.delay for f in failed],
                    "errors": [f.error for f in failed],
                    "tracebacks": [f.traceback for f in failed],
                    "worker_id": self.id,
                },
            )
            for _job_id, status, run_at in await cursor.fetchall():
                if status == "pending":
                    self.stats["retried"] += 1
                    self._note_due(float(run_at))
                else:
                    self.stats["failed"] += 1

    async def _write_one_by_one(self) -> None:
        results, self._results = self._results, _Results()
        singles = [_Results(started=dict(results.started))] if results.started else []
        singles += [_Results(completed=[done]) for done in results.completed]
        singles += [_Results(failed=[failed]) for failed in results.failed]
        for single in singles:
            try:
                async with self._round_trip() as conn:
                    await self._write_results(conn, single)
            except psycopg.OperationalError:
                self._requeue_results(single)  # written with the next flush, after the reconnect
            except psycopg.Error as exc:
                refused = _refused(single, f"outcome could not be stored: {first_line(exc)}")
                if refused is None:
                    log.error("could not record job starts (%s)", first_line(exc))
                    continue
                log.warning("job %d attempt %d: %s", refused.id, refused.attempt, refused.error)
                try:
                    async with self._round_trip() as conn:
                        await self._write_results(conn, _Results(failed=[refused]))
                except psycopg.Error as again:
                    log.error("job %d: could not record its failure either (%s)", refused.id, first_line(again))

    async def _refresh_next_due(self) -> None:
        try:
            rows = await self.execute(QUERIES["next_run_at"], {"queues": self.settings.queues})
        except psycopg.OperationalError as exc:
            await self._lost_connection(exc)
            return
        run_at = rows[0][0] if rows else None
        self._next_due = None
        if run_at is not None:
            self._note_due(float(run_at))

    def _note_due(self, run_at: float) -> None:
        if self._next_due is None or run_at < self._next_due:
            self._next_due = run_at

    async def _rescue_for_burst(self) -> bool:
        """Rescue expired leases now; True when that made jobs runnable."""
        try:
            return await self._maintenance.rescue_lost_jobs() > 0
        except psycopg.OperationalError as exc:
            await self._lost_connection(exc)
            return True  # could not tell: claim once more

    async def execute(self, query: LiteralString, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """One statement on the main connection (used by housekeeping and the scheduler)."""
        async with self._round_trip() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall() if cursor.description else []

    async def execute_count(self, query: LiteralString, params: dict[str, Any] | None = None) -> int:
        """One statement on the main connection; the number of rows it changed."""
        async with self._round_trip() as conn:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

    # -- connections ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _round_trip(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The main connection for one exchange, under the lock.

        A failed connection is dropped here, under the lock, so that one caller reconnects for all (the
        claim loop and housekeeping never race to replace it). No answer within a lease counts as lost
        too: a black-holed network path that TCP keepalives cannot see would otherwise hang the worker,
        and past a lease our running jobs are being rescued elsewhere anyway.
        """
        async with self._db_lock:
            conn = await self._connection()
            try:
                async with asyncio.timeout(self.settings.lease):
                    yield conn
            except TimeoutError:
                await self._drop_main(conn)
                raise psycopg.OperationalError(f"no answer from the database for {self.settings.lease:g} s") from None
            except psycopg.OperationalError:
                await self._drop_main(conn)
                raise

    async def _drop_main(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._main is conn:
            self._main = None
        with contextlib.suppress(Exception):
            await conn.close()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._main is None or self._main.closed:
            await self._connect_main()
        assert self._main is not None
        return self._main

    async def _connect_main(self, *, first: bool = False) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, prepare_threshold=1, **connections.connect_kwargs(self.dsn, "pgqueue worker")
        )
        try:
            if await connections.behind_pooler_async(conn):
                # Transaction pooling may run each statement on another server connection, where our
                # prepared statements do not exist.
                conn.prepare_threshold = None
                if first:
                    log.info("connection pooler detected: prepared statements off")
            if first:
                await conn.execute("SELECT 1 FROM pgqueue.jobs LIMIT 0")
            else:
                await self._release_unknown_jobs(conn)
        except psycopg.errors.UndefinedTable:
            await conn.close()
            raise SchemaMissingError() from None
        except BaseException:
            await conn.close()
            raise
        self._main = conn
        self._connection_back()

    async def _release_unknown_jobs(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """After a reconnect: the server may have committed a claim whose answer was lost with the connection.
        Jobs the table says we hold but we do not know of go back to pending now, their attempt not charged,
        instead of waiting out their lease and being charged as lost."""
        held = {job_id for job_id, _attempt in self._held_attempts()} | set(self._results.ids())
        cursor = await conn.execute(QUERIES["release_unknown_jobs"], {"worker_id": self.id, "held": _int_array(held)})
        released = sum(count for _queue, count, _sent in await cursor.fetchall())
        if released:
            log.warning("released %d job(s) claimed by a statement whose answer was lost in the outage", released)

    def _connection_lost(self, exc: BaseException) -> None:
        """One warning per outage, whichever connection notices first; the rest is debug detail."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("database connection lost (%s); reconnecting with backoff", first_line(exc))
        else:
            log.debug("database still unreachable (%s)", first_line(exc))

    def _connection_back(self) -> None:
        if self._outage_since is not None:
            log.info("database connection re-established after %.1f s", time.monotonic() - self._outage_since)
            self._outage_since = None

    def _past_stop_deadline(self) -> bool:
        return self._force_stop or (self._stop_deadline is not None and time.time() >= self._stop_deadline)

    async def _lost_connection(self, exc: BaseException) -> None:
        """Report the outage, then reconnect with backoff (the round trip that failed dropped the connection).

        A stopping worker waits for the database no longer than its grace period: what it could not write is
        then left to the rescue, as for a worker that was killed."""
        self._connection_lost(exc)
        delay = 0.5
        while not self._stopping or self.running or self._results:
            if self._past_stop_deadline():
                return
            try:
                async with self._db_lock:
                    await self._connection()
                self._claim_wanted = True
                return
            except psycopg.OperationalError as again:
                self._connection_lost(again)
                # Woken early by a stop request (or a finished job), not only by the backoff timer.
                pause = delay * random.uniform(0.8, 1.2)
                if self._stop_deadline is not None:
                    pause = min(pause, max(0.0, self._stop_deadline - time.time()))
                await self._sleep_until_woken(pause)
                delay = min(delay * 2, self.settings.reconnect_max_delay)

    async def _listen(self) -> None:
        dsn = self.settings.listen_dsn or self.dsn
        delay = 0.5
        while True:
            try:
                kwargs = connections.connect_kwargs(dsn, "pgqueue listen")
                conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **kwargs)
            except psycopg.OperationalError as exc:
                self._connection_lost(exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.settings.reconnect_max_delay)
                continue
            delay = 0.5
            try:
                async with conn:
                    async with self._listen_answer():  # the path can go silent while we set up, too
                        pooled = await connections.behind_pooler_async(conn)
                        if not pooled:
                            await conn.execute(f"LISTEN {JOBS_CHANNEL}")
                            await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                    if pooled:
                        log.warning(
                            "LISTEN cannot work through a connection pooler: polling every %g s instead "
                            "(set --listen-dsn / PGQUEUE_LISTEN_DSN to a direct connection for instant wake-ups)",
                            self.settings.poll_interval,
                        )
                        return
                    self._connection_back()
                    self._due_unknown = True  # catch up with anything inserted while we were not listening
                    self.wake()
                    await self._receive(conn)
            except psycopg.OperationalError as exc:
                # The main connection is probably gone too: a claim now finds out, rather than the next poll.
                self.wake()
                self._connection_lost(exc)
            except Exception:  # never let the listener die silently: polling alone would be slow
                log.exception("LISTEN failed; reconnecting")
                await asyncio.sleep(delay)

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # A silently dead connection delivers nothing; a cheap probe each poll interval finds it out.
        while True:
            async for notice in conn.notifies(timeout=self.settings.poll_interval):
                self._on_notification(notice.channel, notice.payload)
            async with self._listen_answer():
                await conn.execute("SELECT 1")

    @contextlib.asynccontextmanager
    async def _listen_answer(self) -> AsyncIterator[None]:
        """No answer on the LISTEN connection within min(10 s, lease) counts as a lost connection: a black-holed
        path that TCP keepalives cannot see would otherwise leave the worker deaf for good."""
        timeout = min(10.0, self.settings.lease)
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError:
            raise psycopg.OperationalError(f"LISTEN connection: no answer within {timeout:g} s") from None

    def _on_notification(self, channel: str, payload: str) -> None:
        """Anyone who can connect can NOTIFY: a notification is only a hint to look at the table."""
        if channel == CANCEL_CHANNEL:
            # Which jobs are cancelled is for the table to say: renew now, and the renewal's answer stops any
            # attempt that is no longer ours. A forged message costs one statement.
            if self._leases is not None:
                self._leases.renew_now()
            return
        wanted = _jobs_message(payload)
        if wanted is None:
            self._log_garbage(channel, payload)
            return
        queue, run_at = wanted
        queues = self.settings.queues
        if queues and queue not in queues:
            return
        if run_at <= time.time() + 0.001:
            self.wake()
        else:
            self._note_due(run_at)
            self.wake(claim=False)

    def _log_garbage(self, channel: str, payload: str) -> None:
        now = time.monotonic()
        if now - self._garbage_logged_at >= GARBAGE_LOG_EVERY:
            self._garbage_logged_at = now
            log.warning("ignored a malformed notification on %s: %s", channel, _shown(payload))
        else:
            log.debug("ignored a malformed notification on %s: %s", channel, _shown(payload))

    def stop_job(self, job: RunningJob, reason: str) -> None:
        """The attempt is no longer ours (cancelled, rescued elsewhere, superseded): stop it and record nothing."""
        if job.stopped:
            return
        job.stopped = True
        job.context.cancel()
        if job.handle is not None:
            job.handle.cancel()
        log.info("job %d %s attempt %d stopped: %s", job.id, _shown(job.task_name), job.attempt, reason)

    # -- leases ---------------------------------------------------------------------------------

    def _held_attempts(self) -> list[Attempt]:
        """The attempts whose leases we keep: running and claimed ahead. Called from the lease thread: list()
        copies each container in one step, never seeing it half-changed."""
        running = [job.key for job in list(self.running.values()) if not job.stopped]
        return running + [claimed.key for claimed in list(self.prefetched)]

    def _on_attempts_lost(self, lost: list[Attempt]) -> None:
        """The lease renewal did not find these attempts ours any more (cancelled, rescued, claimed again)."""
        reason = "no longer held by this worker (cancelled, rescued or claimed again)"
        for job_id, attempt in lost:
            job = self.running.get(job_id)
            if job is not None and job.attempt == attempt:
                self.stop_job(job, reason)
                self._results.started.pop(job.key, None)
        self._drop_prefetched(set(lost), reason)

    def _async_jobs_running(self) -> str:
        """For the stall warning (called from the lease thread): one of these holds the event loop."""
        names = [
            f"job {job.id} {_shown(job.task_name)} (attempt {job.attempt})"
            for job in list(self.running.values())
            if (task := self.queue.tasks.get(job.task_name)) is not None and task.is_async
        ]
        return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")

    # -- housekeeping ---------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        interval = self.settings.maintenance_interval or 15.0
        next_maintenance = time.time() + random.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.05, next_maintenance - time.time()))
            next_maintenance = time.time() + interval * random.uniform(0.9, 1.1)
            try:
                await self._maintenance.run_once()
            except psycopg.OperationalError as exc:
                self._connection_lost(exc)  # the next round trip reconnects
            except Exception:
                log.exception("housekeeping failed; will try again")

    def _drop_prefetched(self, attempts: set[Attempt], reason: str) -> None:
        """Forget claimed jobs that have not started and are no longer ours: they must not run here."""
        dropped = [claimed for claimed in self.prefetched if claimed.key in attempts]
        if not dropped:
            return
        self.prefetched = collections.deque(claimed for claimed in self.prefetched if claimed.key not in attempts)
        for claimed in dropped:
            log.info(
                "job %d %s attempt %d dropped before it started: %s",
                claimed.id,
                _shown(claimed.task),
                claimed.attempt,
                reason,
            )

    # -- stopping -------------------------------------------------------------------------------

    async def _drain_on_stop(self) -> None:
        await self._release(list(self.prefetched), None, "prefetched")
        self.prefetched.clear()
        deadline = self._stop_deadline or time.time()
        while self.running and time.time() < deadline and not self._force_stop:
            await self._sleep_until_woken(min(0.2, max(0.0, deadline - time.time())))
            await self._flush()
        await self._flush()
        if self.running:
            await self._hand_back()
        if self._results:
            log.warning(
                "could not write %d outcome(s): the database is unreachable; their jobs are rescued once their "
                "leases expire",
                len(self._results.completed) + len(self._results.failed),
            )

    async def _release(self, jobs: list[Any], reason: str | None, what: str) -> None:
        """Jobs (claimed ahead, or cut short) go back to pending at once, their attempt not counted."""
        if not jobs:
            return
        params = {
            "ids": [job.id for job in jobs],
            "attempts": [job.attempt for job in jobs],
            "worker_id": self.id,
            "reason": reason,
        }
        try:
            released = await self.execute(QUERIES["release_jobs"], params)
        except psycopg.OperationalError as exc:
            log.warning(
                "could not hand back %d %s job(s) (%s); they run again once their lease expires",
                len(jobs),
                what,
                first_line(exc),
            )
            return
        log.info("handed %d %s job(s) back to the queue", sum(count for _queue, count, _sent in released), what)

    async def _hand_back(self) -> None:
        """Past the grace period: unfinished jobs go back to pending now; the interruption is recorded in their
        error history but the attempt is not counted (a deploy must not use up a job's attempts)."""
        jobs = [job for job in self.running.values() if not job.stopped]
        for job in jobs:
            self.stop_job(job, "handed back: worker stopping")
            self._results.started.pop(job.key, None)
        await self._flush()
        await self._release(jobs, HANDED_BACK, "unfinished")


_ATTEMPTS_USED_UP = (
    "attempt {job.attempt} is past max_attempts {job.max_attempts}: the job was made runnable with its attempts "
    "used up (run `pgqueue retry-failed`, which resets them, to run it again)"
)


def _jobs_message(payload: str) -> tuple[str, float] | None:
    """(queue, run_at) from a notification on the jobs channel, or None for anything else."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    queue, run_at = message.get("queue"), message.get("run_at", 0)
    if not isinstance(queue, str) or isinstance(run_at, bool) or not isinstance(run_at, int | float):
        return None
    run_at = float(run_at)
    return (queue, run_at) if math.isfinite(run_at) else None


def _refused(single: _Results, error: str) -> Failure | None:
    """The one outcome in `single` the database refused, as a permanent failure of its job."""
    if single.completed:
        job_id, attempt, _value = single.completed[0]
        return Failure(job_id, attempt, False, timedelta(0), error, None)
    if single.failed:
        refused = single.failed[0]
        return Failure(refused.id, refused.attempt, False, timedelta(0), clip(error, 2000), None)
    return None


def _shown(text: str) -> str:
    """Text from a job row as it may appear in a log line: escaped, and not at any length."""
    return printable(clip(text, 200))


def _int_array(values: Any) -> str:
    """An array literal for `::bigint[]`/`::int[]`: one string to send instead of adapting each element (acks
    of a drain carry thousands of ids a second)."""
    return "{" + ",".join(map(str, values)) + "}"
