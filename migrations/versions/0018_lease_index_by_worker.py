"""The running jobs' index leads with the worker that holds them.

- `jobs_lease_idx (worker_id, lease_expires_at) WHERE status = 'running'` (was `(lease_expires_at)`).

Why: a worker's acks, renewals and restarts look up the running jobs of that worker (`status = 'running' AND
worker_id = ...`). A queue table is analyzed while few of its jobs run, so the planner takes the running jobs'
partial index as next to empty and reads it for these statements rather than the primary key. Led by the lease
time, that index holds every worker's running jobs: each ack read all of them, so its cost grew with the
number of workers and what they had claimed ahead (an ack of 20 beside 61,000 jobs run by other workers:
12 ms). Led by the worker, the same read stops at this worker's jobs (0.54 ms). The rescue of expired leases,
which looks at every worker's jobs, reads the whole index instead of its expired end: it runs once per
maintenance round, not once per ack.

Plain CREATE INDEX, in the migration's transaction like 0006: on a large jobs table it holds off writes while it
builds (it reads the whole table, though it indexes only the running jobs). To skip that, create it beforehand
with CREATE INDEX CONCURRENTLY under another name, drop the old one and rename the new one to jobs_lease_idx:
this revision then leaves it as it is.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def _definition() -> str:
    found = op.get_bind().execute(
        sa.text("SELECT indexdef FROM pg_indexes WHERE schemaname = 'pgqueue' AND indexname = 'jobs_lease_idx'")
    )
    return found.scalar() or ""


def upgrade() -> None:
    if "(worker_id, lease_expires_at)" in _definition():
        return  # made beforehand, as the docstring says
    op.execute("DROP INDEX IF EXISTS pgqueue.jobs_lease_idx")
    op.execute("CREATE INDEX jobs_lease_idx ON pgqueue.jobs (worker_id, lease_expires_at) WHERE status = 'running'")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS pgqueue.jobs_lease_idx")
    op.execute("CREATE INDEX jobs_lease_idx ON pgqueue.jobs (lease_expires_at) WHERE status = 'running'")
