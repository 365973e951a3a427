-- pgqueue's statements that matter, one named block each ("-- name: NAME").
-- Parameters are psycopg named placeholders; they are always bound, never formatted in.

-- name: insert_job
-- One job. run_at is computed by the server so that worker and web clocks need not agree.
INSERT INTO pgqueue.jobs (queue, task, args, priority, max_attempts, run_at, dedup_key, schedule, trace_context)
VALUES (
    %(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
    COALESCE(%(run_at)s::timestamptz, now() + %(delay)s::interval),
    %(dedup_key)s, %(schedule)s, %(trace_context)s::jsonb
)
RETURNING id;

-- name: insert_job_once
-- One job unless a pending or running job has the same dedup key; either way the id comes back. A
-- concurrent insert of the same key waits for the other transaction and then yields to its job.
WITH inserted AS (
    INSERT INTO pgqueue.jobs (queue, task, args, priority, max_attempts, run_at, dedup_key, schedule, trace_context)
    VALUES (
        %(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
        COALESCE(%(run_at)s::timestamptz, now() + %(delay)s::interval),
        %(dedup_key)s, %(schedule)s, %(trace_context)s::jsonb
    )
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running') DO NOTHING
    RETURNING id
)
SELECT id FROM inserted
UNION ALL
SELECT id FROM pgqueue.jobs
WHERE dedup_key = %(dedup_key)s AND status IN ('pending', 'running') AND NOT EXISTS (SELECT FROM inserted)
LIMIT 1;

-- name: insert_jobs
-- A batch in one statement: parallel arrays, one element per job (unnest keeps them aligned). Without
-- tracing the trace contexts are one NULL array, which unnest pads out with NULLs.
INSERT INTO pgqueue.jobs (queue, task, args, priority, max_attempts, run_at, trace_context)
SELECT queue, task, args, priority, max_attempts, COALESCE(run_at, now() + delay), trace_context
FROM unnest(
    %(queues)s::text[], %(tasks)s::text[], %(args)s::jsonb[], %(priorities)s::int[],
    %(max_attempts)s::int[], %(run_ats)s::timestamptz[], %(delays)s::interval[], %(trace_contexts)s::jsonb[]
) AS batch(queue, task, args, priority, max_attempts, run_at, delay, trace_context)
RETURNING id;

-- name: reserve_job_ids
-- Ids for a batch written with COPY (which cannot return them), in ascending order. Drawn by a function that runs
-- as its owner (migration 0005), so that a role allowed to insert jobs needs no USAGE on the id sequence.
SELECT id FROM pgqueue.reserve_job_ids(%(count)s::int) AS id;

-- name: copy_jobs
-- The batch itself; run_at, status and created_at take their defaults (now(): the transaction's start),
-- and the statement-level trigger notifies the workers as for an INSERT.
COPY pgqueue.jobs (id, queue, task, args, priority, max_attempts, trace_context) FROM STDIN;

-- name: claim
-- Claim up to `limit` runnable jobs of any queue. SKIP LOCKED lets workers claim side by side;
-- the ORDER BY matches jobs_claim_idx, so this is an index scan however many rows are finished.
-- Paused queues (pgqueue.queues) are read once per claim: the table decides, never a notification.
-- started_at stays NULL until the worker reports that the handler started (record_starts): a job
-- claimed but never started is then told apart from one cut short, and goes back uncharged.
-- attempts is capped below the integer maximum so that one hand-edited row cannot make every claim fail
-- (the worker fails a job claimed past its max_attempts without running it).
-- args come back as text: the worker parses each job's on its own, so one unreadable row fails alone.
-- waited: how long the job was runnable before this claim (the queue-wait metric), by the server's clock.
WITH paused AS MATERIALIZED (
    SELECT coalesce(array_agg(name), ARRAY[]::text[]) AS queues FROM pgqueue.queues WHERE paused
),
picked AS (
    SELECT id
    FROM pgqueue.jobs, paused
    WHERE status = 'pending' AND run_at <= now() AND queue <> ALL(paused.queues)
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE OF jobs SKIP LOCKED
)
UPDATE pgqueue.jobs AS job
SET status = 'running',
    attempts = least(job.attempts, 2147483646) + 1,
    started_at = NULL,
    finished_at = NULL,
    worker_id = %(worker_id)s,
    lease_expires_at = now() + %(lease)s::interval
FROM picked
WHERE job.id = picked.id
RETURNING job.id, job.queue, job.task, job.args::text, job.attempts, job.max_attempts,
          extract(epoch FROM now() - job.run_at)::float8 AS waited, job.trace_context::text;

-- name: claim_from_queues
-- The same for named queues: one index scan of jobs_queue_claim_idx per queue that is not paused,
-- then the best `limit` of those candidates (the others are unlocked when the statement ends).
WITH paused AS MATERIALIZED (
    SELECT coalesce(array_agg(name), ARRAY[]::text[]) AS queues FROM pgqueue.queues WHERE paused
),
picked AS (
    SELECT candidate.id
    FROM unnest(%(queues)s::text[]) AS wanted(queue)
    CROSS JOIN paused
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at
        FROM pgqueue.jobs
        WHERE queue = wanted.queue AND status = 'pending' AND run_at <= now()
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    WHERE wanted.queue <> ALL(paused.queues)
    ORDER BY candidate.priority DESC, candidate.run_at, candidate.id
    LIMIT %(limit)s
)
UPDATE pgqueue.jobs AS job
SET status = 'running',
    attempts = least(job.attempts, 2147483646) + 1,
    started_at = NULL,
    finished_at = NULL,
    worker_id = %(worker_id)s,
    lease_expires_at = now() + %(lease)s::interval
FROM picked
WHERE job.id = picked.id
RETURNING job.id, job.queue, job.task, job.args::text, job.attempts, job.max_attempts,
          extract(epoch FROM now() - job.run_at)::float8 AS waited, job.trace_context::text;

-- name: record_starts
-- The handlers of these claimed jobs have started (reported in a batch, with the next statement the
-- worker sends anyway). Only jobs still running at that moment are listed: a completion or failure
-- records its start itself. A busy worker runs it as a CTE of its next claim (see store/queries.py).
UPDATE pgqueue.jobs AS job
SET started_at = now()
FROM unnest(%(started_ids)s::bigint[], %(started_attempts)s::int[]) AS start(id, attempt)
WHERE job.id = start.id
  AND job.attempts = start.attempt
  AND job.status = 'running'
  AND job.worker_id = %(worker_id)s
  AND job.started_at IS NULL

-- name: complete_jobs
-- Batched acknowledgement. The attempt and worker checks make a late ack of a job that was
-- rescued, cancelled or handed back a no-op instead of overwriting the newer state. A busy worker
-- runs it as the first CTE of its next claim (complete_and_claim*, composed in store/queries.py).
UPDATE pgqueue.jobs AS job
SET status = 'completed',
    started_at = coalesce(job.started_at, now()),
    finished_at = now(),
    lease_expires_at = NULL,
    result = done.result
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(results)s::jsonb[]) AS done(id, attempt, result)
WHERE job.id = done.id
  AND job.attempts = done.attempt
  AND job.status = 'running'
  AND job.worker_id = %(worker_id)s;

-- name: fail_jobs
-- Batched failure: each job goes back to pending after its backoff (retry) or to failed.
-- Every attempt's error is appended to the history; `error` keeps the last one. With tracing, the entry
-- carries the attempt's trace id, so a failed attempt leads to its trace (without, the entry has no such key).
UPDATE pgqueue.jobs AS job
SET status = CASE WHEN failure.retry THEN 'pending' ELSE 'failed' END,
    run_at = CASE WHEN failure.retry THEN now() + failure.delay ELSE job.run_at END,
    started_at = coalesce(job.started_at, now()),
    finished_at = CASE WHEN failure.retry THEN NULL ELSE now() END,
    lease_expires_at = NULL,
    error = failure.error,
    errors = job.errors || jsonb_build_array(jsonb_build_object(
        'attempt', job.attempts,
        'started_at', coalesce(job.started_at, now()),
        'at', now(),
        'error', failure.error,
        'traceback', failure.traceback,
        'worker', job.worker_id,
        'counted', true
    ) || jsonb_strip_nulls(jsonb_build_object('trace_id', failure.trace_id)))
FROM unnest(
    %(ids)s::bigint[], %(attempts)s::int[], %(retry)s::bool[], %(delays)s::interval[],
    %(errors)s::text[], %(tracebacks)s::text[], %(trace_ids)s::text[]
) AS failure(id, attempt, retry, delay, error, traceback, trace_id)
WHERE job.id = failure.id
  AND job.attempts = failure.attempt
  AND job.status = 'running'
  AND job.worker_id = %(worker_id)s
RETURNING job.id, job.status, extract(epoch FROM job.run_at) AS run_at;

-- name: release_jobs
-- Jobs this worker holds go back to pending without charging their attempt (attempts - 1), and the
-- other workers are told at once (one notification per queue). For jobs claimed ahead but never
-- started (a stopping worker) `reason` is NULL and nothing is recorded; for jobs cut short at
-- shutdown it is recorded in the error history as an attempt that did not count.
WITH released AS (
    UPDATE pgqueue.jobs AS job
    SET status = 'pending',
        attempts = job.attempts - 1,
        run_at = CASE WHEN %(reason)s::text IS NULL THEN job.run_at ELSE least(job.run_at, now()) END,
        started_at = NULL,
        worker_id = NULL,
        lease_expires_at = NULL,
        error = coalesce(%(reason)s::text, job.error),
        errors = CASE WHEN %(reason)s::text IS NULL THEN job.errors ELSE job.errors || jsonb_build_array(
            jsonb_build_object(
                'attempt', job.attempts,
                'started_at', job.started_at,
                'at', now(),
                'error', %(reason)s::text,
                'traceback', NULL,
                'worker', job.worker_id,
                'counted', false
            )) END
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS held(id, attempt)
    WHERE job.id = held.id
      AND job.attempts = held.attempt
      AND job.status = 'running'
      AND job.worker_id = %(worker_id)s
    RETURNING job.queue
)
SELECT queue, count(*) AS released,
       pg_notify('pgqueue_jobs', json_build_object('queue', queue, 'run_at', 0)::text)::text AS notified
FROM released
GROUP BY queue;

-- name: release_unknown_jobs
-- After a reconnect: jobs the table says this worker holds but the worker does not know of (a claim the
-- server committed while its answer was lost on the way) go back to pending at once, uncharged.
WITH released AS (
    UPDATE pgqueue.jobs AS job
    SET status = 'pending',
        attempts = job.attempts - 1,
        started_at = NULL,
        worker_id = NULL,
        lease_expires_at = NULL
    WHERE job.status = 'running'
      AND job.worker_id = %(worker_id)s
      AND job.id <> ALL(%(held)s::bigint[])
    RETURNING job.id, job.queue
)
SELECT queue, count(*) AS released,
       pg_notify('pgqueue_jobs', json_build_object('queue', queue, 'run_at', 0)::text)::text AS notified
FROM released
GROUP BY queue;

-- name: renew_leases
-- Heartbeat for the attempts a worker holds (running or claimed ahead), in one statement, sent by its
-- lease thread on a connection of its own so that a busy event loop cannot let leases lapse. Rows
-- locked right now (an ack or a cancel under way) are skipped, not waited for: the heartbeat never
-- blocks and never deadlocks with the worker's own acks. Returns each id with `renewed`; an id missing
-- from the result is no longer this attempt's (cancelled, rescued, claimed again): the worker stops it.
WITH held AS (
    SELECT held.id, held.attempt
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS held(id, attempt)
),
locked AS (
    SELECT job.id
    FROM pgqueue.jobs AS job
    JOIN held ON held.id = job.id
    WHERE job.status = 'running' AND job.worker_id = %(worker_id)s AND job.attempts = held.attempt
    FOR NO KEY UPDATE OF job SKIP LOCKED
),
renewed AS (
    UPDATE pgqueue.jobs AS job
    SET lease_expires_at = now() + %(lease)s::interval
    FROM locked
    WHERE job.id = locked.id
    RETURNING job.id
),
busy AS (
    SELECT job.id
    FROM pgqueue.jobs AS job
    JOIN held ON held.id = job.id
    WHERE job.id NOT IN (SELECT id FROM locked)
      AND job.status = 'running' AND job.worker_id = %(worker_id)s AND job.attempts = held.attempt
)
SELECT id, true AS renewed FROM renewed
UNION ALL
SELECT id, false FROM busy;

-- name: rescue_lost_jobs
-- Running jobs whose lease expired belong to a worker that is gone. A job whose start was recorded
-- counts the lost attempt: back to pending, or failed when that was its last one. A job whose start was
-- not recorded (claimed ahead, or killed before its start was reported) goes back uncharged, once per
-- attempt number: should it be lost that way again, the attempt counts, so a job that kills its worker
-- the moment it starts cannot loop for ever. run_at is kept, so a rescued job goes back to its old place
-- in line rather than behind the whole backlog.
WITH lost AS (
    SELECT id
    FROM pgqueue.jobs
    WHERE status = 'running' AND lease_expires_at < now()
    FOR UPDATE SKIP LOCKED
),
decided AS (
    SELECT job.id,
           job.started_at IS NULL
           AND NOT job.errors @> jsonb_build_array(jsonb_build_object('attempt', job.attempts, 'counted', false))
               AS uncounted
    FROM pgqueue.jobs AS job
    JOIN lost ON lost.id = job.id
)
UPDATE pgqueue.jobs AS job
SET status = CASE WHEN decided.uncounted OR job.attempts < job.max_attempts THEN 'pending' ELSE 'failed' END,
    attempts = job.attempts - decided.uncounted::int,
    started_at = CASE WHEN decided.uncounted OR job.attempts < job.max_attempts THEN NULL ELSE job.started_at END,
    finished_at = CASE WHEN decided.uncounted OR job.attempts < job.max_attempts THEN NULL ELSE now() END,
    lease_expires_at = NULL,
    error = 'worker lost: lease expired on worker ' || coalesce(job.worker_id, '?')
        || CASE WHEN decided.uncounted THEN ' before the job was known to start (attempt not counted)' ELSE '' END,
    errors = job.errors || jsonb_build_array(jsonb_build_object(
        'attempt', job.attempts,
        'started_at', job.started_at,
        'at', now(),
        'error', 'worker lost: lease expired on worker ' || coalesce(job.worker_id, '?')
            || CASE WHEN decided.uncounted THEN ' before the job was known to start (attempt not counted)' ELSE '' END,
        'traceback', NULL,
        'worker', job.worker_id,
        'counted', NOT decided.uncounted
    ))
FROM decided
WHERE job.id = decided.id
RETURNING job.id, job.queue, job.status, job.attempts, NOT decided.uncounted AS counted, job.task;

-- name: next_run_at
-- When the earliest future job of these queues (NULL: all) becomes due, as epoch seconds. Only future
-- ones of queues that are not paused: a due job that no claim can take now (paused, or locked by another
-- worker's claim) must not make an idle worker claim again and again.
SELECT extract(epoch FROM min(run_at)) AS run_at
FROM pgqueue.jobs
WHERE status = 'pending'
  AND run_at > now()
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND queue NOT IN (SELECT name FROM pgqueue.queues WHERE paused);

-- name: notify_queue
SELECT pg_notify('pgqueue_jobs', json_build_object('queue', %(queue)s::text, 'run_at', 0)::text);

-- name: prune_finished
-- Retention: delete completed and cancelled jobs finished before the cutoff, a bounded batch at a
-- time so that pruning never holds long locks. Failed jobs are kept for retry-failed.
DELETE FROM pgqueue.jobs
WHERE id IN (
    SELECT id
    FROM pgqueue.jobs
    WHERE finished_at < now() - %(retention)s::interval AND status IN ('completed', 'cancelled')
    LIMIT %(batch)s
);

-- name: retry_failed
-- Failed jobs back to pending: attempts start over, the error history is kept. The partial unique index
-- allows one pending or running job per dedup key, so a failed job whose key such a job holds stays failed,
-- and of failed jobs sharing a key only the newest goes back. One row per matching failed job: holder_id is
-- null for one that goes back, else the job that holds (or takes) its key. With dry_run nothing changes.
WITH matching AS (
    SELECT id, queue, dedup_key
    FROM pgqueue.jobs
    WHERE status = 'failed'
      AND (%(task)s::text IS NULL OR task = %(task)s::text)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
    FOR UPDATE
),
decided AS (
    SELECT m.id, m.queue, m.dedup_key,
           coalesce(
               holder.id,
               CASE WHEN m.dedup_key IS NOT NULL THEN nullif(max(m.id) OVER (PARTITION BY m.dedup_key), m.id) END
           ) AS holder_id,
           coalesce(holder.status, 'failed') AS holder_status
    FROM matching m
    LEFT JOIN LATERAL (  -- at most one: the partial unique index (which serves this lookup)
        SELECT j.id, j.status
        FROM pgqueue.jobs j
        WHERE j.dedup_key = m.dedup_key AND j.status IN ('pending', 'running')
        LIMIT 1
    ) holder ON true
),
retried AS (
    UPDATE pgqueue.jobs j
    SET status = 'pending', attempts = 0, run_at = now(), finished_at = NULL, lease_expires_at = NULL
    FROM decided d
    WHERE j.id = d.id AND d.holder_id IS NULL AND NOT %(dry_run)s::boolean
    RETURNING j.id
)
SELECT d.id, d.queue, d.dedup_key, d.holder_id,
       CASE WHEN d.holder_id IS NOT NULL THEN d.holder_status END AS holder_status,
       d.id IN (SELECT id FROM retried) AS retried
FROM decided d
ORDER BY d.id;

-- name: cancel_jobs
-- Pending jobs are cancelled outright; running ones are marked cancelled and their worker, told
-- by NOTIFY (or its next heartbeat), stops the handler. A cancelled job is never retried.
WITH cancelled AS (
    UPDATE pgqueue.jobs
    SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
    WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('pending', 'running')
    RETURNING id, worker_id
)
SELECT id, worker_id, pg_notify('pgqueue_cancel', json_build_object('id', id)::text)::text AS notified
FROM cancelled;

-- name: queue_status
SELECT queue, status, count(*) AS jobs
FROM pgqueue.jobs
GROUP BY queue, status
ORDER BY queue, status;

-- name: oldest_runnable
SELECT queue, extract(epoch FROM now() - min(run_at)) AS age_seconds
FROM pgqueue.jobs
WHERE status = 'pending' AND run_at <= now()
GROUP BY queue
ORDER BY queue;

-- ================================================================================================
-- scheduler (pgqueue/cron/scheduler.py): cron schedules and their fires
-- ================================================================================================

-- name: sync_schedules
-- A worker registers the schedules its app declares (parallel arrays, sorted by name so that all
-- workers lock rows in one order) and disables the ones it no longer declares. A new, re-enabled
-- or re-timed schedule starts from the given next fire; an unchanged one keeps its next_fire_at so
-- that fires missed while no worker ran are still owed (the missed-fire policy bounds them).
WITH declared AS (
    SELECT *
    FROM unnest(
        %(names)s::text[], %(crons)s::text[], %(timezones)s::text[], %(tasks)s::text[], %(args)s::jsonb[],
        %(queues)s::text[], %(priorities)s::int[], %(missed)s::text[], %(backfill_limits)s::int[],
        %(skip_if_running)s::bool[], %(next_fire_ats)s::timestamptz[]
    ) AS d(name, cron, timezone, task, args, queue, priority, missed, backfill_limit, skip_if_running, next_fire_at)
),
registered AS (
    INSERT INTO pgqueue.schedules AS s (
        name, cron, timezone, task, args, queue, priority, missed, backfill_limit, skip_if_running,
        enabled, next_fire_at, updated_at
    )
    SELECT name, cron, timezone, task, args, queue, priority, missed, backfill_limit, skip_if_running,
           true, next_fire_at, now()
    FROM declared
    ON CONFLICT (name) DO UPDATE
    SET cron = excluded.cron,
        timezone = excluded.timezone,
        task = excluded.task,
        args = excluded.args,
        queue = excluded.queue,
        priority = excluded.priority,
        missed = excluded.missed,
        backfill_limit = excluded.backfill_limit,
        skip_if_running = excluded.skip_if_running,
        enabled = true,
        next_fire_at = CASE
            WHEN s.enabled AND s.next_fire_at IS NOT NULL
                 AND s.cron = excluded.cron AND s.timezone = excluded.timezone
            THEN s.next_fire_at
            ELSE excluded.next_fire_at
        END,
        updated_at = CASE
            WHEN (s.cron, s.timezone, s.task, s.args, s.queue, s.priority, s.missed, s.backfill_limit,
                  s.skip_if_running, s.enabled)
                 IS DISTINCT FROM
                 (excluded.cron, excluded.timezone, excluded.task, excluded.args, excluded.queue, excluded.priority,
                  excluded.missed, excluded.backfill_limit, excluded.skip_if_running, true)
            THEN now()
            ELSE s.updated_at
        END
    RETURNING name
),
disabled AS (
    UPDATE pgqueue.schedules
    SET enabled = false, next_fire_at = NULL, updated_at = now()
    WHERE enabled AND name <> ALL(%(names)s::text[])
    RETURNING name
)
SELECT 'registered' AS change, name FROM registered
UNION ALL
SELECT 'disabled', name FROM disabled;

-- name: schedule_states
SELECT name, enabled, next_fire_at
FROM pgqueue.schedules
WHERE name = ANY(%(names)s::text[]);

-- name: fire_schedule
-- One fire, all or nothing. The schedule row is locked and must still owe this fire time
-- (next_fire_at <= fire_at): of several workers firing together, the first advances next_fire_at and
-- the others, re-checking the row after its commit, find nothing to do. The (schedule, fire_at)
-- primary key backs this up. The job id is drawn first so the fire row can name its job (by reserve_job_ids, so
-- the worker role needs no USAGE on the id sequence); the job is inserted only when the fire row was, through
-- the jobs table, so the NOTIFY trigger wakes workers.
-- With skip_if_running, a fire whose previous fire's job is unfinished is recorded as skipped.
-- Returns one row (job_id, skipped_reason) when this call fired, none otherwise.
WITH schedule AS (
    SELECT name
    FROM pgqueue.schedules
    WHERE name = %(schedule)s AND enabled AND (next_fire_at IS NULL OR next_fire_at <= %(fire_at)s)
    FOR UPDATE
),
unfinished AS (
    SELECT job.id, job.status
    FROM (
        SELECT job_id
        FROM pgqueue.schedule_fires
        WHERE schedule = %(schedule)s AND job_id IS NOT NULL
        ORDER BY fire_at DESC
        LIMIT 1
    ) AS previous
    JOIN pgqueue.jobs AS job ON job.id = previous.job_id
    WHERE %(skip_if_running)s AND job.status IN ('pending', 'running')
),
fire AS (
    INSERT INTO pgqueue.schedule_fires (schedule, fire_at, job_id, skipped_reason)
    SELECT schedule.name,
           %(fire_at)s,
           CASE WHEN unfinished.id IS NULL THEN (SELECT id FROM pgqueue.reserve_job_ids(1) AS id) END,
           'previous job ' || unfinished.id || ' still ' || unfinished.status
    FROM schedule
    LEFT JOIN unfinished ON true
    ON CONFLICT (schedule, fire_at) DO NOTHING
    RETURNING job_id, skipped_reason
),
job AS (
    INSERT INTO pgqueue.jobs (id, queue, task, args, priority, max_attempts, run_at, schedule)
    SELECT fire.job_id, %(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s, %(fire_at)s,
           %(schedule)s
    FROM fire
    WHERE fire.job_id IS NOT NULL
),
advanced AS (
    UPDATE pgqueue.schedules AS s
    SET last_fire_at = greatest(s.last_fire_at, %(fire_at)s), next_fire_at = %(next_fire_at)s
    FROM schedule
    WHERE s.name = schedule.name
)
-- (Data-modifying CTEs always run to completion, read or not.)
SELECT fire.job_id, fire.skipped_reason
FROM fire;

-- name: prune_schedule_fires
-- Retention for fires, a bounded batch at a time. Each schedule's latest fire with a job, and any
-- after it, stay: skip_if_running looks at that job.
DELETE FROM pgqueue.schedule_fires AS fire
WHERE (fire.schedule, fire.fire_at) IN (
    SELECT old.schedule, old.fire_at
    FROM pgqueue.schedule_fires AS old
    WHERE old.created_at < now() - %(retention)s::interval
      AND old.fire_at < (
          SELECT max(latest.fire_at)
          FROM pgqueue.schedule_fires AS latest
          WHERE latest.schedule = old.schedule AND latest.job_id IS NOT NULL
      )
    LIMIT %(batch)s
)
RETURNING fire.schedule;

-- name: list_schedules
SELECT name, enabled, last_fire_at, next_fire_at
FROM pgqueue.schedules
WHERE name = ANY(%(names)s::text[]);

-- name: check_schema
-- A worker's first statement: fails at once (UndefinedTable) when the database has no pgqueue schema yet.
SELECT 1 FROM pgqueue.jobs LIMIT 0;

-- name: probe
-- A LISTEN connection's heartbeat: a silently dead connection delivers no notifications, this finds it out.
SELECT 1;

-- name: backend_pid
-- Compared with the pid the connection was given at start-up: they differ only when a pooler
-- (PgBouncer and the like) sits in between, since it hands its clients made-up keys.
SELECT pg_backend_pid();
