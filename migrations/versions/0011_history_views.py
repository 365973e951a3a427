"""History in SQL: a job's `meta`, and documented views of attempts, of each task's hours, of stuck jobs.

- `jobs.meta jsonb` (NULL unless given at enqueue: `queue.enqueue(..., meta={"order_id": 42})`) and
  `jobs_meta_idx USING gin (meta jsonb_path_ops) WHERE meta IS NOT NULL`: "all jobs of order 42" is
  `WHERE meta @> '{"order_id": 42}'`, one index lookup whatever the args look like. Partial, so a job enqueued
  without meta adds no index entry (its cost is measured by benchmarks/meta.py: see the README).
- `pgqueue.attempts`: one row per attempt, from the error history (each failed or interrupted attempt is an
  entry of `jobs.errors`) and the job's current attempt (running, completed, or cut short by a cancel).
  Entries written by hand are read defensively: a time or attempt number that does not parse reads as NULL, an
  entry that is not an object is skipped, so one bad row cannot make the view fail.
- `pgqueue.task_hours`: per task and hour (of the attempts' ends): completed, failed, retried, and p50/p95 of run
  time and of queue wait (known for each job's latest attempt only: a retry moves `run_at`).
- `pgqueue.stuck_jobs`: running jobs whose lease expired (their worker is gone; the next rescue takes them) and
  pending jobs due for more than a minute (no worker is taking them: none running, too busy, or the queue paused).

The views are plain views over `jobs`: reading them costs a scan of what they cover (filter `task_hours` by
hour, `attempts` by job_id). The worker role may read them (`pgqueue grant`); the application role may not (they
show args and errors).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Reading hand-written history entries without failing: a time or a number that does not parse is NULL.
_SAFE_TIME = """
CREATE FUNCTION pgqueue.as_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$
"""

_ATTEMPTS = r"""
CREATE VIEW pgqueue.attempts AS
SELECT job.id AS job_id,
       job.queue,
       job.task,
       CASE WHEN entry.v ->> 'attempt' ~ '^[0-9]{1,9}$' THEN (entry.v ->> 'attempt')::int END AS attempt,
       pgqueue.as_timestamptz(entry.v ->> 'started_at') AS started_at,
       pgqueue.as_timestamptz(entry.v ->> 'at') AS finished_at,
       CASE
           WHEN entry.v ->> 'counted' = 'false' THEN 'interrupted'
           WHEN job.status = 'failed' AND entry.n = jsonb_array_length(job.errors) THEN 'failed'
           ELSE 'retried'
       END AS outcome,
       entry.v ->> 'error' AS error,
       entry.v ->> 'traceback' AS traceback,
       entry.v ->> 'worker' AS worker,
       NULL::interval AS queue_wait,
       entry.n::int AS history_index
FROM pgqueue.jobs AS job
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(job.errors) = 'array' THEN job.errors ELSE '[]'::jsonb END
) WITH ORDINALITY AS entry(v, n)
WHERE jsonb_typeof(entry.v) = 'object'
UNION ALL
SELECT job.id,
       job.queue,
       job.task,
       job.attempts,
       job.started_at,
       CASE WHEN job.status = 'running' THEN NULL ELSE job.finished_at END,
       job.status,
       NULL,
       NULL,
       job.worker_id,
       greatest(job.started_at - job.run_at, interval '0'),
       NULL
FROM pgqueue.jobs AS job
WHERE job.started_at IS NOT NULL
  AND (
      job.status IN ('running', 'completed')
      -- a cancel cut this attempt short, unless it had already ended (failed, to be retried) before the cancel
      OR (job.status = 'cancelled' AND NOT (
          jsonb_typeof(job.errors) = 'array'
          AND job.errors @> jsonb_build_array(jsonb_build_object('attempt', job.attempts, 'counted', true))
      ))
  )
"""

_TASK_HOURS = """
CREATE VIEW pgqueue.task_hours AS
SELECT task,
       date_trunc('hour', finished_at) AS hour,
       count(*) FILTER (WHERE outcome = 'completed') AS completed,
       count(*) FILTER (WHERE outcome = 'failed') AS failed,
       count(*) FILTER (WHERE outcome = 'retried') AS retried,
       count(*) FILTER (WHERE outcome = 'interrupted') AS interrupted,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - started_at) AS run_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY finished_at - started_at) AS run_p95,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY queue_wait) AS wait_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY queue_wait) AS wait_p95
FROM pgqueue.attempts
WHERE finished_at IS NOT NULL
GROUP BY task, date_trunc('hour', finished_at)
"""

_STUCK = """
CREATE VIEW pgqueue.stuck_jobs AS
SELECT id, queue, task, status, 'lease expired' AS problem, lease_expires_at AS since,
       now() - lease_expires_at AS overdue_by, worker_id, attempts, max_attempts
FROM pgqueue.jobs
WHERE status = 'running' AND lease_expires_at < now()
UNION ALL
SELECT job.id, job.queue, job.task, job.status,
       CASE WHEN paused.name IS NOT NULL THEN 'queue paused' ELSE 'overdue' END,
       job.run_at, now() - job.run_at, NULL, job.attempts, job.max_attempts
FROM pgqueue.jobs AS job
LEFT JOIN pgqueue.queues AS paused ON paused.name = job.queue AND paused.paused
WHERE job.status = 'pending' AND job.run_at < now() - interval '1 minute'
"""

_COMMENTS = [
    "COMMENT ON VIEW pgqueue.attempts IS 'One row per attempt of each job: its failed or interrupted attempts "
    "(the error history) and its current one (running, completed, or cut short by a cancel)'",
    "COMMENT ON COLUMN pgqueue.attempts.outcome IS 'running | completed | cancelled | failed (the job''s last) | "
    "retried (the job ran or will run again) | interrupted (not counted: hand-back, or lost before it started)'",
    "COMMENT ON COLUMN pgqueue.attempts.queue_wait IS 'from due to started; the job''s current attempt only'",
    "COMMENT ON VIEW pgqueue.task_hours IS 'Per task and hour of the attempts'' ends: outcomes, run time and "
    "queue wait percentiles'",
    "COMMENT ON VIEW pgqueue.stuck_jobs IS 'Running jobs whose lease expired and pending jobs due over a minute ago'",
]


def upgrade() -> None:
    op.execute("ALTER TABLE pgqueue.jobs ADD COLUMN meta jsonb")
    op.execute("COMMENT ON COLUMN pgqueue.jobs.meta IS 'what the job is about, given at enqueue (order id, tenant)'")
    op.execute(
        "CREATE INDEX IF NOT EXISTS jobs_meta_idx ON pgqueue.jobs USING gin (meta jsonb_path_ops) "
        "WHERE meta IS NOT NULL"
    )
    op.execute(_SAFE_TIME)
    op.execute(_ATTEMPTS)
    op.execute(_TASK_HOURS)
    op.execute(_STUCK)
    for statement in _COMMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW pgqueue.stuck_jobs")
    op.execute("DROP VIEW pgqueue.task_hours")
    op.execute("DROP VIEW pgqueue.attempts")
    op.execute("DROP FUNCTION pgqueue.as_timestamptz(text)")
    op.execute("DROP INDEX pgqueue.jobs_meta_idx")
    op.execute("ALTER TABLE pgqueue.jobs DROP COLUMN meta")
