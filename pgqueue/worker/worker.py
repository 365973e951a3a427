"""The worker: wires its parts together, runs until stopped, hands back what it cannot finish.

One asyncio loop per process with three connections: the main one (claims, acks, maintenance, the scheduler;
one statement at a time: connection.py), LISTEN (listener.py) and lease renewal (its own thread: leases.py).
The claim loop is producer.py, the running jobs slots.py, the outcome buffer completer.py; sync handlers run
on daemon threads (executor.py). docs/architecture.md draws how they talk.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
import uuid
from typing import Any

import psycopg

from pgqueue.cron.scheduler import Scheduler
from pgqueue.errors import PgQueueError
from pgqueue.queue.limits import declared_columns
from pgqueue.queue.queue import Queue
from pgqueue.settings import WorkerSettings
from pgqueue.store import statements
from pgqueue.store.rows import Attempt, ClaimedJob
from pgqueue.store.run import fetch_async
from pgqueue.text import first_line, shown
from pgqueue.worker.completer import Completer
from pgqueue.worker.connection import MainConnection, Outages
from pgqueue.worker.events import Observer, Observers
from pgqueue.worker.executor import HandlerThreads
from pgqueue.worker.leases import LeaseKeeper
from pgqueue.worker.listener import Listener
from pgqueue.worker.maintenance import Maintenance
from pgqueue.worker.producer import Producer
from pgqueue.worker.registry import Registry
from pgqueue.worker.slots import RunningJob, Slots
from pgqueue.worker.stopping import Stopping

log = logging.getLogger("pgqueue.worker")

HANDED_BACK = "interrupted: worker stopped before the job finished (attempt not counted)"
NOT_OURS = "no longer held by this worker (cancelled, rescued or claimed again)"


class Worker:
    def __init__(
        self,
        queue: Queue,
        settings: WorkerSettings | None = None,
        *,
        dsn: str | None = None,
        observers: list[Observer] | None = None,
    ) -> None:
        self.queue = queue
        self.settings = settings or WorkerSettings()
        self.dsn = dsn or queue.dsn
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        settings = self.settings
        # Metrics, structured logs and tracing see the jobs through these alone (events.py); each optional
        # part is imported only when asked for, so the base install never imports its library.
        self.observers = Observers(observers)
        if settings.log_format == "json":
            from pgqueue.worker.logs import EventLog

            self.observers.add(EventLog())
        self._metrics: Any = None
        if settings.tracing:
            try:
                from pgqueue.worker.tracing import Tracing
            except ImportError as exc:
                raise PgQueueError(
                    f"--tracing needs the tracing extra (pip install 'pgqueue[tracing]'): {exc}"
                ) from None
            self.observers.add(Tracing())
        self._stopping = Stopping(settings.grace_period)
        self._outages = Outages()
        self.connection = MainConnection(
            self.dsn,
            lease=settings.lease,
            reconnect_max_delay=settings.reconnect_max_delay,
            outages=self._outages,
            after_reconnect=self._release_unknown_jobs,
        )
        self.completer = Completer(
            self.connection,
            worker_id=self.id,
            lease=settings.lease,
            queues=settings.queues,
            on_lost=self._reconnect,
            on_retry_due=lambda run_at: self.producer.note_due(run_at),
        )
        entry = statements.WorkerEntry(
            worker_id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=settings.queues,
            concurrency=settings.concurrency,
            heartbeat_interval=settings.maintenance_interval or 15.0,
        )
        self._registry = Registry(self.connection, entry, busy=lambda: len(self._slots.running))
        self._maintenance = Maintenance(
            self.connection,
            retention=settings.retention,
            registry=self._registry,
            dsn=self.dsn,
            observers=self.observers,
            parked_held=lambda: self.producer.take_parked_held(),
            worker_id=self.id,
        )
        self._slots = Slots(
            queue.tasks,
            self.completer,
            concurrency=settings.concurrency,
            on_free=lambda: self.producer.on_slot_free(),
            observers=self.observers,
            worker_id=self.id,
        )
        if settings.metrics_port is not None:
            try:
                from pgqueue.worker.metrics import Metrics
            except ImportError as exc:
                raise PgQueueError(
                    f"--metrics-port needs the metrics extra (pip install 'pgqueue[metrics]'): {exc}"
                ) from None

            self._metrics = Metrics(
                queue,
                # Direct to PostgreSQL when the worker's DSN goes through a transaction pooler: the reporter's
                # advisory lock lives as long as its session.
                settings.listen_dsn or self.dsn,
                port=settings.metrics_port,
                refresh=settings.metrics_interval,
                worker_id=self.id,
                concurrency=settings.concurrency,
                busy=lambda: len(self._slots.running),
                queues=settings.queues,
            )
            self.observers.add(self._metrics)
        self.producer = Producer(
            settings,
            self._slots,
            self.completer,
            self.connection,
            self._stopping,
            on_lost=self._reconnect,
            rescue=self._maintenance.rescue_and_wake,
        )
        self._leases: LeaseKeeper | None = None

    # -- public ---------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        return self.completer.stats

    @property
    def prefetched(self) -> collections.deque[ClaimedJob]:
        """The jobs claimed ahead of a free slot."""
        return self.producer.prefetched

    def run(self) -> None:
        """Run until stopped by SIGINT/SIGTERM (or, with burst, until nothing is runnable)."""
        asyncio.run(self.run_async(install_signal_handlers=True))

    def stop(self) -> None:
        """Stop claiming; running jobs get the grace period. A second call hands them back at once."""
        self._stopping.request()
        self.producer.wake(claim=False)

    def wake(self, *, claim: bool = True) -> None:
        """Look at the table now (as a notification would make it)."""
        self.producer.wake(claim=claim)

    async def run_async(self, *, install_signal_handlers: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if self._metrics is not None:
            self._metrics.start()  # first: a port in use stops the worker before it claims anything
        threads = self._slots.threads = HandlerThreads(loop)
        if install_signal_handlers:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal, signum)
        await self.connection.open()
        await self._registry.register()
        await self._sync_limits()
        self._leases = LeaseKeeper(
            self.dsn,
            self.id,
            self.settings.lease,
            loop,
            held=self._held_attempts,
            on_lost=self._on_attempts_lost,
            stalled_jobs=self._slots.async_jobs,
        )
        self._leases.start()
        backgrounds = [
            asyncio.create_task(self._listener().run(), name="pgqueue-listen"),
            asyncio.create_task(self._housekeeping(), name="pgqueue-housekeeping"),
        ]
        if self.queue.schedules:
            # Every worker runs the scheduler: each fire is claimed in the database, so no leader is needed.
            scheduler = Scheduler(self.queue.schedules, self.connection, retention=self.settings.retention)
            backgrounds.append(asyncio.create_task(scheduler.run(), name="pgqueue-scheduler"))
        log.info(
            "worker %s started: queues=%s concurrency=%d",
            self.id,
            ",".join(map(shown, self.settings.queues)) if self.settings.queues else "*",
            self.settings.concurrency,
        )
        try:
            await self.producer.run()
            await self._drain_on_stop()
        finally:
            for background in backgrounds:
                background.cancel()
            await asyncio.gather(*backgrounds, return_exceptions=True)
            self._leases.stop()
            threads.shutdown()
            await self._registry.stopped()
            self.observers.close()
            await self.connection.close()
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
        if self._stopping.requested:
            log.warning("%s again: handing running jobs back now", name)
        else:
            running = len(self._slots.running)
            log.info("%s: no new jobs; %d running get %.0f s to finish", name, running, self.settings.grace_period)
        self.stop()

    # -- wiring -----------------------------------------------------------------------------------

    def _listener(self) -> Listener:
        producer = self.producer
        return Listener(
            self.settings.listen_dsn or self.dsn,
            poll_interval=self.settings.poll_interval,
            lease=self.settings.lease,
            reconnect_max_delay=self.settings.reconnect_max_delay,
            outages=self._outages,
            on_jobs=producer.on_jobs,
            # Which jobs are cancelled is for the table to say: renew now, and the renewal's answer stops any
            # attempt that is no longer ours. A forged message costs one statement.
            on_cancel=lambda: self._leases.renew_now() if self._leases is not None else None,
            on_listening=producer.on_listening,
            on_lost=producer.wake,
        )

    async def _sync_limits(self) -> None:
        """Register the limits the app declares (and drop those its tasks no longer declare); the held jobs of a
        limit that changed go back to pending and those waiting for its rate are due now, for the claim to decide
        on under the new one."""
        declared = self.queue.limits
        changed = await self.connection.fetch(
            statements.sync_limits(declared_columns(declared), sorted(self.queue.tasks))
        )
        names = sorted({row.name for row in changed})
        if names:
            await self.connection.fetch(statements.wake_held(names=names, per_key=None))
            await self.connection.fetch(statements.release_deferred(names))
            log.info("limits registered or changed: %s", ", ".join(map(shown, names)))

    async def _housekeeping(self) -> None:
        await self._maintenance.run(self.settings.maintenance_interval or 15.0, self._outages.lost)

    async def _reconnect(self, exc: BaseException) -> None:
        """The main connection failed: reconnect with backoff, woken early by a stop request or a finished job.

        A stopping worker waits for the database no longer than its grace period: what it could not write is
        then left to the rescue, as for a worker that was killed."""

        def keep_trying() -> bool:
            busy = not self._stopping.requested or bool(self._slots.running) or bool(self.completer)
            return busy and not self._stopping.past_deadline()

        async def pause(seconds: float) -> None:
            await self.producer.sleep_until_woken(self._stopping.clip(seconds))

        if await self.connection.reconnect(exc, keep_trying=keep_trying, pause=pause):
            self.producer.claim_soon()

    async def _release_unknown_jobs(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """After a reconnect: the server may have committed a claim whose answer was lost with the connection.
        Jobs the table says we hold but we do not know of go back to pending now, their attempt not charged,
        instead of waiting out their lease and being charged as lost."""
        held = {job_id for job_id, _attempt in self._held_attempts()} | set(self.completer.pending.ids())
        released = await fetch_async(conn, statements.release_unknown_jobs(worker_id=self.id, held=held))
        count = sum(row.released for row in released)
        if count:
            log.warning("released %d job(s) claimed by a statement whose answer was lost in the outage", count)

    # -- leases ---------------------------------------------------------------------------------

    def _held_attempts(self) -> list[Attempt]:
        """The attempts whose leases we keep: running and claimed ahead (called from the lease thread)."""
        return self._slots.held() + self.producer.held()

    def _on_attempts_lost(self, lost: list[Attempt]) -> None:
        """The lease renewal did not find these attempts ours any more (cancelled, rescued, claimed again)."""
        self._slots.stop_lost(lost, NOT_OURS)
        self.producer.drop_prefetched(set(lost), NOT_OURS)

    # -- stopping -------------------------------------------------------------------------------

    async def _drain_on_stop(self) -> None:
        prefetched = self.producer.take_prefetched()
        await self._release([claimed.key for claimed in prefetched], None, "prefetched")
        # Without a deadline (a burst worker done by itself) nothing is running: there is nothing to wait for.
        while self._slots.running and self._stopping.deadline is not None and not self._stopping.past_deadline():
            await self.producer.sleep_until_woken(self._stopping.clip(0.2))
            await self.completer.flush()
        await self.completer.flush()
        if self._slots.running:
            await self._hand_back()
        await self._tell_slot_queues()
        if self.completer:
            log.warning(
                "could not write %d outcome(s): the database is unreachable; their jobs are rescued once their "
                "leases expire",
                len(self.completer.pending.completed) + len(self.completer.pending.failed),
            )

    async def _tell_slot_queues(self) -> None:
        """Our claims that took a slot of a limit left the jobs of it they could not start pending, for our next
        claim, which will not come: the queues' idle workers are told (as a freed slot's held job would be)."""
        for queue_name in sorted(self.producer.slot_queues):
            try:
                await self.connection.count(statements.notify_queue(queue_name))
            except psycopg.OperationalError:
                return  # their polls find the jobs
            except psycopg.Error as exc:  # a hand-written queue name too long for a notification, say
                log.warning("could not notify queue %s: %s", shown(queue_name), first_line(exc))

    async def _release(self, attempts: list[Attempt], reason: str | None, what: str) -> None:
        """Jobs (claimed ahead, or cut short) go back to pending at once, their attempt not counted."""
        if not attempts:
            return
        try:
            released = await self.connection.fetch(
                statements.release_jobs(worker_id=self.id, attempts=attempts, reason=reason)
            )
        except psycopg.OperationalError as exc:
            log.warning(
                "could not hand back %d %s job(s) (%s); they run again once their lease expires",
                len(attempts),
                what,
                first_line(exc),
            )
            return
        log.info("handed %d %s job(s) back to the queue", sum(row.released for row in released), what)

    async def _hand_back(self) -> None:
        """Past the grace period: unfinished jobs go back to pending now; the interruption is recorded in their
        error history but the attempt is not counted (a deploy must not use up a job's attempts)."""
        jobs: list[RunningJob] = self._slots.stop_all("handed back: worker stopping")
        await self.completer.flush()
        await self._release([job.key for job in jobs], HANDED_BACK, "unfinished")
