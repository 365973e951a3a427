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
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOMAIN, JSONB

SCHEMA = "pgqueue"


class JobStatus(StrEnum):
    """A job's `status`; the transitions between them are in docs/state-machine.md. The SQL in pgqueue/sql/
    writes them as literals (a statement must stay plain text); this is the list its domain check enforces."""

    PENDING = "pending"  # waiting for run_at (new, retrying after a backoff, released, rescued)
    RUNNING = "running"  # claimed by a worker, whose lease keeps it
    COMPLETED = "completed"
    FAILED = "failed"  # attempts used up, or a permanent error; kept for retry-failed
    CANCELLED = "cancelled"


JOB_STATUSES = tuple(status.value for status in JobStatus)

# NOTIFY channels. The jobs channel is sent on by the statement trigger of migration 0001 and by the statements
# that make jobs runnable again (release_jobs, release_unknown_jobs, notify_queue in queries.sql); the cancel
# channel by cancel_jobs. Payloads are JSON: {"queue": ..., "run_at": epoch seconds} and {"id": ...}.
JOBS_CHANNEL = "pgqueue_jobs"
CANCEL_CHANNEL = "pgqueue_cancel"
DEFAULT_MAX_ATTEMPTS = 5

metadata = MetaData(schema=SCHEMA)

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
    Index("jobs_lease_idx", "lease_expires_at", postgresql_where=text("status = 'running'")),
    Index(
        "jobs_dedup_key_idx",
        "dedup_key",
        unique=True,
        postgresql_where=text("dedup_key IS NOT NULL AND status IN ('pending', 'running')"),
    ),
    Index("jobs_finished_idx", "finished_at", postgresql_where=text("finished_at IS NOT NULL")),
    Index("jobs_failed_idx", "task", postgresql_where=text("status = 'failed'")),
    # The dashboard's (migration 0006): failed jobs per queue, and the args containment filter.
    Index("jobs_failed_queue_idx", "queue", "id", postgresql_where=text("status = 'failed'")),
    Index("jobs_args_idx", "args", postgresql_using="gin", postgresql_ops={"args": "jsonb_path_ops"}),
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
    Index("workers_heartbeat_idx", "heartbeat_at"),
)
