-- Workflows: jobs that wait for other jobs. The release itself is not here: the triggers of migration 0010
-- settle a job's dependents in the statement that finishes it (complete, fail for good, rescue, cancel, or an
-- UPDATE by hand), so every statement that finishes a job releases, with no change to it.

-- name: insert_jobs_after
-- A batch of jobs and the edges between them, in one statement. Ids are drawn first (by reserve_job_ids, as
-- for COPY) so that an edge can name a job of the same batch. A job with parents starts `waiting`, counting
-- all of them; the statement trigger on job_dependencies then settles the edges whose parent had already
-- finished (a completed parent counts down at once, a failed or cancelled one applies the policy). An id that
-- names no job fails the foreign key, and nothing is inserted.
WITH ids AS (
    SELECT id, row_number() OVER (ORDER BY id) AS idx
    FROM pgqueue.reserve_job_ids(cardinality(%(tasks)s::text[])) AS id
),
batch AS (
    SELECT *
    FROM unnest(
        %(queues)s::text[], %(tasks)s::text[], %(args)s::jsonb[], %(priorities)s::int[],
        %(max_attempts)s::int[], %(run_ats)s::timestamptz[], %(delays)s::interval[], %(waiting_for)s::int[],
        %(metas)s::jsonb[], %(trace_contexts)s::jsonb[]
    ) WITH ORDINALITY AS batch(
        queue, task, args, priority, max_attempts, run_at, delay, waiting_for, meta, trace_context, idx
    )
),
inserted AS (
    INSERT INTO pgqueue.jobs (
        id, queue, task, args, priority, max_attempts, run_at, status, waiting_for, meta, trace_context
    )
    SELECT ids.id, batch.queue, batch.task, batch.args, batch.priority, batch.max_attempts,
           COALESCE(batch.run_at, now() + batch.delay),
           CASE WHEN batch.waiting_for > 0 THEN 'waiting' ELSE 'pending' END,
           batch.waiting_for, batch.meta, batch.trace_context
    FROM batch
    JOIN ids ON ids.idx = batch.idx
),
edges AS (
    INSERT INTO pgqueue.job_dependencies (job_id, depends_on, on_failure)
    -- An id given for a job of this very statement (guessed: ids are drawn here) is made a self-edge, which the
    -- table's CHECK refuses: edges within a call go through positions, which are checked for cycles.
    SELECT child.id,
           CASE WHEN edge.parent_id = ANY(ARRAY(SELECT id FROM ids)) THEN child.id
                ELSE coalesce(edge.parent_id, parent.id) END,
           edge.on_failure
    FROM unnest(
        %(edge_children)s::int[], %(edge_parent_ids)s::bigint[], %(edge_parent_indexes)s::int[],
        %(edge_on_failure)s::text[]
    ) AS edge(child, parent_id, parent_index, on_failure)
    JOIN ids AS child ON child.idx = edge.child
    LEFT JOIN ids AS parent ON parent.idx = edge.parent_index
)
-- (Data-modifying CTEs always run to completion, read or not.)
SELECT id FROM ids ORDER BY idx;

-- name: job_parents
-- What a job waits for, or waited for: each parent with its outcome. A parent pruned since it finished has no
-- row any more (its edge went with it, by the foreign key), so it is not listed.
SELECT edge.depends_on AS id, parent.task, parent.status, parent.result::text, parent.error,
       edge.parent_status IS NOT NULL AS resolved
FROM pgqueue.job_dependencies AS edge
JOIN pgqueue.jobs AS parent ON parent.id = edge.depends_on
WHERE edge.job_id = %(job_id)s
ORDER BY edge.depends_on;
