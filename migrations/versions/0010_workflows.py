"""Workflows: jobs that wait for other jobs (status `waiting`, table `job_dependencies`), released by triggers.

- `jobs.status` may be `waiting`: the job has parents that have not finished. The claim only ever takes `pending`
  jobs, so a waiting job is never claimed, and the claim's partial indexes never hold it.
- `jobs.waiting_for`: how many of its parents have not finished (or, for a job that runs whatever its parents'
  outcome, not finished in any way). Release is decided by counting down this column on the dependent's own row:
  its row lock serializes parents that finish at the same instant in different transactions, and each sees the
  others' decrements (an UPDATE re-reads the newest version of the row it updates), so exactly one of them takes
  it to 0 and releases the job. Re-counting the parents instead would read the statement's snapshot and could
  miss a parent committed a moment ago, or release twice.
- `job_dependencies(job_id, depends_on)`: one row per edge; `parent_status` is the parent's outcome once it has
  finished (NULL while unfinished), so an edge counts down once however often its parent's row changes.
  `on_failure` is the dependent's policy: `cancel` (the default: a parent that failed for good or was cancelled
  cancels it, and its own dependents, recursively) or `run`. `cancelled_dependent` marks the edge whose parent's
  failure cancelled the dependent, so that retrying that parent re-arms it.

Release happens in a trigger on the jobs table rather than in each statement that finishes a job: every way a
job finishes (the worker's batched acks, a failure, a rescue's last attempt, `cancel`, an UPDATE by hand) then
releases or cancels its dependents in the same statement, and the worker's statements stay as they are. The
trigger is a row trigger whose WHEN clause (evaluated without calling the function) picks only the rows whose
status changes to or away from a finished one: a claim or a lease renewal never calls it. The functions run as
their owner (SECURITY DEFINER) so that the application role needs no UPDATE on jobs to enqueue dependents, and
with `enable_seqscan = off`: each of their statements looks rows up by key, and on a table whose statistics are
stale (new, or just filled) the planner would otherwise scan job_dependencies once per level of a chain (measured:
a 2,000-job chain cancelled in 5.8 s instead of well under one).

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_STATUSES = "'pending', 'running', 'completed', 'failed', 'cancelled'"
NEW_STATUSES = "'pending', 'running', 'completed', 'failed', 'cancelled', 'waiting'"

# A parent finished (completed, failed for good, or cancelled): settle its unresolved edges once each. Dependents
# that count this outcome down are released when they reach 0 (and their queue is notified); dependents that
# cannot run after a failure are cancelled, with every waiting job below them that would be cancelled in turn
# (the closure is computed here, in one statement, so a chain of any length costs no deeper recursion: the
# cancellations fire this trigger again one level down, where they find nothing left to cancel).
RESOLVE_FUNCTION = """
CREATE FUNCTION pgqueue.resolve_dependents(parent_id bigint, outcome text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgqueue SET enable_seqscan = off AS $$
DECLARE
    counted bigint[];
    doomed bigint[];
    notified bigint;
    reason text;
    below_ids bigint[];
    below_causes bigint[];
BEGIN
    WITH edges AS (
        UPDATE pgqueue.job_dependencies AS edge
        SET parent_status = outcome, resolved_at = now()
        WHERE edge.depends_on = parent_id AND edge.parent_status IS NULL
        RETURNING edge.job_id, edge.on_failure
    )
    SELECT array_agg(job_id ORDER BY job_id) FILTER (WHERE outcome = 'completed' OR on_failure = 'run'),
           array_agg(job_id ORDER BY job_id) FILTER (WHERE outcome <> 'completed' AND on_failure = 'cancel')
    INTO counted, doomed
    FROM edges;

    IF counted IS NOT NULL THEN
        WITH released AS (
            UPDATE pgqueue.jobs AS job
            SET waiting_for = job.waiting_for - 1,
                status = CASE WHEN job.waiting_for <= 1 THEN 'pending' ELSE 'waiting' END
            WHERE job.id = ANY(counted) AND job.status = 'waiting'
            RETURNING job.queue, job.status
        )
        SELECT count(pg_notify('pgqueue_jobs', json_build_object('queue', queue, 'run_at', 0)::text))
        INTO notified
        FROM (SELECT DISTINCT queue FROM released WHERE status = 'pending') AS woken;
    END IF;

    IF doomed IS NOT NULL THEN
        reason := format('cancelled: job %s, which it depends on, %s', parent_id,
                         CASE outcome WHEN 'failed' THEN 'failed' ELSE 'was cancelled' END);
        WITH RECURSIVE below(id, cause) AS (
            SELECT unnest(doomed), parent_id
            UNION
            SELECT edge.job_id, below.id
            FROM below
            JOIN pgqueue.job_dependencies AS edge ON edge.depends_on = below.id
            JOIN pgqueue.jobs AS job ON job.id = edge.job_id
            WHERE edge.on_failure = 'cancel' AND edge.parent_status IS NULL AND job.status = 'waiting'
        )
        SELECT array_agg(id), array_agg(cause) INTO below_ids, below_causes FROM below;
        -- (By id arrays, so that each statement is an index lookup whatever the size of the jobs table.)
        WITH cancelled AS (
            UPDATE pgqueue.jobs AS job
            SET status = 'cancelled', finished_at = now(), error = reason
            WHERE job.id = ANY(below_ids) AND job.status = 'waiting'
            RETURNING job.id
        )
        UPDATE pgqueue.job_dependencies AS edge
        SET cancelled_dependent = true
        FROM unnest(below_ids, below_causes) AS below(id, cause)
        WHERE edge.job_id = below.id AND edge.depends_on = below.cause
          AND below.id IN (SELECT id FROM cancelled);
    END IF;
END
$$
"""

# A parent left `failed` or `cancelled` for a status that is not finished (retry-failed, or a re-armed job): its
# edges are unresolved again. A dependent that runs whatever the outcome and still waits counts it again; a
# dependent this parent's failure had cancelled goes back to waiting when no other parent of it has failed
# (else the mark moves to that parent, whose retry re-arms it). The jobs below a re-armed one are re-armed the
# same way, level by level in this one call: the trigger that the re-arming itself fires is told to stand aside
# (a transaction-local setting), so a chain of any length costs no deeper recursion.
REARM_FUNCTION = """
CREATE FUNCTION pgqueue.rearm_dependents(parent_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgqueue SET enable_seqscan = off AS $$
DECLARE
    frontier bigint[] := ARRAY[parent_id];
    rearmed bigint[];
    reset record;
    other bigint;
BEGIN
    PERFORM set_config('pgqueue.rearming', 'on', true);
    WHILE cardinality(frontier) > 0 LOOP
        rearmed := ARRAY[]::bigint[];
        FOR reset IN
            SELECT edge.job_id, edge.depends_on, edge.on_failure, edge.cancelled_dependent AS was_cause, job.status
            FROM pgqueue.job_dependencies AS edge
            JOIN pgqueue.jobs AS job ON job.id = edge.job_id
            WHERE edge.depends_on = ANY(frontier) AND edge.parent_status IN ('failed', 'cancelled')
            ORDER BY edge.job_id, edge.depends_on
            FOR UPDATE OF edge
        LOOP
            UPDATE pgqueue.job_dependencies
            SET parent_status = NULL, resolved_at = NULL, cancelled_dependent = false
            WHERE job_id = reset.job_id AND depends_on = reset.depends_on;
            IF reset.status = 'waiting' AND reset.on_failure = 'run' THEN
                UPDATE pgqueue.jobs SET waiting_for = waiting_for + 1 WHERE id = reset.job_id AND status = 'waiting';
            ELSIF reset.status = 'cancelled' AND reset.was_cause THEN
                SELECT depends_on INTO other
                FROM pgqueue.job_dependencies
                WHERE job_id = reset.job_id AND parent_status IN ('failed', 'cancelled')
                ORDER BY depends_on LIMIT 1;
                IF other IS NOT NULL THEN
                    UPDATE pgqueue.job_dependencies SET cancelled_dependent = true
                    WHERE job_id = reset.job_id AND depends_on = other;
                ELSE
                    UPDATE pgqueue.jobs AS job
                    SET status = 'waiting', finished_at = NULL, error = NULL,
                        waiting_for = (SELECT count(*) FROM pgqueue.job_dependencies AS edge
                                       WHERE edge.job_id = job.id AND edge.parent_status IS NULL)
                    WHERE job.id = reset.job_id AND job.status = 'cancelled';
                    IF FOUND THEN
                        rearmed := rearmed || reset.job_id;
                    END IF;
                END IF;
            END IF;
        END LOOP;
        frontier := rearmed;
    END LOOP;
    PERFORM set_config('pgqueue.rearming', '', true);
END
$$
"""

# Called for every job that finishes, so kept to a dispatch: no SET clauses (each costs a save and restore of the
# setting per call); the functions it calls are schema-qualified and carry their own. It runs as the role that
# changed the job, which therefore needs SELECT on job_dependencies (the worker role has it, see store/grants.py).
FINISHED_FUNCTION = """
CREATE FUNCTION pgqueue.job_status_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('completed', 'failed', 'cancelled') THEN
        -- Most jobs have no dependents: one probe of the index on depends_on decides, without the call.
        IF EXISTS (SELECT FROM pgqueue.job_dependencies WHERE depends_on = NEW.id) THEN
            PERFORM pgqueue.resolve_dependents(NEW.id, NEW.status);
        END IF;
    ELSIF current_setting('pgqueue.rearming', true) IS DISTINCT FROM 'on' THEN
        -- (set while rearm_dependents re-arms a whole chain itself)
        PERFORM pgqueue.rearm_dependents(NEW.id);
    END IF;
    RETURN NULL;
END
$$
"""

FINISHED_TRIGGER = """
CREATE TRIGGER jobs_settle_dependents
AFTER UPDATE OF status ON pgqueue.jobs
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
      AND (NEW.status IN ('completed', 'failed', 'cancelled') OR OLD.status IN ('failed', 'cancelled')))
EXECUTE FUNCTION pgqueue.job_status_changed()
"""

# New edges whose parent has already finished are settled at once, as if the parent finished now. The parents are
# locked FOR SHARE first: a parent finishing at this moment in another transaction either committed before (and is
# seen finished here, the lock re-reading its newest version) or waits for this transaction, and its trigger then
# sees these edges. The lock is held until the enqueueing transaction ends.
EDGES_FUNCTION = """
CREATE FUNCTION pgqueue.settle_new_dependencies() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgqueue SET enable_seqscan = off AS $$
DECLARE
    parent record;
BEGIN
    FOR parent IN
        SELECT job.id, job.status
        FROM pgqueue.jobs AS job
        WHERE job.id IN (SELECT depends_on FROM new_edges)
        ORDER BY job.id
        FOR SHARE OF job
    LOOP
        IF parent.status IN ('completed', 'failed', 'cancelled') THEN
            PERFORM pgqueue.resolve_dependents(parent.id, parent.status);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$
"""

EDGES_TRIGGER = """
CREATE TRIGGER job_dependencies_settle_new
AFTER INSERT ON pgqueue.job_dependencies
REFERENCING NEW TABLE AS new_edges
FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.settle_new_dependencies()
"""


def upgrade() -> None:
    op.execute("ALTER DOMAIN pgqueue.job_status DROP CONSTRAINT job_status_check")
    op.execute(f"ALTER DOMAIN pgqueue.job_status ADD CONSTRAINT job_status_check CHECK (VALUE IN ({NEW_STATUSES}))")
    op.add_column(
        "jobs",
        sa.Column(
            "waiting_for",
            sa.Integer,
            nullable=False,
            server_default="0",
            comment="parents not finished yet (while waiting)",
        ),
        schema="pgqueue",
    )
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.BigInteger, sa.ForeignKey("pgqueue.jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("depends_on", sa.BigInteger, sa.ForeignKey("pgqueue.jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("on_failure", sa.Text, nullable=False, server_default="cancel"),
        sa.Column("parent_status", sa.Text, comment="the parent's outcome once it finished; null before"),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("cancelled_dependent", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.PrimaryKeyConstraint("job_id", "depends_on", name="job_dependencies_pkey"),
        sa.CheckConstraint("job_id <> depends_on", name="job_dependencies_not_itself"),
        sa.CheckConstraint("on_failure IN ('cancel', 'run')", name="job_dependencies_on_failure_check"),
        schema="pgqueue",
    )
    op.create_index("job_dependencies_parent_idx", "job_dependencies", ["depends_on"], schema="pgqueue")
    op.execute(RESOLVE_FUNCTION)
    op.execute(REARM_FUNCTION)
    op.execute(FINISHED_FUNCTION)
    op.execute(FINISHED_TRIGGER)
    op.execute(EDGES_FUNCTION)
    op.execute(EDGES_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER job_dependencies_settle_new ON pgqueue.job_dependencies")
    op.execute("DROP TRIGGER jobs_settle_dependents ON pgqueue.jobs")
    op.execute("DROP FUNCTION pgqueue.settle_new_dependencies()")
    op.execute("DROP FUNCTION pgqueue.job_status_changed()")
    op.execute("DROP FUNCTION pgqueue.rearm_dependents(bigint)")
    op.execute("DROP FUNCTION pgqueue.resolve_dependents(bigint, text)")
    op.drop_table("job_dependencies", schema="pgqueue")
    op.drop_column("jobs", "waiting_for", schema="pgqueue")
    # Waiting jobs cannot be kept without their dependencies: they become pending (runnable) rather than lost.
    op.execute("UPDATE pgqueue.jobs SET status = 'pending' WHERE status = 'waiting'")
    op.execute("ALTER DOMAIN pgqueue.job_status DROP CONSTRAINT job_status_check")
    op.execute(f"ALTER DOMAIN pgqueue.job_status ADD CONSTRAINT job_status_check CHECK (VALUE IN ({OLD_STATUSES}))")
