"""Indexes for the dashboard: failed jobs per queue, and args containment (`args @> '{"order_id": 42}'`).

- `jobs_failed_queue_idx (queue, id) WHERE status = 'failed'`: failed jobs are kept (retention prunes only
  completed and cancelled ones), so after an outage there may be many; the overview counts them per queue and
  the job list pages through them by id from this index alone. Written only when a job fails for good.
- `jobs_args_idx USING gin (args jsonb_path_ops)`: the job list's args filter. Without it a filter that matches
  little reads the whole table (about 0.5 s at 1,000,000 rows); with it, about 1 ms. jsonb_path_ops answers `@>`
  only and is the smaller of the two GIN operator classes. Its write cost (every insert, and every status change
  since those are not HOT updates) is measured by benchmarks/dashboard.py: see the README's Dashboard section.

Plain CREATE INDEX, in the migration's transaction like every other revision: on a large jobs table it holds off
writes to the table while it builds (about 7 s per 1,000,000 jobs here); run it at a quiet moment, or create the
indexes beforehand with CREATE INDEX CONCURRENTLY under these names and definitions (the migration then skips them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS jobs_failed_queue_idx ON pgqueue.jobs (queue, id) WHERE status = 'failed'")
    op.execute("CREATE INDEX IF NOT EXISTS jobs_args_idx ON pgqueue.jobs USING gin (args jsonb_path_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX pgqueue.jobs_args_idx")
    op.execute("DROP INDEX pgqueue.jobs_failed_queue_idx")
