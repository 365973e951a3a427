"""The idle worker's claim while no limit is declared: one function, whose plans are kept.

- `pgqueue.claim_unlimited(wanted, wanted_queues, worker, lease)`: up to `wanted` pending jobs due now (of any queue
  not paused, or of the named ones), marked running for `worker` and returned in claim order. While any limit
  exists (a row of `pgqueue.limits`) it claims nothing and answers one row of NULLs: the caller sends the full
  claim, which decides the limits.

Why: an idle worker's claim is the pick-up's round trip. The full claim (store/queries.py) is one statement of a
dozen CTEs for the limits, the held jobs and the slots that completions free; for an idle worker with no limit it
finds nothing to do in any of them, yet its executor sets each one up every time. Written as one function, the
claim's outer statement is a single function call, and the function's two statements keep their plans: measured
from a plain client against a table of 20,000 jobs, a claim of one job took 0.57 ms at p50 (0.70 at p90) this
way, against 0.78 (0.93) for the full claim, both prepared.

The function is planned with sequential scans, bitmap scans and sorts off, as migrations 0017 and 0019 do, so that
its kept plans walk jobs_claim_idx (or jobs_queue_claim_idx) and find the picked jobs by primary key whatever the
statistics said when they were made; JIT is off (see migration 0021). It runs as its caller: the worker role needs
EXECUTE, granted by `pgqueue grant`.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# The pick is pending_in_line's (migration 0017) and the write is claim_picked's (migration 0019) for a job no limit
# decides on, written out here rather than called: this is the idle worker's pick-up, and calling them gave back
# about half of what the function saves. A claim of one job from a plain client, prepared, p50 of two runs
# alternating in one session: 0.80 / 0.77 ms written out, 0.87 / 0.86 ms calling pending_in_line and claim_picked,
# 0.97 / 0.94 ms the full claim. tests/integration/test_claim_unlimited.py holds this function's answers and the
# rows it writes to the full claim's, so the copies cannot drift apart unnoticed.
CLAIM_UNLIMITED = """
CREATE FUNCTION pgqueue.claim_unlimited(wanted integer, wanted_queues text[], worker text, lease interval)
RETURNS TABLE (
    id bigint, queue text, task text, args text, attempts integer, max_attempts integer, waited float8,
    trace_context text
)
LANGUAGE plpgsql VOLATILE
ROWS 20
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    paused text[];
BEGIN
    IF EXISTS (SELECT FROM pgqueue.limits) THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer, NULL::integer,
                            NULL::float8, NULL::text;
        RETURN;
    END IF;
    -- Read once per claim, like the full claim: the table decides, never a notification.
    SELECT coalesce(array_agg(q.name), ARRAY[]::text[]) INTO paused FROM pgqueue.queues AS q WHERE q.paused;
    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT job.id, job.priority, job.run_at
        FROM pgqueue.jobs AS job
        WHERE wanted_queues IS NULL
          AND job.status = 'pending' AND job.run_at <= now() AND job.queue <> ALL(paused)
        ORDER BY job.priority DESC, job.run_at, job.id
        LIMIT greatest(wanted, 0)
        FOR UPDATE SKIP LOCKED
    ),
    picked_of_queues AS MATERIALIZED (
        -- One walk of jobs_queue_claim_idx per named queue not paused, then the best `wanted` of those (the
        -- others are unlocked when the statement ends).
        SELECT candidate.id, candidate.priority, candidate.run_at
        FROM unnest(wanted_queues) AS named(queue)
        CROSS JOIN LATERAL pgqueue.queue_pending_in_line(named.queue, wanted) AS candidate
        WHERE named.queue <> ALL(paused)
        ORDER BY candidate.priority DESC, candidate.run_at, candidate.id
        LIMIT greatest(wanted, 0)
    ),
    claimed AS (
        UPDATE pgqueue.jobs AS job
        SET status = 'running',
            attempts = least(job.attempts, 2147483646) + 1,
            started_at = NULL,
            finished_at = NULL,
            worker_id = worker,
            lease_expires_at = now() + lease,
            limit_keys = NULL,
            limit_stripe = NULL,
            held_by = NULL,
            deferred_by = NULL
        FROM (SELECT * FROM picked UNION ALL SELECT * FROM picked_of_queues) AS chosen
        WHERE job.id = chosen.id
        RETURNING job.id, job.queue::text AS queue, job.task::text AS task, job.args::text AS args, job.attempts,
                  job.max_attempts::integer AS max_attempts,
                  extract(epoch FROM now() - chosen.run_at)::float8 AS waited,
                  job.trace_context::text AS trace_context, chosen.priority, chosen.run_at AS was_due
    )
    SELECT claimed.id, claimed.queue, claimed.task, claimed.args, claimed.attempts, claimed.max_attempts,
           claimed.waited, claimed.trace_context
    FROM claimed
    ORDER BY claimed.priority DESC, claimed.was_due, claimed.id;
END
$$
"""

ARGUMENTS = "integer, text[], text, interval"


def upgrade() -> None:
    op.execute(CLAIM_UNLIMITED)
    op.execute(
        f"COMMENT ON FUNCTION pgqueue.claim_unlimited({ARGUMENTS}) IS "
        "'an idle worker''s claim while no limit exists; one row of NULLs while one does'"
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION pgqueue.claim_unlimited({ARGUMENTS})")
