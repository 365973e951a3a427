"""The workers registry: each row says how often its worker beats, so that "dead" means "missed a few beats".

`workers.heartbeat_interval` is the worker's maintenance interval in seconds: the rescue statement it sends that
often carries its heartbeat (no extra statement while idle). A reader counts a worker as dead once it has been
silent for a few of its own intervals; rows written before this revision (interval null) fall back to a fixed
threshold. The check keeps out values no worker writes (zero, negative, NaN, over a day), so a reader can trust
the arithmetic; a hand-written row with a null interval is still allowed.

Adding a nullable column without a default is a catalogue change only: no rewrite, no long lock.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE pgqueue.workers ADD COLUMN heartbeat_interval double precision "
        "CONSTRAINT workers_heartbeat_interval_check CHECK (heartbeat_interval > 0 AND heartbeat_interval <= 86400)"
    )
    op.execute("COMMENT ON COLUMN pgqueue.workers.heartbeat_interval IS 'seconds between its heartbeats'")


def downgrade() -> None:
    op.execute("ALTER TABLE pgqueue.workers DROP COLUMN heartbeat_interval")
