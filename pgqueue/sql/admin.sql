-- The operator commands' statements (pgqueue jobs, show, retry, cancel, prune), run by pgqueue/store/admin.py.
-- Parameters are psycopg named placeholders, always bound. Every filter is optional and written
-- `(%(x)s IS NULL OR ...)`: the CLI's connections send each statement a handful of times at most, so it is
-- planned with its values and an unset filter folds away. One status per statement, so that a filter on
-- pending, running or failed jobs reads that status's partial index.
-- `since` filters on created_at, `args` and `meta` are containment (`@>`) filters served by their GIN indexes.
-- Texts that anyone who can insert a row writes (names, args, errors) are clipped here: a hand-written 5 MB row
-- costs a listing a few hundred bytes.

-- name: admin_jobs
-- A listing, newest first.
SELECT id, left(queue, 200) AS queue, left(task, 200) AS task, status, attempts, max_attempts, priority,
       created_at, run_at, started_at, finished_at,
       left(args::text, %(args_clip)s) AS args, length(args::text) AS args_length,
       left(error, 500) AS error, left(meta::text, %(args_clip)s) AS meta, length(meta::text) AS meta_length
FROM pgqueue.jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)
  AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(meta)s::jsonb IS NULL OR meta @> %(meta)s::jsonb)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: admin_read_only_snapshot
-- The first statement of a transaction whose reads must all see one state of the table (a job and its history).
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: admin_job
-- One job for `pgqueue show`, every text clipped to `clip` characters with its full length beside it.
SELECT id, left(queue, %(clip)s) AS queue, left(task, %(clip)s) AS task, status, priority, attempts, max_attempts,
       created_at, run_at, started_at, finished_at, lease_expires_at, now() AS now,
       left(worker_id, %(clip)s) AS worker_id, left(dedup_key, %(clip)s) AS dedup_key,
       left(schedule, %(clip)s) AS schedule,
       left(args::text, %(clip)s) AS args, length(args::text) AS args_length,
       left(result::text, %(clip)s) AS result, length(result::text) AS result_length,
       left(error, %(clip)s) AS error, length(error) AS error_length,
       CASE WHEN jsonb_typeof(errors) = 'array' THEN jsonb_array_length(errors) ELSE 0 END AS error_count,
       left(meta::text, %(clip)s) AS meta, length(meta::text) AS meta_length
FROM pgqueue.jobs
WHERE id = %(id)s::bigint;

-- name: admin_job_errors
-- The newest `limit` entries of a job's error history (one per failed or interrupted attempt), oldest first.
-- The traceback keeps its end, where the failing call is named. An entry that is not an object (a hand-written
-- row) comes back as raw text; a history that is not an array reads as empty.
SELECT ordinal, kind, attempt, started_at, at, error, traceback, worker, counted, raw
FROM (
    SELECT entry.n AS ordinal,
           jsonb_typeof(entry.v) AS kind,
           left(entry.v ->> 'attempt', 40) AS attempt,
           left(entry.v ->> 'started_at', 64) AS started_at,
           left(entry.v ->> 'at', 64) AS at,
           left(entry.v ->> 'error', %(clip)s) AS error,
           right(entry.v ->> 'traceback', %(clip)s) AS traceback,
           left(entry.v ->> 'worker', 200) AS worker,
           left(entry.v ->> 'counted', 10) AS counted,
           CASE WHEN jsonb_typeof(entry.v) <> 'object' THEN left(entry.v::text, %(clip)s) END AS raw
    FROM pgqueue.jobs AS job
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(job.errors) = 'array' THEN job.errors ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS entry(v, n)
    WHERE job.id = %(id)s::bigint
    ORDER BY entry.n DESC
    LIMIT %(limit)s
) AS newest
ORDER BY ordinal;

-- name: admin_matching_ids
-- The ids of one status's jobs that match the filters, up to `max_id` (jobs enqueued after the command
-- started are not touched), a bounded batch at a time in id order (`after_id`: the last id of the batch before).
SELECT id
FROM pgqueue.jobs
WHERE status = %(status)s::text
  AND id <= %(max_id)s::bigint
  AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s::bigint)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)
  AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(meta)s::jsonb IS NULL OR meta @> %(meta)s::jsonb)
ORDER BY id
LIMIT %(limit)s;

-- name: admin_max_job_id
-- The newest job now: what a bulk command covers (a job enqueued while it runs is left alone).
SELECT coalesce(max(id), 0) AS id FROM pgqueue.jobs;

-- name: admin_count_prunable
-- How many finished jobs of one status `prune` would delete (for its question and its progress bar).
SELECT count(*) AS jobs
FROM pgqueue.jobs
WHERE status = %(status)s::text
  AND finished_at < now() - %(older_than)s::interval
  AND id <= %(max_id)s::bigint
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)
  AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(meta)s::jsonb IS NULL OR meta @> %(meta)s::jsonb);

-- name: admin_prune_batch
-- One batch of `prune`, its own short transaction. Rows locked right now (a retry under way) are skipped, never
-- waited for, and the row's status and finished_at are checked again once it is locked: a failed job retried
-- meanwhile is pending again and stays. The caller stops at the first batch that deletes nothing.
DELETE FROM pgqueue.jobs
WHERE id IN (
    SELECT id
    FROM pgqueue.jobs
    WHERE status = %(status)s::text
      AND finished_at < now() - %(older_than)s::interval
      AND id <= %(max_id)s::bigint
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)
      AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(meta)s::jsonb IS NULL OR meta @> %(meta)s::jsonb)
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
);
