"""Jobs, schedules and their fires; the NOTIFY trigger.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "pgqueue"

# One notification per queue per INSERT statement (not per row), carrying the earliest run_at so that
# idle workers also learn when a delayed job becomes due. Fires for every insert: the API's, the
# scheduler's, or a hand-written one. NOTIFY is delivered on commit only. The channel is
# pgqueue.store.schema.JOBS_CHANNEL (a migration keeps the text it was written with).
NOTIFY_FUNCTION = """
CREATE FUNCTION pgqueue.notify_new_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    due record;
BEGIN
    FOR due IN SELECT queue, min(run_at) AS run_at FROM new_jobs GROUP BY queue LOOP
        PERFORM pg_notify(
            'pgqueue_jobs',
            json_build_object('queue', due.queue, 'run_at', extract(epoch FROM due.run_at))::text
        );
    END LOOP;
    RETURN NULL;
END
$$
"""

NOTIFY_TRIGGER = """
CREATE TRIGGER jobs_notify_insert
AFTER INSERT ON pgqueue.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.notify_new_jobs()
"""


def timestamptz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("args", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="5"),
        sa.Column("run_at", timestamptz(), nullable=False, server_default=sa.func.now()),
        sa.Column("created_at", timestamptz(), nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", timestamptz()),
        sa.Column("finished_at", timestamptz()),
        sa.Column("error", sa.Text, comment="the last attempt's error message"),
        sa.Column(
            "errors",
            JSONB,
            nullable=False,
            server_default=sa.text("'[]'::jsonb"),
            comment="one object per failed attempt: attempt, at, error, traceback, worker",
        ),
        sa.Column("result", JSONB, comment="the handler's return value, when it returned one"),
        sa.Column("worker_id", sa.Text, comment="the worker holding the job while it runs"),
        sa.Column("lease_expires_at", timestamptz(), comment="when a running job counts as lost"),
        sa.Column("dedup_key", sa.Text, comment="at most one pending or running job per key"),
        sa.Column("schedule", sa.Text, comment="the periodic schedule that produced the job"),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')", name="jobs_status_check"
        ),
        sa.CheckConstraint("max_attempts >= 1", name="jobs_max_attempts_check"),
        schema=SCHEMA,
    )
    pending = sa.text("status = 'pending'")
    op.create_index(
        "jobs_claim_idx",
        "jobs",
        [sa.text("priority DESC"), "run_at", "id"],
        schema=SCHEMA,
        postgresql_where=pending,
    )
    op.create_index(
        "jobs_queue_claim_idx",
        "jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        schema=SCHEMA,
        postgresql_where=pending,
    )
    op.create_index(
        "jobs_lease_idx",
        "jobs",
        ["lease_expires_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "jobs_dedup_key_idx",
        "jobs",
        ["dedup_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("dedup_key IS NOT NULL AND status IN ('pending', 'running')"),
    )
    op.create_index(
        "jobs_finished_idx",
        "jobs",
        ["finished_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index("jobs_failed_idx", "jobs", ["task"], schema=SCHEMA, postgresql_where=sa.text("status = 'failed'"))
    op.execute(NOTIFY_FUNCTION)
    op.execute(NOTIFY_TRIGGER)

    op.create_table(
        "schedules",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("args", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("queue", sa.Text, nullable=False, server_default="default"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("missed", sa.Text, nullable=False, server_default="latest", comment="latest | backfill"),
        sa.Column("backfill_limit", sa.Integer, nullable=False, server_default="10"),
        sa.Column("skip_if_running", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("last_fire_at", timestamptz()),
        sa.Column("next_fire_at", timestamptz()),
        sa.Column("updated_at", timestamptz(), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("missed IN ('latest', 'backfill')", name="schedules_missed_check"),
        schema=SCHEMA,
    )
    op.create_table(
        "schedule_fires",
        sa.Column(
            "schedule",
            sa.Text,
            sa.ForeignKey(f"{SCHEMA}.schedules.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("fire_at", timestamptz(), nullable=False),
        sa.Column("job_id", sa.BigInteger, comment="null when the fire was skipped"),
        sa.Column("skipped_reason", sa.Text),
        sa.Column("created_at", timestamptz(), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("schedule", "fire_at", name="schedule_fires_pkey"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("schedule_fires", schema=SCHEMA)
    op.drop_table("schedules", schema=SCHEMA)
    op.execute("DROP TRIGGER jobs_notify_insert ON pgqueue.jobs")
    op.execute("DROP FUNCTION pgqueue.notify_new_jobs()")
    op.drop_table("jobs", schema=SCHEMA)
