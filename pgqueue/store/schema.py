"""Schema `pgqueue`: the SQLAlchemy metadata (the source of truth for migrations and user queries), the job
statuses and the notification channels, each named once here."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOMAIN, INTERVAL, JSONB

SCHEMA = "pgqueue"


class JobStatus(StrEnum):
    """A job's `status`; the transitions between them are in docs/state-machine.md. The SQL in pgqueue/sql/
    writes them as literals (a statement must stay plain text); this is the list its domain check enforces."""

    PENDING = "pending"  # waiting for run_at (new, retrying after a backoff, released, rescued)
    RUNNING = "running"  # claimed by a worker, whose lease keeps it
    COMPLETED = "completed"
    FAILED = "failed"  # attempts used up, or a permanent error; kept for retry-failed
    CANCELLED = "cancelled"
    HELD = "held"  # due, but a concurrency limit is full: parked until a slot frees (migration 0008)
    WAITING = "waiting"  # has parents not finished yet (pgqueue.job_dependencies); never claimed


JOB_STATUSES = tuple(status.value for status in JobStatus)

# NOTIFY channels. The jobs channel is sent on by the statement trigger of migration 0001 and by the statements
# that make jobs runnable again (release_jobs, release_unknown_jobs, notify_queue in queries.sql); the cancel
# channel by cancel_jobs. Payloads are JSON: {"queue": ..., "run_at": epoch seconds} and {"id": ...}.
JOBS_CHANNEL = "pgqueue_jobs"
CANCEL_CHANNEL = "pgqueue_cancel"
# Sent (empty payload) by the statement trigger of migration 0009 after each statement that sets job statuses:
# Queue.result() waiters listen on it and re-read their job's row.
FINISHED_CHANNEL = "pgqueue_finished"
DEFAULT_MAX_ATTEMPTS = 5

# The newest migration this code needs (a test pins it to the head of migrations/). A worker refuses a database
# behind it with one clear line; a database ahead of it (newer code migrated it first: a rolling deploy) is fine,
# as migrations only add what older code does not read.
REVISION = "0023"

metadata = MetaData(schema=SCHEMA)
# The documented views over `jobs` (migration 0011, plain SQL: not part of the metadata).
VIEWS = ("attempts", "task_hours", "stuck_jobs")

# Domains rather than table CHECK constraints: the same rules, but PostgreSQL caches a domain's check per
# connection instead of preparing table constraints again for every INSERT and UPDATE of a job.
job_status = DOMAIN(
    "job_status",
    Text,
    constraint_name="job_status_check",
    check=f"VALUE IN ({', '.join(repr(s) for s in JOB_STATUSES)})",
    schema=SCHEMA,
)
attempt_limit = DOMAIN(
    "attempt_limit", Integer, constraint_name="attempt_limit_check", check="VALUE >= 1", schema=SCHEMA
)

# The jobs table's autovacuum settings (vacuum after about 5,000 finished jobs whatever the table's size, and
# always clean the indexes, so that claims do not step over the dead entries of claimed jobs) are storage
# parameters set by migration 0003; see there why.
jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("queue", Text, nullable=False, server_default="default"),
    Column("task", Text, nullable=False),
    Column("args", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", job_status, nullable=False, server_default=JobStatus.PENDING.value),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", attempt_limit, nullable=False, server_default=str(DEFAULT_MAX_ATTEMPTS)),
    Column("run_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("error", Text, comment="the last attempt's error message"),
    Column(
        "errors",
        JSONB,
        nullable=False,
        server_default=text("'[]'::jsonb"),
        comment="one object per failed attempt: attempt, at, error, traceback, worker",
    ),
    Column("result", JSONB, comment="the handler's return value, when it returned one"),
    Column("worker_id", Text, comment="the worker holding the job while it runs"),
    Column("lease_expires_at", DateTime(timezone=True), comment="when a running job counts as lost"),
    Column("dedup_key", Text, comment="at most one pending or running job per key"),
    Column("schedule", Text, comment="the periodic schedule that produced the job"),
    Column("limit_keys", ARRAY(Text), comment="the limit slots the running job holds"),
    Column("limit_stripe", SmallInteger, comment="the limit stripe (0-3) the running job's slots are in"),  # 0016
    Column("held_by", Text, comment="the full limit key that holds the job back"),
    Column("deferred_by", Text, comment="the rate key whose window moved run_at"),  # migration 0014
    Column("snoozes", Integer, nullable=False, server_default="0", comment="times its handler snoozed"),
    Column("debounce_key", Text, comment="at most one pending job per key; a later enqueue updates it"),
    Column("meta", JSONB, comment="what the job is about, given at enqueue (order id, tenant)"),  # migration 0011
    Column(
        "waiting_for",
        Integer,
        nullable=False,
        server_default="0",
        comment="parents not finished yet (while waiting)",
    ),
    Column("trace_context", JSONB, comment="the enqueuing trace context (W3C traceparent), if any"),
    # The claim's shapes: all queues, or one named queue. Partial, so finished rows cost nothing.
    Index(
        "jobs_claim_idx",
        text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=text("status = 'pending'"),
    ),
    Index(
        "jobs_queue_claim_idx",
        "queue",
        text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=text("status = 'pending'"),
    ),
    # Running jobs by the worker that holds them: its acks read its own jobs, not every worker's (migration 0018).
    Index("jobs_lease_idx", "worker_id", "lease_expires_at", postgresql_where=text("status = 'running'")),
    Index(
        "jobs_dedup_key_idx",
        "dedup_key",
        unique=True,
        postgresql_where=text("dedup_key IS NOT NULL AND status IN ('pending', 'running', 'held')"),
    ),
    # Held jobs per limit key, in claim order: the wake-up after a slot frees (migration 0008).
    Index(
        "jobs_held_idx",
        "held_by",
        text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=text("status = 'held'"),
    ),
    Index("jobs_finished_idx", "finished_at", postgresql_where=text("finished_at IS NOT NULL")),
    Index("jobs_failed_idx", "task", postgresql_where=text("status = 'failed'")),
    # The dashboard's (migration 0006): failed jobs per queue, and the args containment filter.
    Index("jobs_failed_queue_idx", "queue", "id", postgresql_where=text("status = 'failed'")),
    Index("jobs_args_idx", "args", postgresql_using="gin", postgresql_ops={"args": "jsonb_path_ops"}),
    # Migration 0013: the overview's held and waiting jobs per queue.
    Index(
        "jobs_parked_queue_idx",
        "queue",
        "status",
        postgresql_where=text("status IN ('held', 'waiting')"),
    ),
    # Migration 0014: the latest due time of the jobs waiting for each rate key.
    Index(
        "jobs_deferred_idx",
        "deferred_by",
        "run_at",
        postgresql_where=text("deferred_by IS NOT NULL AND status = 'pending'"),
    ),
    # Migration 0009: debounce (one pending job per key, updated in place) and unique_for (recently completed).
    Index(
        "jobs_debounce_key_idx",
        "debounce_key",
        unique=True,
        postgresql_where=text("debounce_key IS NOT NULL AND status = 'pending'"),
    ),
    Index(
        "jobs_dedup_completed_idx",
        "dedup_key",
        "finished_at",
        postgresql_where=text("dedup_key IS NOT NULL AND status = 'completed'"),
    ),
    # `meta @> '{"order_id": 42}'` (migration 0011); partial: a job without meta adds no entry.
    Index(
        "jobs_meta_idx",
        "meta",
        postgresql_using="gin",
        postgresql_ops={"meta": "jsonb_path_ops"},
        postgresql_where=text("meta IS NOT NULL"),
    ),
)

# A job's parents (migration 0010): one row per edge, `parent_status` set once the parent finished. The triggers
# of migration 0010 release (or cancel) a dependent when its parents finish; see docs/state-machine.md.
job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column("job_id", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("depends_on", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("on_failure", Text, nullable=False, server_default="cancel"),
    Column("parent_status", Text, comment="the parent's outcome once it finished; null before"),
    Column("resolved_at", DateTime(timezone=True)),
    Column("cancelled_dependent", Boolean, nullable=False, server_default=text("false")),
    PrimaryKeyConstraint("job_id", "depends_on", name="job_dependencies_pkey"),
    CheckConstraint("job_id <> depends_on", name="job_dependencies_not_itself"),
    CheckConstraint("on_failure IN ('cancel', 'run')", name="job_dependencies_on_failure_check"),
    Index("job_dependencies_parent_idx", "depends_on"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("name", Text, primary_key=True),
    Column("cron", Text, nullable=False),
    Column("timezone", Text, nullable=False, server_default="UTC"),
    Column("task", Text, nullable=False),
    Column("args", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("queue", Text, nullable=False, server_default="default"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("missed", Text, nullable=False, server_default="latest", comment="latest | backfill"),
    Column("backfill_limit", Integer, nullable=False, server_default="10"),
    Column("skip_if_running", Boolean, nullable=False, server_default=text("false")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("last_fire_at", DateTime(timezone=True)),
    Column("next_fire_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("missed IN ('latest', 'backfill')", name="schedules_missed_check"),
)

schedule_fires = Table(
    "schedule_fires",
    metadata,
    Column(
        "schedule",
        Text,
        ForeignKey("schedules.name", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("fire_at", DateTime(timezone=True), nullable=False),
    Column("job_id", BigInteger, comment="null when the fire was skipped"),
    Column("skipped_reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # One row per schedule and fire time: the constraint that makes each fire happen once.
    PrimaryKeyConstraint("schedule", "fire_at", name="schedule_fires_pkey"),
)

# Run-time settings of a queue; a queue without a row has the defaults (not paused).
queues = Table(
    "queues",
    metadata,
    Column("name", Text, primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Limits (migrations 0008 and 0014), decided inside the claim by pgqueue.grant_limits: `task:NAME` or
# `queue:NAME`, with a concurrency (per value of the argument `key_arg` when set), a rate (at most `rate` starts
# in any window of `rate_period`, per value of `rate_key_arg` when set), or both.
limits = Table(
    "limits",
    metadata,
    Column("name", Text, primary_key=True),
    Column("scope", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("concurrency", Integer),
    Column("key_arg", Text, comment="at most concurrency running jobs per value of this arg"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("rate", Integer, comment="at most this many starts in any window of rate_period"),
    Column("rate_period", INTERVAL),
    Column("rate_key_arg", Text, comment="the rate counts per value of this arg"),
    CheckConstraint("scope IN ('task', 'queue')", name="limits_scope_check"),
    CheckConstraint("name = scope || ':' || target", name="limits_name_check"),
    CheckConstraint("concurrency IS NULL OR concurrency >= 1", name="limits_concurrency_check"),
    CheckConstraint("key_arg IS NULL OR (scope = 'task' AND concurrency IS NOT NULL)", name="limits_key_arg_check"),
    CheckConstraint(
        "(rate IS NULL AND rate_period IS NULL) OR (rate BETWEEN 1 AND 10000 AND rate_period > interval '0' "
        "AND rate_period <= interval '1 hour')",
        name="limits_rate_check",
    ),
    CheckConstraint("rate_key_arg IS NULL OR (scope = 'task' AND rate IS NOT NULL)", name="limits_rate_key_arg_check"),
    CheckConstraint("concurrency IS NOT NULL OR rate IS NOT NULL", name="limits_some_limit_check"),
)

# The starts granted under a rate while they are in its window (migration 0014): the window is counted from them.
rate_starts = Table(
    "rate_starts",
    metadata,
    Column("key", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("job_id", BigInteger, nullable=False),
    Index("rate_starts_key_idx", "key", "at"),
    comment="the starts granted under a rate, while in its window",
)

# The registry of worker processes, kept current by the statements they already send (see migration 0004).
workers = Table(
    "workers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", ARRAY(Text), comment="the queues it works on; null: all"),
    Column("concurrency", Integer, nullable=False),
    Column("running", Integer, nullable=False, server_default="0", comment="jobs running at its last heartbeat"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("stopped_at", DateTime(timezone=True)),
    # Migration 0007: how often this worker beats, so that a reader can tell a dead worker by its own rhythm.
    Column("heartbeat_interval", Double, comment="seconds between its heartbeats"),
    CheckConstraint("heartbeat_interval > 0 AND heartbeat_interval <= 86400", name="workers_heartbeat_interval_check"),
    Index("workers_heartbeat_idx", "heartbeat_at"),
)
