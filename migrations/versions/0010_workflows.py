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
releases or cancels its dependents in the same statement, and the worker's statements stay as they are. It is a
statement trigger with transition tables: the parents one statement finishes are settled together, each dependent
counted down once by their number. The functions run as their owner (SECURITY DEFINER) so that the application
role needs no UPDATE on jobs to enqueue dependents, and with `enable_seqscan = off`: each of their statements
looks rows up by key, and on a table whose statistics are stale (new, or just filled) the planner would otherwise
scan job_dependencies once per level of a chain (measured: a 2,000-job chain cancelled in 5.8 s instead of well
under one).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OLD_STATUSES = "'pending', 'running', 'completed', 'failed', 'cancelled', 'held'"
NEW_STATUSES = "'pending', 'running', 'completed', 'failed', 'cancelled', 'held', 'waiting'"

# Parents finished (completed, failed for good, or cancelled), all those of one statement at once: settle their
# unresolved edges once each. Each dependent is counted down once per statement by the number of its parents that
# finished in it (one new row version, not one per parent: a fan-in of 10,000 parents would otherwise write 10,000
# versions of the callback's row), in id order, and released at 0 (its queue is notified). Dependents that cannot
# run after a failure are cancelled with every waiting job below them that would be cancelled in turn (the closure
# is one recursive query, so a chain of any length costs no deeper recursion: the cancellations fire the trigger
# again one level down, where they find nothing left to cancel).
RESOLVE_FUNCTION = """
CREATE FUNCTION pgqueue.resolve_dependents(parents bigint[], outcomes text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgqueue SET enable_seqscan = off AS $$
DECLARE
    counted_ids bigint[];
    counted_ns int[];
    doomed_ids bigint[];
    doomed_causes bigint[];
    doomed_outcomes text[];
    notified bigint;
BEGIN
    WITH finished AS (
        SELECT * FROM unnest(parents, outcomes) AS finished(id, outcome)
    ),
    edges AS (
        UPDATE pgqueue.job_dependencies AS edge
        SET parent_status = finished.outcome, resolved_at = now()
        FROM finished
        WHERE edge.depends_on = finished.id AND edge.parent_status IS NULL
        RETURNING edge.job_id, edge.depends_on, edge.on_failure, finished.outcome
    ),
    counted AS (
        SELECT job_id, count(*)::int AS n
        FROM edges
        WHERE outcome = 'completed' OR on_failure = 'run'
        GROUP BY job_id
    ),
    doomed AS (
        SELECT DISTINCT ON (job_id) job_id, depends_on, outcome
        FROM edges
        WHERE outcome <> 'completed' AND on_failure = 'cancel'
        ORDER BY job_id, depends_on
    )
    SELECT (SELECT array_agg(job_id ORDER BY job_id) FROM counted),
           (SELECT array_agg(n ORDER BY job_id) FROM counted),
           (SELECT array_agg(job_id ORDER BY job_id) FROM doomed),
           (SELECT array_agg(depends_on ORDER BY job_id) FROM doomed),
           (SELECT array_agg(outcome ORDER BY job_id) FROM doomed)
    INTO counted_ids, counted_ns, doomed_ids, doomed_causes, doomed_outcomes;

    IF counted_ids IS NOT NULL THEN
        WITH released AS (
            UPDATE pgqueue.jobs AS job
            SET waiting_for = job.waiting_for - counted.n,
                status = CASE WHEN job.waiting_for <= counted.n THEN 'pending' ELSE 'waiting' END
            FROM unnest(counted_ids, counted_ns) AS counted(id, n)
            WHERE job.id = counted.id AND job.status = 'waiting'
            RETURNING job.queue, job.status
        )
        SELECT count(pg_notify('pgqueue_jobs', json_build_object('queue', queue, 'run_at', 0)::text))
        INTO notified
        FROM (SELECT DISTINCT queue FROM released WHERE status = 'pending') AS woken;
    END IF;

    IF doomed_ids IS NOT NULL THEN
        WITH RECURSIVE below(id, cause, origin, outcome) AS (
            SELECT * FROM unnest(doomed_ids, doomed_causes, doomed_causes, doomed_outcomes)
            UNION
            SELECT edge.job_id, below.id, below.origin, below.outcome
            FROM below
            JOIN pgqueue.job_dependencies AS edge ON edge.depends_on = below.id
            JOIN pgqueue.jobs AS job ON job.id = edge.job_id
            WHERE edge.on_failure = 'cancel' AND edge.parent_status IS NULL AND job.status = 'waiting'
        ),
        chosen AS (  -- one cause per job (a job reached along several paths)
            SELECT DISTINCT ON (id) id, cause, origin, outcome FROM below ORDER BY id, origin, cause
        ),
        -- (By id, so that each statement is an index lookup whatever the size of the jobs table.)
        cancelled AS (
            UPDATE pgqueue.jobs AS job
            SET status = 'cancelled', finished_at = now(),
                error = format('cancelled: job %s, which it depends on, %s', chosen.origin,
                               CASE chosen.outcome WHEN 'failed' THEN 'failed' ELSE 'was cancelled' END)
            FROM chosen
            WHERE job.id = chosen.id AND job.status = 'waiting'
            RETURNING job.id
        )
        UPDATE pgqueue.job_dependencies AS edge
        SET cancelled_dependent = true
        FROM chosen
        WHERE edge.job_id = chosen.id AND edge.depends_on = chosen.cause
          AND chosen.id IN (SELECT id FROM cancelled);
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

# After every UPDATE of jobs (one call per statement, not per row): the updated rows that are finished and have
# unsettled edges go to resolve_dependents together; those unfinished again (retried) whose edges say they failed
# or were cancelled go to rearm_dependents. The row's own edges tell both apart, so only the new rows are captured
# (no OLD TABLE), and running rows are passed over at once. A statement trigger because a row trigger would count
# a fan-in's dependent down once per parent (each a new version of its row); and with no column list (`UPDATE OF
# status`), which PostgreSQL does not allow with transition tables. The cost for plain jobs is measured in
# benchmarks/workflows.py. No SET clauses here (each costs a save and restore per call); the functions it calls are
# schema-qualified and carry their own. It runs as the role that updated the job, which therefore needs SELECT on
# job_dependencies (the worker role has it, see store/grants.py).
FINISHED_FUNCTION = """
CREATE FUNCTION pgqueue.jobs_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    finished_ids bigint[];
    finished_outcomes text[];
    reopened_ids bigint[];
    reopened bigint;
BEGIN
    -- Running rows (claims, starts, lease renewals: most updates) are passed over without a look at the edges.
    SELECT array_agg(changed.id ORDER BY changed.id) FILTER (WHERE changed.finished),
           array_agg(changed.status ORDER BY changed.id) FILTER (WHERE changed.finished),
           array_agg(changed.id ORDER BY changed.id) FILTER (WHERE NOT changed.finished)
    INTO finished_ids, finished_outcomes, reopened_ids
    FROM (
        SELECT new_job.id, new_job.status, new_job.status IN ('completed', 'failed', 'cancelled') AS finished
        FROM new_jobs AS new_job
        WHERE new_job.status <> 'running'
    ) AS changed
    WHERE EXISTS (
        SELECT FROM pgqueue.job_dependencies AS edge
        WHERE edge.depends_on = changed.id
          AND CASE WHEN changed.finished
                   THEN edge.parent_status IS NULL  -- finished: edges to settle
                   ELSE edge.parent_status IN ('failed', 'cancelled')  -- unfinished again: edges to re-arm
              END
    );
    IF finished_ids IS NOT NULL THEN
        PERFORM pgqueue.resolve_dependents(finished_ids, finished_outcomes);
    END IF;
    -- (set while rearm_dependents re-arms a whole chain itself)
    IF reopened_ids IS NOT NULL AND current_setting('pgqueue.rearming', true) IS DISTINCT FROM 'on' THEN
        FOREACH reopened IN ARRAY reopened_ids LOOP
            PERFORM pgqueue.rearm_dependents(reopened);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$
"""

FINISHED_TRIGGER = """
CREATE TRIGGER jobs_settle_dependents
AFTER UPDATE ON pgqueue.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.jobs_updated()
"""

# New edges whose parent has already finished are settled at once, as if the parent finished now. The parents are
# locked FOR SHARE first: a parent finishing at this moment in another transaction either committed before (and is
# seen finished here, the lock re-reading its newest version) or waits for this transaction, and its trigger then
# sees these edges. The lock is held until the enqueueing transaction ends.
EDGES_FUNCTION = """
CREATE FUNCTION pgqueue.settle_new_dependencies() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgqueue SET enable_seqscan = off AS $$
DECLARE
    finished_ids bigint[];
    finished_outcomes text[];
BEGIN
    SELECT array_agg(parent.id ORDER BY parent.id), array_agg(parent.status ORDER BY parent.id)
    INTO finished_ids, finished_outcomes
    FROM (
        SELECT job.id, job.status
        FROM pgqueue.jobs AS job
        WHERE job.id IN (SELECT depends_on FROM new_edges)
        ORDER BY job.id
        FOR SHARE OF job
    ) AS parent
    WHERE parent.status IN ('completed', 'failed', 'cancelled');
    IF finished_ids IS NOT NULL THEN
        PERFORM pgqueue.resolve_dependents(finished_ids, finished_outcomes);
    END IF;
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
    op.execute("DROP FUNCTION pgqueue.jobs_updated()")
    op.execute("DROP FUNCTION pgqueue.rearm_dependents(bigint)")
    op.execute("DROP FUNCTION pgqueue.resolve_dependents(bigint[], text[])")
    op.drop_table("job_dependencies", schema="pgqueue")
    op.drop_column("jobs", "waiting_for", schema="pgqueue")
    # Waiting jobs cannot be kept without their dependencies: they become pending (runnable) rather than lost.
    op.execute("UPDATE pgqueue.jobs SET status = 'pending' WHERE status = 'waiting'")
    op.execute("ALTER DOMAIN pgqueue.job_status DROP CONSTRAINT job_status_check")
    op.execute(f"ALTER DOMAIN pgqueue.job_status ADD CONSTRAINT job_status_check CHECK (VALUE IN ({OLD_STATUSES}))")
