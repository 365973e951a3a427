"""Queues and workers as rows: a queue's run-time settings (paused) and the registry of live workers.

`queues` holds one row per queue that has a setting; a queue without a row has the defaults (not paused). A
worker decides from this table, inside its claim statement, never from a notification alone.

`workers` is the registry the dashboard and `pgqueue status` read: each worker process upserts its row when it
starts and with the maintenance statement it already sends every lease/2 (no extra statement while idle), and
marks it stopped when it exits. A row whose heartbeat is older than a few intervals belongs to a worker that
died without saying so.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgqueue.queues (
            name text PRIMARY KEY,
            paused boolean NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE pgqueue.workers (
            id text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            queues text[],
            concurrency integer NOT NULL,
            running integer NOT NULL DEFAULT 0,
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            stopped_at timestamptz
        )
        """
    )
    op.execute("COMMENT ON COLUMN pgqueue.workers.queues IS 'the queues it works on; null: all'")
    op.execute("COMMENT ON COLUMN pgqueue.workers.running IS 'jobs running at its last heartbeat'")
    op.execute("CREATE INDEX workers_heartbeat_idx ON pgqueue.workers (heartbeat_at)")


def downgrade() -> None:
    op.execute("DROP TABLE pgqueue.workers")
    op.execute("DROP TABLE pgqueue.queues")
