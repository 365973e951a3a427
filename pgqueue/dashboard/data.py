"""The dashboard's reads and actions as the pages need them (frozen dataclasses), built from the rows of
pgqueue/store/dashboard.py, which runs every statement: nothing here runs SQL.

Every function takes a connection of the store's dashboard pool; an action is one short transaction there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgqueue.dashboard.filters import Cursor, JobFilter
from pgqueue.store import dashboard as store
from pgqueue.store.dashboard import Connection

RECENT_CAP = 20_000  # finished jobs read per overview at most (the last hour's counts and chart)
WORKERS_SHOWN = 200
# A worker counts as dead once silent for DEAD_AFTER_BEATS of its heartbeat intervals (the row says how long one
# is): a beat may come 10 % late by design and wait behind a claim; three missed in a row is not a hiccup.
DEAD_AFTER_BEATS = 3
DEAD_AFTER = 60.0  # seconds, for rows that do not say their interval (written before migration 0007)
QUEUES_SHOWN = 50  # queue names per worker; dashboard.sql clips to this
NAME_CLIP = 1_000
JSON_CLIP = 100_000
TEXT_CLIP = 10_000
TRACEBACK_CLIP = 20_000
ATTEMPTS_SHOWN = 100
RELATIVES_SHOWN = 50  # parents and children listed on a job page (a fan-in of thousands shows counts, then these)
BULK_BATCH = 5_000
BULK_MAX = 100_000  # jobs one confirmed bulk action touches at most; the page says when more remain


# -- rows -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clipped:
    """Text that may have been cut: `text` is what is shown, `length` the full length in characters."""

    text: str
    length: int

    @property
    def cut(self) -> int:
        return max(0, self.length - len(self.text))


@dataclass(frozen=True)
class QueueSummary:
    name: str
    due: int = 0
    scheduled: int = 0
    running: int = 0
    failed: int = 0
    held: int = 0  # parked by a full concurrency limit
    waiting: int = 0  # waiting for their parents (workflows)
    completed_recent: int = 0
    cancelled_recent: int = 0
    failed_recent: int = 0
    oldest_due_seconds: float | None = None
    paused: bool = False


@dataclass(frozen=True)
class Minute:
    start: datetime
    completed: int
    failed: int
    complete: bool  # False: the bounded scan stopped inside or after this minute; its figures are a lower bound


@dataclass(frozen=True)
class WorkerRow:
    id: str
    host: str
    pid: int
    queues: list[str] | None  # None: all queues
    queues_total: int  # how many the row names (at most QUEUES_SHOWN are in `queues`)
    concurrency: int
    running: int
    started_at: datetime | None  # None only in a hand-written row (an infinite time)
    heartbeat_at: datetime | None
    stopped_at: datetime | None
    silent_seconds: float | None
    heartbeat_interval: float | None  # seconds between its heartbeats; None in rows of workers before 0007

    @property
    def dead_after(self) -> float:
        """Seconds of silence after which this worker counts as dead: a few of its own heartbeat intervals."""
        if self.heartbeat_interval is None:
            return DEAD_AFTER
        return DEAD_AFTER_BEATS * self.heartbeat_interval

    @property
    def state(self) -> str:
        if self.stopped_at is not None:
            return "stopped"
        if self.silent_seconds is None:
            return "dead"  # a heartbeat no clock reaches: no worker wrote it
        return "dead" if self.silent_seconds > self.dead_after else "alive"


@dataclass(frozen=True)
class Overview:
    now: datetime
    chart_start: datetime
    queues: list[QueueSummary]
    minutes: list[Minute]
    recent_capped: bool  # the last hour held more finished jobs than RECENT_CAP: recent counts are lower bounds
    recent_since: datetime  # the oldest finish the recent counts cover
    workers: list[WorkerRow]


@dataclass(frozen=True)
class JobRow:
    id: int
    queue: str
    task: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    args_preview: str
    args_clipped: bool
    error: str | None


@dataclass(frozen=True)
class JobPage:
    rows: list[JobRow]
    next_cursor: Cursor | None


@dataclass(frozen=True)
class Attempt:
    ordinal: int
    kind: str  # the JSON type of the history entry: "object" normally
    attempt: str | None
    started_at: str | None
    at: str | None
    error: Clipped | None
    traceback: Clipped | None
    worker: str | None
    counted: str | None
    raw: Clipped | None  # an entry that is not an object, as text


@dataclass(frozen=True)
class JobDetail:
    id: int
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    now: datetime
    queue: Clipped
    task: Clipped
    dedup_key: Clipped | None
    schedule: Clipped | None
    worker_id: Clipped | None
    args: Clipped
    result: Clipped | None
    error: Clipped | None
    error_count: int
    errors_type: str
    attempts_list: list[Attempt] = field(default_factory=list)
    parents: list[store.Relative] = field(default_factory=list)
    children: list[store.Relative] = field(default_factory=list)
    progress: store.Progress | None = None  # None: the job is in no workflow


@dataclass(frozen=True)
class MatchCount:
    status: str
    jobs: int
    max_id: int | None


@dataclass(frozen=True)
class RetryOutcome:
    retried: list[int]
    held_back: list[tuple[int, str]]  # (job id, dedup key held by a newer pending or running job)
    remaining: bool = False  # a bulk action stopped at BULK_MAX


@dataclass(frozen=True)
class CancelOutcome:
    cancelled: list[int]
    remaining: bool = False


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    key: str
    cron: str
    timezone: str
    task: str
    queue: str
    enabled: bool
    skip_if_running: bool
    missed: str
    last_fire_at: datetime | None
    next_fire_at: datetime | None
    updated_at: datetime
    fires: list[FireRow] = field(default_factory=list)


@dataclass(frozen=True)
class FireRow:
    fire_at: datetime
    job_id: int | None
    skipped_reason: str | None
    created_at: datetime
    job_status: str | None


# -- reads ----------------------------------------------------------------------------------------------------


def overview(conn: Connection, *, recent_cap: int = RECENT_CAP) -> Overview:
    now, chart_start = store.clock(conn)
    summaries: dict[str, dict[str, Any]] = {}

    def summary(name: str) -> dict[str, Any]:
        return summaries.setdefault(name, {"name": name})

    for queue, kind, jobs, oldest in store.queue_counts(conn):
        entry = summary(queue)
        entry[kind] = int(jobs)
        if kind == "due" and oldest is not None:
            entry["oldest_due_seconds"] = max(0.0, float(oldest))
    recent = store.recent_finished(conn, cap=recent_cap)
    per_minute: dict[datetime, list[int]] = {}
    read = 0
    oldest_seen: datetime | None = None
    for queue, status, minute, jobs, oldest in recent:
        read += int(jobs)
        oldest_seen = oldest if oldest_seen is None or oldest < oldest_seen else oldest_seen
        key = {"completed": "completed_recent", "cancelled": "cancelled_recent", "failed": "failed_recent"}.get(status)
        if key is not None:
            entry = summary(queue)
            entry[key] = entry.get(key, 0) + int(jobs)
        counts = per_minute.setdefault(minute, [0, 0])
        if status == "completed":
            counts[0] += int(jobs)
        elif status == "failed":
            counts[1] += int(jobs)
    capped = read >= recent_cap
    since = oldest_seen if capped and oldest_seen is not None else chart_start
    minutes = []
    for index in range(60):
        start = chart_start + timedelta(minutes=index)
        completed, failed = per_minute.get(start, [0, 0])
        minutes.append(Minute(start=start, completed=completed, failed=failed, complete=not capped or start > since))
    for setting in store.queue_settings(conn):
        summary(setting.name)["paused"] = bool(setting.paused)
    for scheduled in store.schedule_queues(conn):
        summary(scheduled.queue)
    workers = [
        WorkerRow(
            id=row.id,
            host=row.host,
            pid=int(row.pid),
            queues=list(row.queues) if row.queues is not None else None,
            queues_total=int(row.queues_total),
            concurrency=int(row.concurrency),
            running=int(row.running),
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            stopped_at=row.stopped_at,
            silent_seconds=max(0.0, float(row.silent_seconds)) if row.silent_seconds is not None else None,
            heartbeat_interval=float(row.heartbeat_interval) if row.heartbeat_interval is not None else None,
        )
        for row in store.workers(conn, limit=WORKERS_SHOWN)
    ]
    for worker in workers:
        for name in worker.queues or ():
            summary(name)
    queues = [QueueSummary(**summaries[name]) for name in sorted(summaries)]
    return Overview(
        now=now,
        chart_start=chart_start,
        queues=queues,
        minutes=minutes,
        recent_capped=capped,
        recent_since=since,
        workers=workers,
    )


def jobs(conn: Connection, flt: JobFilter, cursor: Cursor | None) -> JobPage:
    limit = flt.limit + 1
    if flt.sort == "run_at":
        found = store.jobs_by_run_at(
            conn,
            flt.sql_params(),
            after_run_at=cursor.run_at if cursor else None,
            after_id=cursor.id if cursor else None,
            limit=limit,
        )
    else:
        found = store.jobs_newest(conn, flt.sql_params(), before_id=cursor.id if cursor else None, limit=limit)
    rows = [JobRow(**row._asdict()) for row in found]
    next_cursor = None
    if len(rows) > flt.limit:
        rows = rows[: flt.limit]
        last = rows[-1]
        next_cursor = Cursor(id=last.id, run_at=last.run_at if flt.sort == "run_at" else None)
    return JobPage(rows=rows, next_cursor=next_cursor)


def job(conn: Connection, job_id: int) -> JobDetail | None:
    record = store.job(conn, job_id, name_clip=NAME_CLIP, json_clip=JSON_CLIP, text_clip=TEXT_CLIP)
    if record is None:
        return None
    attempts = [
        Attempt(
            ordinal=int(entry.ordinal),
            kind=entry.kind,
            attempt=entry.attempt,
            started_at=entry.started_at,
            at=entry.at,
            error=_clipped(entry.error, entry.error_length),
            traceback=_clipped(entry.traceback, entry.traceback_length),
            worker=entry.worker,
            counted=entry.counted,
            raw=_clipped(entry.raw, entry.raw_length),
        )
        for entry in store.job_attempts(
            conn, job_id, limit=ATTEMPTS_SHOWN, text_clip=TEXT_CLIP, traceback_clip=TRACEBACK_CLIP
        )
    ]
    attempts.reverse()
    progress = store.job_progress(conn, job_id)
    relatives = (
        store.job_relatives(conn, job_id, limit=RELATIVES_SHOWN, name_clip=NAME_CLIP)
        if progress.parents or progress.children
        else []
    )
    row = record._asdict()
    texts = {name: _clipped(row.pop(name), row.pop(f"{name}_length")) for name in _CLIPPED_COLUMNS}
    queue, task, args = texts.pop("queue"), texts.pop("task"), texts.pop("args")
    assert queue is not None and task is not None and args is not None
    return JobDetail(
        **row,
        queue=queue,
        task=task,
        args=args,
        **texts,
        attempts_list=attempts,
        parents=[r for r in relatives if r.relation == "parent"],
        children=[r for r in relatives if r.relation == "child"],
        progress=progress if progress.parents or progress.children else None,
    )


_CLIPPED_COLUMNS = ("queue", "task", "dedup_key", "schedule", "worker_id", "args", "result", "error")


def count_matching(conn: Connection, flt: JobFilter, statuses: Iterable[str]) -> list[MatchCount]:
    counts = []
    for status in statuses:
        found = store.count_matching(conn, flt.sql_params(), status)
        counts.append(MatchCount(status=status, jobs=int(found.jobs), max_id=found.max_id))
    return counts


def schedules(conn: Connection, *, limit: int = 500, fires_per_schedule: int = 10) -> list[ScheduleRow]:
    found = store.schedules(conn, limit=limit)
    fires: dict[str, list[FireRow]] = {}
    if found:
        for fire in store.schedule_fires(conn, [row.key for row in found], per_schedule=fires_per_schedule):
            values = fire._asdict()
            fires.setdefault(values.pop("schedule"), []).append(FireRow(**values))
    return [ScheduleRow(**row._asdict(), fires=fires.get(row.key, [])) for row in found]


# -- actions --------------------------------------------------------------------------------------------------


def retry(conn: Connection, ids: Sequence[int]) -> RetryOutcome:
    """Failed jobs among `ids` back to pending, with one notification per queue; jobs whose dedup key is held by a
    pending or running job stay failed and are reported, not raised."""
    results = store.retry_jobs(conn, ids)
    retried = sorted(int(row.id) for row in results if row.retried)
    held = sorted((int(row.id), str(row.dedup_key)) for row in results if not row.retried)
    return RetryOutcome(retried=retried, held_back=held)


def cancel(conn: Connection, ids: Sequence[int]) -> CancelOutcome:
    """Pending and running jobs among `ids` cancelled by queries.sql's cancel_jobs (running ones' workers told by
    NOTIFY); finished ones are left as they are."""
    return CancelOutcome(cancelled=sorted(int(row.id) for row in store.cancel_jobs(conn, ids)))


def bulk_retry(conn: Connection, flt: JobFilter, max_id: int) -> RetryOutcome:
    retried: list[int] = []
    held: list[tuple[int, str]] = []
    remaining = False
    for batch in _matching_batches(conn, flt, "failed", max_id):
        if len(retried) + len(held) >= BULK_MAX:
            remaining = True
            break
        outcome = retry(conn, batch)
        retried += outcome.retried
        held += outcome.held_back
    return RetryOutcome(retried=retried, held_back=held, remaining=remaining)


def bulk_cancel(conn: Connection, flt: JobFilter, max_id: int) -> CancelOutcome:
    cancelled: list[int] = []
    remaining = False
    for status in ("pending", "running"):
        if flt.status not in (None, status):
            continue
        for batch in _matching_batches(conn, flt, status, max_id):
            if len(cancelled) >= BULK_MAX:
                remaining = True
                break
            cancelled += cancel(conn, batch).cancelled
    return CancelOutcome(cancelled=sorted(cancelled), remaining=remaining)


def _matching_batches(conn: Connection, flt: JobFilter, status: str, max_id: int) -> Iterable[list[int]]:
    after: int | None = None
    while True:
        ids = store.matching_ids(conn, flt.sql_params(), status=status, max_id=max_id, after_id=after, limit=BULK_BATCH)
        if not ids:
            return
        yield ids
        after = ids[-1]


def set_paused(conn: Connection, queue: str, paused: bool) -> None:
    """Pause or resume a queue; on resume, idle workers are told at once (pgqueue_jobs, run_at 0)."""
    store.set_paused(conn, queue, paused)


def _clipped(text: str | None, length: int | None) -> Clipped | None:
    if text is None:
        return None
    return Clipped(text=text, length=int(length) if length is not None else len(text))
