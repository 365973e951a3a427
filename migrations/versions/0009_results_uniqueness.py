"""Snoozes, awaiting results, richer uniqueness.

- `jobs.snoozes`: how many times the job's handler raised Snooze (a snooze charges no attempt and writes no error).
- The trigger `jobs_notify_finished`: after each statement that sets `status` (the statements that complete,
  fail, snooze, cancel, release, rescue or claim jobs; not lease renewals or start reports), `NOTIFY
  pgqueue_finished` with an empty payload, so that `Queue.result()` waiters re-read their job's row. One
  notification per statement, not per job: a worker's acks ride on its next claim, so a busy worker sends one
  per batch (a row trigger would run its function for every job). Its cost: benchmarks/finished_notify.py.
- `jobs_dedup_completed_idx (dedup_key, finished_at) WHERE dedup_key IS NOT NULL AND status = 'completed'`: the
  look-up of `unique_for` (a completed job with this key that finished within the window).
- `jobs.debounce_key` with the unique index `jobs_debounce_key_idx WHERE status = 'pending'`: a debounced enqueue
  is `INSERT ... ON CONFLICT DO UPDATE` on it, atomic under concurrent enqueues; only pending jobs count, so a
  change arriving while the job runs gets a run of its own.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The channel is pgqueue.store.schema.FINISHED_CHANNEL (a migration keeps the text it was written with).
NOTIFY_FINISHED_FUNCTION = """
CREATE FUNCTION pgqueue.notify_finished_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgqueue_finished', '');
    RETURN NULL;
END
$$
"""

NOTIFY_FINISHED_TRIGGER = """
CREATE TRIGGER jobs_notify_finished
AFTER UPDATE OF status ON pgqueue.jobs
FOR EACH STATEMENT
EXECUTE FUNCTION pgqueue.notify_finished_job()
"""


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("snoozes", sa.Integer(), nullable=False, server_default="0", comment="times its handler snoozed"),
        schema="pgqueue",
    )
    op.add_column(
        "jobs",
        sa.Column("debounce_key", sa.Text(), comment="at most one pending job per key; a later enqueue updates it"),
        schema="pgqueue",
    )
    op.create_index(
        "jobs_debounce_key_idx",
        "jobs",
        ["debounce_key"],
        unique=True,
        schema="pgqueue",
        postgresql_where=sa.text("debounce_key IS NOT NULL AND status = 'pending'"),
    )
    op.create_index(
        "jobs_dedup_completed_idx",
        "jobs",
        ["dedup_key", "finished_at"],
        schema="pgqueue",
        postgresql_where=sa.text("dedup_key IS NOT NULL AND status = 'completed'"),
    )
    op.execute(NOTIFY_FINISHED_FUNCTION)
    op.execute(NOTIFY_FINISHED_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_notify_finished ON pgqueue.jobs")
    op.execute("DROP FUNCTION pgqueue.notify_finished_job()")
    op.drop_index("jobs_dedup_completed_idx", table_name="jobs", schema="pgqueue")
    op.drop_index("jobs_debounce_key_idx", table_name="jobs", schema="pgqueue")
    op.drop_column("jobs", "debounce_key", schema="pgqueue")
    op.drop_column("jobs", "snoozes", schema="pgqueue")
