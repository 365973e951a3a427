"""A worker's acks written by a function whose plans find the jobs by primary key, so that they can be prepared.

- `pgqueue.record_outcomes(started_ids, started_attempts, ack_ids, ack_attempts, ack_results, worker)`: records
  the handler starts and the completions a worker buffered, and returns the completed jobs (id, limit_keys).
  It replaces the two data-modifying CTEs the busy worker's claim began with, and the standalone acks.
- Trigger `jobs_wake_held` (migration 0008) becomes a constraint trigger deferred to the end of the transaction.
- JIT off in every function planned with sequential scans off (below).

Why a function: a prepared statement is planned once for any values (a generic plan) and that plan is kept until
the table's statistics change. Planned beside a near-empty table, the acks found their jobs by a sequential
scan, and kept reading the whole table for each batch as it filled; so a claim that carried acks, and each batch of
acks sent alone, were planned for their arrays every time: about 2.3 ms of server CPU for a claim carrying 20
completions, on two cores that the server shares with the workers. Written in a function with sequential scans
off, the acks look each job up by its primary key whatever the statistics (as `claim_picked`, migration 0019,
does for the claim's own write), and the statements that call it are prepared again. Measured in a scratch
database with 200,000 jobs: a claim carrying 20 completions took 2.22 ms at p50 planned each time, 1.24 ms
prepared with its acks in a function.

Why the trigger is deferred: a claim that completes jobs hands the slots they free to held jobs in the same
statement (migration 0015), and tells `wake_held` so through `pgqueue.reused_slots`, which grant_limits sets
while the claim runs. Row triggers of a statement inside a function fire when that statement ends: here, before
the claim's grant_limits, which would have every freed slot woken for nothing (two row writes more per job while
a limit binds). Deferred to the commit, the trigger runs after the whole claim, as it did when the acks were
part of the claim's own statement. Nothing else can take a freed slot before that commit anyway.

This function, `claim_picked` and the workflow functions of migration 0010 planned with sequential scans off
(`resolve_dependents`, `rearm_dependents`, `settle_new_dependencies`) turn JIT compilation off. On PostgreSQL before
18 a plan step that a setting disables is priced at ten billion, far over `jit_above_cost`: a statement of such a
function that finds no other way (a scan of a table without a fitting index) would be compiled to machine code each
time it is planned, tens of milliseconds (66 ms for a look at `pgqueue.queues` in a trial of a claim written as one
function).

The function runs as its caller (the worker role needs EXECUTE, granted by `pgqueue grant`). Being VOLATILE,
its statements take snapshots of their own, after the calling statement's: the claim makes it run first, so that
the pick that follows sees the completions (and the dependents they released) written.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# The parameters are not named as columns (attempts, worker_id): with `use_column`, a column would win.
RECORD_OUTCOMES = """
CREATE FUNCTION pgqueue.record_outcomes(
    started_ids bigint[], started_attempts integer[], ack_ids bigint[], ack_attempts integer[], ack_results jsonb[],
    worker text
)
RETURNS TABLE (id bigint, limit_keys text[])
LANGUAGE plpgsql VOLATILE
ROWS 20
SET enable_seqscan = off
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    -- The handlers of these claimed jobs have started. Only jobs still running are written: a completion or
    -- failure records its start itself. The attempt and worker checks make a late write of a job that was
    -- rescued, cancelled or handed back a no-op instead of overwriting the newer state. The arrays are
    -- parallel, one element per job (statements.latest_attempts): a job's own are found at its id's position,
    -- not joined as a table, so that no plan loops over the batch once per running job.
    IF cardinality(started_ids) > 0 THEN
        UPDATE pgqueue.jobs AS job
        SET started_at = now()
        WHERE job.id = ANY(started_ids)
          AND job.attempts = started_attempts[array_position(started_ids, job.id)]
          AND job.status = 'running'
          AND job.worker_id = worker
          AND job.started_at IS NULL;
    END IF;
    IF cardinality(ack_ids) > 0 THEN
        RETURN QUERY
        UPDATE pgqueue.jobs AS job
        SET status = 'completed',
            started_at = coalesce(job.started_at, now()),
            finished_at = now(),
            lease_expires_at = NULL,
            result = ack_results[array_position(ack_ids, job.id)]
        WHERE job.id = ANY(ack_ids)
          AND job.attempts = ack_attempts[array_position(ack_ids, job.id)]
          AND job.status = 'running'
          AND job.worker_id = worker
        RETURNING job.id, job.limit_keys;
    END IF;
END
$$
"""

ARGUMENTS = "bigint[], integer[], bigint[], integer[], jsonb[], text"

WAKE_HELD_WHEN = "WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND OLD.limit_keys IS NOT NULL)"

# The earlier functions planned with sequential scans off (migrations 0010 and 0019): JIT off too (see above).
SEQSCAN_OFF_FUNCTIONS = (
    "pgqueue.claim_picked(bigint[], timestamptz[], pgqueue.limit_decision[], text, interval)",
    "pgqueue.resolve_dependents(bigint[], text[])",
    "pgqueue.rearm_dependents(bigint)",
    "pgqueue.settle_new_dependencies()",
)


def upgrade() -> None:
    op.execute(RECORD_OUTCOMES)
    for function in SEQSCAN_OFF_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} SET jit = off")
    op.execute(
        f"COMMENT ON FUNCTION pgqueue.record_outcomes({ARGUMENTS}) IS "
        "'a worker''s buffered handler starts and completions, written by primary key; returns the completed jobs'"
    )
    op.execute("DROP TRIGGER jobs_wake_held ON pgqueue.jobs")
    op.execute(
        "CREATE CONSTRAINT TRIGGER jobs_wake_held AFTER UPDATE OF status ON pgqueue.jobs "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW {WAKE_HELD_WHEN} EXECUTE FUNCTION pgqueue.wake_held()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_wake_held ON pgqueue.jobs")
    op.execute(
        f"CREATE TRIGGER jobs_wake_held AFTER UPDATE OF status ON pgqueue.jobs FOR EACH ROW {WAKE_HELD_WHEN} "
        "EXECUTE FUNCTION pgqueue.wake_held()"
    )
    op.execute(f"DROP FUNCTION pgqueue.record_outcomes({ARGUMENTS})")
    for function in SEQSCAN_OFF_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} RESET jit")
