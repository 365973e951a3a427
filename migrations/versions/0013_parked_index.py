"""Index for the dashboard's overview: held (limits) and waiting (workflows) jobs per queue.

- `jobs_parked_queue_idx (queue, status) WHERE status IN ('held', 'waiting')`: the overview counts the jobs parked
  by a concurrency limit and the jobs waiting for their parents per queue; with this index that costs what those
  jobs number, not the history (an index-only scan). Written only when a job is parked or released.

Plain CREATE INDEX, in the migration's transaction like 0006: on a large jobs table it holds off writes while it
builds; create it beforehand with CREATE INDEX CONCURRENTLY under this name and definition to skip that.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS jobs_parked_queue_idx ON pgqueue.jobs (queue, status) "
        "WHERE status IN ('held', 'waiting')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX pgqueue.jobs_parked_queue_idx")
