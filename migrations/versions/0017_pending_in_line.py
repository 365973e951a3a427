"""The claim's pick of pending jobs planned the same way whatever the statistics say.

- `pgqueue.pending_in_line(wanted, paused)`: up to `wanted` pending jobs due now, of any queue not paused, in
  claim order (priority, then due time, then id), locked with SKIP LOCKED.
- `pgqueue.queue_pending_in_line(queue_name, wanted)`: the same for one queue (the claim of named queues merges
  one such pick per queue).

Why functions: a queue table is often analyzed while it holds next to no pending job (a fresh install, or a big
finished history beside an empty queue). Planned with those statistics, the pick of a burst that arrives later
read every pending job by a bitmap scan and sorted them all (on disk): 27.7 ms for a claim's pick of 512 from
50,000 pending, against 0.49 ms by the ordered index, until autoanalyze caught up; a drain of 50,000 ran at
about a third of its rate. The functions are planned with sorts and bitmap scans off (as held_in_line of
migration 0015), which leaves the ordered scan of jobs_claim_idx (or jobs_queue_claim_idx): it reads `wanted`
entries and stops. Declared to return few rows (ROWS 1), so that the claim joins them to the table by its
primary key, never by a scan of it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

PENDING_IN_LINE = """
CREATE FUNCTION pgqueue.pending_in_line(wanted integer, paused text[])
RETURNS TABLE (id bigint, task text, queue text, priority integer, run_at timestamptz)
LANGUAGE sql VOLATILE
ROWS 1
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
    SELECT job.id, job.task, job.queue, job.priority, job.run_at
    FROM pgqueue.jobs AS job
    WHERE job.status = 'pending' AND job.run_at <= now()
      AND job.queue <> ALL(coalesce(paused, ARRAY[]::text[]))
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT greatest(wanted, 0)
    FOR UPDATE SKIP LOCKED
$$
"""

QUEUE_PENDING_IN_LINE = """
CREATE FUNCTION pgqueue.queue_pending_in_line(queue_name text, wanted integer)
RETURNS TABLE (id bigint, task text, priority integer, run_at timestamptz)
LANGUAGE sql VOLATILE
ROWS 1
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
    SELECT job.id, job.task, job.priority, job.run_at
    FROM pgqueue.jobs AS job
    WHERE job.queue = queue_name AND job.status = 'pending' AND job.run_at <= now()
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT greatest(wanted, 0)
    FOR UPDATE SKIP LOCKED
$$
"""


def upgrade() -> None:
    op.execute(PENDING_IN_LINE)
    op.execute(QUEUE_PENDING_IN_LINE)
    op.execute(
        "COMMENT ON FUNCTION pgqueue.pending_in_line(integer, text[]) IS "
        "'the pending jobs due now next in line, locked (SKIP LOCKED), for a claim'"
    )
    op.execute(
        "COMMENT ON FUNCTION pgqueue.queue_pending_in_line(text, integer) IS "
        "'the pending jobs due now next in line of one queue, locked (SKIP LOCKED), for a claim'"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION pgqueue.queue_pending_in_line(text, integer)")
    op.execute("DROP FUNCTION pgqueue.pending_in_line(integer, text[])")
