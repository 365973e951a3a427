"""The claim's write of the jobs it picked, planned by primary key whatever the statistics.

- `pgqueue.claim_picked(picked_ids, picked_due, decisions, worker, lease)`: marks the picked jobs running (or held,
  or deferred, as `decisions` say) and returns them, as the claim's last step.
- `pgqueue.limit_decision`: the row type of `grant_limits`' answer, so that a claim hands its decisions over as
  one array.

Why a function: the worker prepares its claim, and PostgreSQL plans a prepared statement once for any values
(a generic plan) and keeps that plan until the table's statistics change. A worker that starts beside a near
empty table (a fresh install, or a history pruned away) therefore keeps a plan made for a table of one page,
where a sequential scan is the cheapest way to find the picked jobs. As a burst fills the table, that scan reads
every row for each claim: a claim of 20 read 5,030 rows (plan with a sequential scan, hash join) in a table of
5,000, and its time grew with the table until autoanalyze invalidated the plan. Planned inside a function with
sequential scans off, the write looks each picked job up by its primary key, whatever the statistics said when
it was planned. The pick itself is migration 0017's functions; the limits' are grant_limits and held_in_line.

The function runs as its caller (the worker role needs EXECUTE, granted by `pgqueue grant`) and, being
VOLATILE, in a snapshot of its own taken after the pick's: a job committed after the claim statement began,
but locked by its pick, is written too rather than left pending under a lock for nothing.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

LIMIT_DECISION = """
CREATE TYPE pgqueue.limit_decision AS (
    job_id bigint, keys text[], held_by text, deferred_by text, due_at timestamptz, no_slot boolean,
    rated boolean, stripe smallint
)
"""

CLAIM_PICKED = """
CREATE FUNCTION pgqueue.claim_picked(
    picked_ids bigint[], picked_due timestamptz[], decisions pgqueue.limit_decision[], worker text, lease interval
)
RETURNS TABLE (
    id bigint, queue text, task text, args jsonb, attempts integer, max_attempts integer, held_by text,
    priority integer, run_at timestamptz, trace_context jsonb, deferred_by text, was_due timestamptz,
    rated boolean, slotted boolean
)
LANGUAGE plpgsql VOLATILE
ROWS 20
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    -- A picked job without a decision is not limited: it runs. One with a decision runs, is held (`held_by`),
    -- is deferred to when its rate has room (`deferred_by`, `due_at`: stays pending), or is left alone
    -- (`no_slot`: the caller answers it). Held and deferred jobs keep their attempt count: they did not start.
    RETURN QUERY
    UPDATE pgqueue.jobs AS job
    SET status = CASE WHEN decided.held_by IS NOT NULL THEN 'held'
                      WHEN decided.deferred_by IS NOT NULL THEN 'pending'
                      ELSE 'running' END,
        attempts = CASE WHEN decided.held_by IS NULL AND decided.deferred_by IS NULL
                        THEN least(job.attempts, 2147483646) + 1 ELSE job.attempts END,
        started_at = NULL,
        finished_at = NULL,
        worker_id = CASE WHEN decided.held_by IS NULL AND decided.deferred_by IS NULL THEN worker END,
        lease_expires_at = CASE WHEN decided.held_by IS NULL AND decided.deferred_by IS NULL
                                THEN now() + lease END,
        limit_keys = decided.keys,
        limit_stripe = decided.stripe,
        held_by = decided.held_by,
        run_at = coalesce(decided.due_at, job.run_at),
        deferred_by = decided.deferred_by
    FROM unnest(picked_ids, picked_due) AS picked(job_id, due)
    LEFT JOIN unnest(decisions) AS decided ON decided.job_id = picked.job_id
    WHERE job.id = picked.job_id AND decided.no_slot IS NOT TRUE
    RETURNING job.id, job.queue::text, job.task::text, job.args, job.attempts, job.max_attempts::integer,
              job.held_by, job.priority, job.run_at, job.trace_context, job.deferred_by, picked.due,
              coalesce(decided.rated, false),
              decided.keys IS NOT NULL OR decided.held_by IS NOT NULL;
END
$$
"""

ARGUMENTS = "bigint[], timestamptz[], pgqueue.limit_decision[], text, interval"


def upgrade() -> None:
    op.execute(LIMIT_DECISION)
    op.execute(CLAIM_PICKED)
    op.execute(
        f"COMMENT ON FUNCTION pgqueue.claim_picked({ARGUMENTS}) IS "
        "'a claim''s write of the jobs it picked and the limits'' decisions, by primary key'"
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION pgqueue.claim_picked({ARGUMENTS})")
    op.execute("DROP TYPE pgqueue.limit_decision")
