"""Prometheus metrics of one worker process (`pgqueue work --metrics-port`; the `metrics` extra).

Job counters and histograms come from the worker's job events (events.py), counted as this process decides
each outcome. Busy slots are read when scraped. Queue depth and the oldest wait are facts of the cluster, not of
a worker: exactly one worker at a time reads them (the one holding a session advisory lock on a small connection
of its own), every metrics_interval seconds, whatever the number of workers or scrapes; the others export none.
That worker exports `pgqueue_depth_reporter 1`. If it dies its connection closes, the lock is free, and another
worker takes over at its next refresh. The statements are in pgqueue/sql/metrics.sql.

Labels are bounded: a task label is a task this worker declares (any other name, from a row anyone can insert,
counts as "(unknown)"), and a queue label is a queue its tasks, its schedules or its --queue options name (any
other is "(other)"). So the number of series is fixed by the code, not by the rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pgqueue.errors import PgQueueError
from pgqueue.queue.queue import Queue
from pgqueue.store import connections, statements
from pgqueue.store.rows import QueueDepth, ScheduleTimes
from pgqueue.store.run import fetch
from pgqueue.text import clip, first_line, printable
from pgqueue.worker.events import Event, JobEvent, Observer

log = logging.getLogger("pgqueue.metrics")

UNKNOWN_TASK = "(unknown)"
OTHER_QUEUE = "(other)"
LABEL_LIMIT = 100  # characters of a declared name used as a label
DEPTH_QUEUES = 1000  # queues read per refresh, the most loaded first
# Seconds: jobs from a millisecond to an hour (run time), and waits up to a day.
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class MetricsPortError(PgQueueError):
    """The metrics port cannot be served (in use, or not allowed)."""


def label(name: str) -> str:
    """A declared name as a label value: printable, bounded (the exposition format escapes the rest)."""
    return printable(clip(name, LABEL_LIMIT))


class Metrics(Observer):
    def __init__(
        self,
        queue: Queue,
        dsn: str,
        *,
        port: int,
        refresh: float,
        worker_id: str,
        concurrency: int,
        busy: Callable[[], int],
        queues: list[str] | None = None,
        addr: str = "0.0.0.0",
    ) -> None:
        self.port = port
        self._addr = addr
        self._tasks = {name: label(name) for name in queue.tasks}
        declared = {task.queue_name for task in queue.tasks.values()} | {s.queue for s in queue.schedules}
        self._queues = {name: label(name) for name in declared | set(queues or []) | {"default"}}
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        names = ("queue", "task")
        r = self.registry
        self._started = Counter("pgqueue_jobs_started", "Attempts started by this worker.", names, registry=r)
        self._completed = Counter("pgqueue_jobs_completed", "Attempts that completed.", names, registry=r)
        self._retried = Counter("pgqueue_jobs_retried", "Attempts that failed; the job runs again.", names, registry=r)
        self._failed = Counter("pgqueue_jobs_failed", "Attempts that failed for good.", names, registry=r)
        self._cancelled = Counter(
            "pgqueue_jobs_stopped", "Attempts stopped unfinished (cancelled, handed back).", names, registry=r
        )
        self._rescued = Counter("pgqueue_jobs_rescued", "Lost jobs this worker rescued.", names, registry=r)
        self._run = Histogram(
            "pgqueue_job_run_seconds", "Handler run time per attempt.", names, buckets=RUN_BUCKETS, registry=r
        )
        self._wait = Histogram(
            "pgqueue_job_wait_seconds", "Time runnable before the claim.", names, buckets=WAIT_BUCKETS, registry=r
        )
        Gauge("pgqueue_worker_busy_slots", "Jobs running now.", registry=r).set_function(lambda: float(busy()))
        Gauge("pgqueue_worker_slots", "Jobs this process runs at once.", registry=r).set(concurrency)
        info = Gauge("pgqueue_worker_info", "This worker's id.", ["worker"], registry=r)
        info.labels(label(worker_id)).set(1)
        self._depth = DepthReporter(dsn, refresh, self._queue_label, [s.name for s in queue.schedules])
        r.register(self._depth)
        # Children of the labelled metrics, per (event, queue, task): labels() takes a lock and builds a key on
        # every call; a dict lookup per event is what the hot path can afford.
        self._children: dict[tuple[Event, str, str], Callable[[JobEvent], None]] = {}
        self._server: Any = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._server, _thread = start_http_server(self.port, self._addr, registry=self.registry)
        except OSError as exc:
            reason = exc.strerror or first_line(exc)
            raise MetricsPortError(f"cannot serve metrics on port {self.port}: {reason}") from None
        self._depth.start()
        log.info("metrics on http://%s:%d/metrics", self._addr, self.port)

    def close(self) -> None:
        self._depth.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- events ---------------------------------------------------------------------------------------------

    def job_event(self, event: JobEvent) -> None:
        key = (event.event, event.queue, event.task)
        record = self._children.get(key)
        if record is None:
            record = self._children[key] = self._recorder(event)
        record(event)

    def _recorder(self, event: JobEvent) -> Callable[[JobEvent], None]:
        labels = (self._queue_label(event.queue), self._tasks.get(event.task, UNKNOWN_TASK))
        kind = event.event
        if kind is Event.STARTED:
            started, wait = self._started.labels(*labels), self._wait.labels(*labels)

            def on_start(e: JobEvent) -> None:
                started.inc()
                if e.waited is not None:
                    wait.observe(max(0.0, e.waited))

            return on_start
        counter = {
            Event.COMPLETED: self._completed,
            Event.RETRIED: self._retried,
            Event.FAILED: self._failed,
            Event.CANCELLED: self._cancelled,
            Event.HANDED_BACK: self._cancelled,
            Event.RESCUED: self._rescued,
        }[kind].labels(*labels)
        run = self._run.labels(*labels)

        def on_end(e: JobEvent) -> None:
            counter.inc()
            if e.duration is not None:
                run.observe(e.duration)

        return on_end

    def _queue_label(self, name: str) -> str:
        return self._queues.get(name, OTHER_QUEUE)


class DepthReporter(Collector):
    """The cluster's queue depth, read by whichever worker holds the reporter lock (see the module's docstring).

    Runs on its own thread and connection: a slow count never holds the worker's loop or its connection."""

    def __init__(self, dsn: str, interval: float, queue_label: Callable[[str], str], schedules: list[str]) -> None:
        self._dsn = dsn
        self._schedules = schedules
        self._interval = interval
        self._queue_label = queue_label
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgqueue-metrics", daemon=True)
        self._conn: psycopg.Connection[Any] | None = None
        self.reporter = False
        # Swapped whole by the thread, read whole by a scrape: no lock needed.
        self._snapshot: tuple[list[QueueDepth], list[ScheduleTimes], float] = ([], [], 0.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.refresh()
            self._stopped.wait(self._interval)
        self._close()

    def refresh(self) -> None:
        try:
            conn = self._connection()
            if not self.reporter:
                self.reporter = fetch(conn, statements.metrics_try_reporter_lock())[0].locked
                if not self.reporter:
                    # Another worker reports: hold no idle connection until the next try (a fleet of workers
                    # would otherwise keep one each for nothing).
                    self._close()
                    return
            if self.reporter:
                depth = fetch(conn, statements.metrics_queue_depth(limit=DEPTH_QUEUES))
                schedules = fetch(conn, statements.metrics_schedules(names=self._schedules)) if self._schedules else []
                self._snapshot = (depth, schedules, time.time())
        except psycopg.Error as exc:
            # The lock went with the connection: stop reporting (numbers that are not refreshed would lie).
            if self.reporter:
                log.warning("queue depth not refreshed: %s", first_line(exc))
            self.reporter = False
            self._snapshot = ([], [], 0.0)
            self._close()
        except Exception:  # a bug here must not end the thread: the next round tries again
            log.exception("queue depth not refreshed")
            self.reporter = False
            self._snapshot = ([], [], 0.0)
            self._close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self.reporter = False
            self._conn = psycopg.connect(
                self._dsn, autocommit=True, **connections.connect_kwargs(self._dsn, "pgqueue metrics")
            )
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on the snapshot; none are registered ahead

    def collect(self) -> Iterator[Metric]:
        depth, schedules, at = self._snapshot
        reporter = GaugeMetricFamily(
            "pgqueue_depth_reporter", "1 in the one worker that exports queue depth, 0 in the others."
        )
        reporter.add_metric([], 1.0 if self.reporter and at else 0.0)
        yield reporter
        if not at:
            return
        jobs = GaugeMetricFamily("pgqueue_queue_jobs", "Jobs per queue and state.", labels=["queue", "state"])
        oldest = GaugeMetricFamily(
            "pgqueue_queue_oldest_wait_seconds", "How long the oldest runnable job has waited.", labels=["queue"]
        )
        totals: dict[str, list[float]] = {}
        for row in depth:  # queues outside the declared ones add up under "(other)"
            total = totals.setdefault(self._queue_label(row.queue), [0, 0, 0, 0, 0.0])
            for i, value in enumerate((row.ready, row.scheduled, row.running, row.failed)):
                total[i] += value
            total[4] = max(total[4], row.oldest_wait)
        for name, (ready, scheduled, running, failed, wait) in sorted(totals.items()):
            for state, value in (("ready", ready), ("scheduled", scheduled), ("running", running), ("failed", failed)):
                jobs.add_metric([name, state], value)
            oldest.add_metric([name], wait)
        yield jobs
        yield oldest
        last = GaugeMetricFamily(
            "pgqueue_schedule_last_fire_timestamp_seconds", "When a schedule last fired.", labels=["schedule"]
        )
        upcoming = GaugeMetricFamily(
            "pgqueue_schedule_next_fire_timestamp_seconds", "When a schedule fires next.", labels=["schedule"]
        )
        for schedule in schedules:
            if schedule.last_fire_at is not None:
                last.add_metric([label(schedule.name)], schedule.last_fire_at)
            if schedule.next_fire_at is not None:
                upcoming.add_metric([label(schedule.name)], schedule.next_fire_at)
        yield last
        yield upcoming
        refreshed = GaugeMetricFamily("pgqueue_depth_refreshed_timestamp_seconds", "When queue depth was read.")
        refreshed.add_metric([], at)
        yield refreshed
