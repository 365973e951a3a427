-- The dashboard's statements (pgqueue/store/dashboard.py runs them), one named block each ("-- name: NAME").
-- Parameters are psycopg named placeholders, always bound. The dashboard's connections never prepare on the
-- server (prepare_threshold=None), so each statement is planned with its parameters' values: an optional filter
-- written `(%(x)s IS NULL OR ...)` folds away, and `status = 'pending'` can use the partial indexes.
--
-- What a page costs: the overview reads the active jobs only (pending, running, failed: partial indexes) plus a
-- bounded slice of the recent history; nothing here counts the finished rows of the whole table.

-- name: dashboard_session
-- Each dashboard connection as the pool opens it: times in UTC, and no statement longer than `timeout` (a slow
-- page gives up with a clear message instead of holding one of the pool's few connections).
SELECT set_config('TimeZone', 'UTC', false), set_config('statement_timeout', %(timeout)s, false);

-- name: dashboard_queue_counts
-- Exact counts of the active jobs per queue, each from its partial index (jobs_queue_claim_idx for pending,
-- jobs_lease_idx for running, jobs_failed_queue_idx for failed, jobs_parked_queue_idx for held and waiting): the
-- cost follows the backlog, not the history.
SELECT queue, 'due' AS kind, count(*) AS jobs, extract(epoch FROM now() - min(run_at)) AS oldest_seconds
FROM pgqueue.jobs
WHERE status = 'pending' AND run_at <= now()
GROUP BY queue
UNION ALL
SELECT queue, 'scheduled', count(*), NULL
FROM pgqueue.jobs
WHERE status = 'pending' AND run_at > now()
GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*), NULL
FROM pgqueue.jobs
WHERE status = 'running'
GROUP BY queue
UNION ALL
SELECT queue, 'failed', count(*), NULL
FROM pgqueue.jobs
WHERE status = 'failed'
GROUP BY queue
UNION ALL
SELECT queue, status, count(*), NULL  -- 'held' and 'waiting', from jobs_parked_queue_idx (migration 0013)
FROM pgqueue.jobs
WHERE status IN ('held', 'waiting')
GROUP BY queue, status;

-- name: dashboard_recent_finished
-- The jobs finished in the last hour (the current minute and the 59 before it), newest first, at most `cap`
-- of them, read by jobs_finished_idx: per queue, status and minute. The overview's completed/cancelled counts
-- and the per-minute chart both come from this one bounded scan. When `cap` rows came back the hour was busier
-- than that: the caller says so and marks the minutes the scan did not reach.
WITH recent AS (
    SELECT queue, status, finished_at
    FROM pgqueue.jobs
    WHERE finished_at >= date_trunc('minute', now()) - interval '59 minutes'
    ORDER BY finished_at DESC
    LIMIT %(cap)s
)
SELECT queue, status, date_bin('1 minute', finished_at, timestamptz '2000-01-01 00:00:00+00') AS minute,
       count(*) AS jobs, min(finished_at) AS oldest
FROM recent
GROUP BY queue, status, minute;

-- name: dashboard_clock
-- The server's clock: all the dashboard's ages and the chart's minutes are the database's, not the web host's.
SELECT now() AS now, date_trunc('minute', now()) - interval '59 minutes' AS chart_start;

-- name: dashboard_queue_settings
SELECT name, paused, updated_at
FROM pgqueue.queues
ORDER BY name
LIMIT 1000;

-- name: dashboard_workers
-- The registry's rows heard from in the last hour (workers_heartbeat_idx): those not stopped first (alive or
-- dead: the stopped rows of a burst worker run every minute must not push a running worker off the list), newest
-- heartbeat first. Anyone who can write the table can write anything into it, so every value is made safe to
-- show here: texts clipped, at most 50 queue names each (and how many there are), a NULL name shown as such,
-- infinite times (which would make the age arithmetic fail) as NULL, an interval no worker writes as NULL.
SELECT left(id, 200) AS id, left(host, 200) AS host, pid,
       CASE WHEN queues IS NOT NULL THEN coalesce(
           (SELECT array_agg(left(coalesce(name, '(null)'), 200) ORDER BY n)
            FROM (SELECT name, n FROM unnest(queues) WITH ORDINALITY AS q(name, n) ORDER BY n LIMIT 50) AS first),
           ARRAY[]::text[]
       ) END AS queues,
       coalesce(cardinality(queues), 0) AS queues_total,
       concurrency, running,
       CASE WHEN isfinite(started_at) THEN started_at END AS started_at,
       CASE WHEN isfinite(heartbeat_at) THEN heartbeat_at END AS heartbeat_at,
       CASE WHEN isfinite(stopped_at) THEN stopped_at END AS stopped_at,
       CASE WHEN isfinite(heartbeat_at) THEN extract(epoch FROM now() - heartbeat_at) END AS silent_seconds,
       CASE WHEN heartbeat_interval > 0 AND heartbeat_interval <= 86400 THEN heartbeat_interval END
           AS heartbeat_interval
FROM pgqueue.workers
WHERE heartbeat_at > now() - interval '1 hour'
ORDER BY stopped_at IS NOT NULL, heartbeat_at DESC, id
LIMIT %(limit)s;

-- name: dashboard_schedule_queues
SELECT DISTINCT queue FROM pgqueue.schedules WHERE enabled LIMIT 1000;

-- name: dashboard_jobs_newest
-- One page of the job list, newest first, keyset-paginated on id (no OFFSET: page 10,000 costs what page 1
-- does). Every filter is optional; `before_id` is the last id of the previous page. Names and args are clipped
-- here, so a hand-written 5 MB row costs the page a few hundred bytes.
SELECT id, left(queue, 200) AS queue, left(task, 200) AS task, status, priority, attempts, max_attempts,
       run_at, created_at, started_at, finished_at,
       left(args::text, 160) AS args_preview, length(args::text) > 160 AS args_clipped,
       left(error, 200) AS error
FROM pgqueue.jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: dashboard_jobs_by_run_at
-- The same, in the order they are due (pending or running jobs only: that set is what the partial indexes hold),
-- keyset-paginated on (run_at, id).
SELECT id, left(queue, 200) AS queue, left(task, 200) AS task, status, priority, attempts, max_attempts,
       run_at, created_at, started_at, finished_at,
       left(args::text, 160) AS args_preview, length(args::text) > 160 AS args_clipped,
       left(error, 200) AS error
FROM pgqueue.jobs
WHERE status = %(status)s::text
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
  AND (%(after_run_at)s::timestamptz IS NULL OR (run_at, id) > (%(after_run_at)s::timestamptz, %(after_id)s::bigint))
ORDER BY run_at, id
LIMIT %(limit)s;

-- name: dashboard_matching_ids
-- The jobs of one status that match a filter, up to `max_id` (the newest job the operator was shown a count
-- for: jobs enqueued after the confirmation page are not touched), a bounded batch at a time. One status per
-- call so that each call is a scan of that status's partial index.
SELECT id
FROM pgqueue.jobs
WHERE status = %(status)s::text
  AND id <= %(max_id)s::bigint
  AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s::bigint)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
ORDER BY id
LIMIT %(limit)s;

-- name: dashboard_count_matching
-- How many jobs of one status match a filter, for the confirmation page; max_id pins what the count covers.
SELECT count(*) AS jobs, max(id) AS max_id
FROM pgqueue.jobs
WHERE status = %(status)s::text
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz);

-- name: dashboard_job
-- One job for its page. Every text is clipped here and its full length returned, so the page can say how much
-- it does not show; args and result come back as text (the page pretty-prints them when they parse).
SELECT id, status, priority, attempts, max_attempts, run_at, created_at, started_at, finished_at,
       lease_expires_at, now() AS now,
       left(queue, %(name_clip)s) AS queue, length(queue) AS queue_length,
       left(task, %(name_clip)s) AS task, length(task) AS task_length,
       left(dedup_key, %(name_clip)s) AS dedup_key, length(dedup_key) AS dedup_key_length,
       left(schedule, %(name_clip)s) AS schedule, length(schedule) AS schedule_length,
       left(worker_id, %(name_clip)s) AS worker_id, length(worker_id) AS worker_id_length,
       left(args::text, %(json_clip)s) AS args, length(args::text) AS args_length,
       left(result::text, %(json_clip)s) AS result, length(result::text) AS result_length,
       left(error, %(text_clip)s) AS error, length(error) AS error_length,
       CASE WHEN jsonb_typeof(errors) = 'array' THEN jsonb_array_length(errors) ELSE 0 END AS error_count,
       jsonb_typeof(errors) AS errors_type
FROM pgqueue.jobs
WHERE id = %(id)s;

-- name: dashboard_job_attempts
-- The newest `limit` entries of a job's error history (one per failed or interrupted attempt), each text
-- clipped (the traceback keeps its end, where the failing call is named). Entries that are not objects (a
-- hand-written row) come back as raw text.
SELECT entry.n AS ordinal,
       jsonb_typeof(entry.v) AS kind,
       left(entry.v ->> 'attempt', 40) AS attempt,
       left(entry.v ->> 'started_at', 64) AS started_at,
       left(entry.v ->> 'at', 64) AS at,
       left(entry.v ->> 'error', %(text_clip)s) AS error, length(entry.v ->> 'error') AS error_length,
       right(entry.v ->> 'traceback', %(traceback_clip)s) AS traceback,
       length(entry.v ->> 'traceback') AS traceback_length,
       left(entry.v ->> 'worker', 200) AS worker,
       left(entry.v ->> 'counted', 10) AS counted,
       CASE WHEN jsonb_typeof(entry.v) <> 'object' THEN left(entry.v::text, %(text_clip)s) END AS raw,
       CASE WHEN jsonb_typeof(entry.v) <> 'object' THEN length(entry.v::text) END AS raw_length
FROM pgqueue.jobs AS job
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(job.errors) = 'array' THEN job.errors ELSE '[]'::jsonb END
) WITH ORDINALITY AS entry(v, n)
WHERE job.id = %(id)s
ORDER BY entry.n DESC
LIMIT %(limit)s;

-- name: dashboard_retry_jobs
-- Failed jobs back to pending as retry_failed does (attempts start over, run_at now, the error history kept),
-- except those whose dedup key a pending or running job holds now (the unique partial index would refuse them:
-- they are returned as held back instead), and of several failed jobs with one key only the newest goes back.
WITH locked AS (
    SELECT id, dedup_key
    FROM pgqueue.jobs
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'failed'
    FOR UPDATE
),
chosen AS (
    SELECT locked.id
    FROM locked
    WHERE locked.dedup_key IS NULL
       OR (
           NOT EXISTS (
               SELECT FROM pgqueue.jobs AS holder
               WHERE holder.dedup_key = locked.dedup_key AND holder.status IN ('pending', 'running')
           )
           AND locked.id = (SELECT max(same.id) FROM locked AS same WHERE same.dedup_key = locked.dedup_key)
       )
),
retried AS (
    UPDATE pgqueue.jobs AS job
    SET status = 'pending', attempts = 0, run_at = now(), finished_at = NULL, lease_expires_at = NULL
    FROM chosen
    WHERE job.id = chosen.id
    RETURNING job.id, job.queue
)
SELECT id, queue, true AS retried, NULL AS dedup_key FROM retried
UNION ALL
SELECT id, NULL, false, left(dedup_key, 200) FROM locked WHERE id NOT IN (SELECT id FROM chosen);

-- name: dashboard_set_paused
-- Pause or resume a queue. Workers read pgqueue.queues inside every claim, so a pause holds from the next claim
-- on; the caller notifies the queue on resume so that idle workers claim at once.
INSERT INTO pgqueue.queues AS q (name, paused, updated_at)
VALUES (%(queue)s, %(paused)s, now())
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
RETURNING name, paused;

-- name: dashboard_schedules
SELECT left(name, 200) AS name, name AS key, left(cron, 200) AS cron, left(timezone, 100) AS timezone,
       left(task, 200) AS task, left(queue, 200) AS queue, enabled, skip_if_running, missed,
       last_fire_at, next_fire_at, updated_at
FROM pgqueue.schedules
ORDER BY name
LIMIT %(limit)s;

-- name: dashboard_schedule_fires
-- The newest fires of each schedule (schedule_fires_pkey, read backwards per schedule), with the status of
-- the job each fire made, or why it was skipped.
SELECT schedule.name AS schedule, fire.fire_at, fire.job_id, left(fire.skipped_reason, 500) AS skipped_reason,
       fire.created_at, job.status AS job_status
FROM pgqueue.schedules AS schedule
CROSS JOIN LATERAL (
    SELECT fire_at, job_id, skipped_reason, created_at
    FROM pgqueue.schedule_fires
    WHERE schedule_fires.schedule = schedule.name
    ORDER BY fire_at DESC
    LIMIT %(per_schedule)s
) AS fire
LEFT JOIN pgqueue.jobs AS job ON job.id = fire.job_id
WHERE schedule.name = ANY(%(names)s::text[])
ORDER BY schedule.name, fire.fire_at DESC;

-- name: dashboard_job_relatives
-- A job's parents (what it waits for) and children (what waits for it) in workflows, at most `limit` of each,
-- lowest id first: by job_dependencies' primary key (job_id, ...) and its depends_on index. A parent pruned since
-- has no row: its status shows as NULL. Names are clipped like every text of the page.
(SELECT 'parent' AS relation, edge.depends_on AS id, left(job.task, %(name_clip)s) AS task, job.status,
        edge.on_failure
 FROM pgqueue.job_dependencies AS edge
 LEFT JOIN pgqueue.jobs AS job ON job.id = edge.depends_on
 WHERE edge.job_id = %(id)s
 ORDER BY edge.depends_on
 LIMIT %(limit)s)
UNION ALL
(SELECT 'child', edge.job_id, left(job.task, %(name_clip)s), job.status, edge.on_failure
 FROM pgqueue.job_dependencies AS edge
 LEFT JOIN pgqueue.jobs AS job ON job.id = edge.job_id
 WHERE edge.depends_on = %(id)s
 ORDER BY edge.job_id
 LIMIT %(limit)s);

-- name: dashboard_job_progress
-- How far a job's parents are (a batch's progress, seen from its callback), and how many children it has.
SELECT
    (SELECT count(*) FROM pgqueue.job_dependencies WHERE job_id = %(id)s) AS parents,
    (SELECT count(*) FROM pgqueue.job_dependencies AS edge JOIN pgqueue.jobs AS job ON job.id = edge.depends_on
     WHERE edge.job_id = %(id)s AND job.status = 'completed') AS completed,
    (SELECT count(*) FROM pgqueue.job_dependencies AS edge JOIN pgqueue.jobs AS job ON job.id = edge.depends_on
     WHERE edge.job_id = %(id)s AND job.status IN ('failed', 'cancelled')) AS failed,
    (SELECT count(*) FROM pgqueue.job_dependencies WHERE depends_on = %(id)s) AS children;
