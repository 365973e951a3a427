-- pgqueue's statements that matter, one named block each ("-- name: NAME").
-- Parameters are psycopg named placeholders; they are always bound, never formatted in.

-- name: insert_job
-- One job. run_at is computed by the server so that worker and web clocks need not agree.
INSERT INTO pgqueue.jobs (queue, task, args, priority, max_attempts, run_at, dedup_key, schedule, meta,
                          trace_context)
VALUES (
    %(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
    COALESCE(%(run_at)s::timestamptz, now() + %(delay)s::interval),
    %(dedup_key)s, %(schedule)s, %(meta)s::jsonb, %(trace_context)s::jsonb
)
RETURNING id;

-- name: insert_job_once
-- One job unless a pending or running job has the same dedup key; either way the id comes back. A
-- concurrent insert of the same key waits for the other transaction and then yields to its job.
WITH inserted AS (
    INSERT INTO pgqueue.jobs (queue, task, args, priority, max_attempts, run_at, dedup_key, schedule, meta,
                              trace_context)
    VALUES (
        %(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
        COALESCE(%(run_at)s::timestamptz, now() + %(delay)s::interval),
        %(dedup_key)s, %(schedule)s, %(meta)s::jsonb, %(trace_context)s::jsonb
    )
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running', 'held') DO NOTHING
    RETURNING id
)
SELECT id FROM inserted
UNION ALL
SELECT id FROM pgqueue.jobs
WHERE dedup_key = %(dedup_key)s AND status IN ('pending', 'running', 'held') AND NOT EXISTS (SELECT FROM inserted)
LIMIT 1;

-- name: insert_job_unique_for
-- insert_job_once, and also no new job while a job with the key completed within the window (unique_for): that
-- job's id comes back instead (jobs_dedup_completed_idx). A pending or running holder comes first, then the
-- recently completed job. Only completed jobs count: a failed or cancelled one did not do the work.
WITH recent AS (
    SELECT id
    FROM pgqueue.jobs
    WHERE dedup_key = %(dedup_key)s AND status = 'completed' AND finished_at > now() - %(unique_for)s::interval
    ORDER BY finished_at DESC
    LIMIT 1
),
inserted AS (
    INSERT INTO pgqueue.jobs (queue, task, args, priority, max_attempts, run_at, dedup_key, schedule, meta,
                              trace_context)
    SELECT %(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
           COALESCE(%(run_at)s::timestamptz, now() + %(delay)s::interval),
           %(dedup_key)s, %(schedule)s, %(meta)s::jsonb, %(trace_context)s::jsonb
    WHERE NOT EXISTS (SELECT FROM recent)
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running', 'held') DO NOTHING
    RETURNING id
)
SELECT id FROM inserted
UNION ALL
(SELECT id FROM pgqueue.jobs
 WHERE dedup_key = %(dedup_key)s AND status IN ('pending', 'running', 'held') AND NOT EXISTS (SELECT FROM inserted)
 LIMIT 1)
UNION ALL
SELECT id FROM recent
LIMIT 1;

-- name: insert_job_debounced
-- Debounce: one pending job per key (jobs_debounce_key_idx, pending jobs only). A later enqueue with the key
-- updates that job in place: the new args, and run_at moved to now() + debounce but never past the first
-- enqueue's created_at + max_wait, so that a steady stream of enqueues cannot put the job off for ever.
-- ON CONFLICT DO UPDATE is atomic: concurrent enqueues of one key serialise on its row and none is lost. A
-- running job does not hold the key, so a change that arrives while it runs gets a run of its own.
INSERT INTO pgqueue.jobs AS job (
    queue, task, args, priority, max_attempts, run_at, debounce_key, schedule, meta, trace_context
)
VALUES (
    %(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
    now() + least(%(debounce)s::interval, %(debounce_max_wait)s::interval),
    %(dedup_key)s, %(schedule)s, %(meta)s::jsonb, %(trace_context)s::jsonb
)
ON CONFLICT (debounce_key) WHERE debounce_key IS NOT NULL AND status = 'pending' DO UPDATE
SET args = %(args)s::jsonb,  -- the parameter, not excluded.args: reading that takes SELECT on args (app role)
    meta = %(meta)s::jsonb,
    run_at = greatest(
        job.run_at,
        least(now() + %(debounce)s::interval, job.created_at + %(debounce_max_wait)s::interval)
    )
RETURNING job.id;

-- name: insert_jobs
-- A batch in one statement: parallel arrays, one element per job (unnest keeps them aligned). Without
-- tracing the trace contexts are one NULL array, which unnest pads out with NULLs.
INSERT INTO pgqueue.jobs (queue, task, args, priority, max_attempts, run_at, meta, trace_context)
SELECT queue, task, args, priority, max_attempts, COALESCE(run_at, now() + delay), meta, trace_context
FROM unnest(
    %(queues)s::text[], %(tasks)s::text[], %(args)s::jsonb[], %(priorities)s::int[],
    %(max_attempts)s::int[], %(run_ats)s::timestamptz[], %(delays)s::interval[], %(metas)s::jsonb[],
    %(trace_contexts)s::jsonb[]
) AS batch(queue, task, args, priority, max_attempts, run_at, delay, meta, trace_context)
RETURNING id;

-- name: reserve_job_ids
-- Ids for a batch written with COPY (which cannot return them), in ascending order. Drawn by a function that runs
-- as its owner (migration 0005), so that a role allowed to insert jobs needs no USAGE on the id sequence.
SELECT id FROM pgqueue.reserve_job_ids(%(count)s::int) AS id;

-- name: copy_jobs
-- The batch itself; run_at, status and created_at take their defaults (now(): the transaction's start),
-- and the statement-level trigger notifies the workers as for an INSERT.
COPY pgqueue.jobs (id, queue, task, args, priority, max_attempts, meta, trace_context) FROM STDIN;

-- name: claim
-- The worker's claim, less the queues it takes jobs of (WANTED: wanted_any or wanted_from_queues) and its pick of
-- pending jobs (PICK: pick_any or pick_from_queues), composed in store/queries.py into `claim` and
-- `claim_from_queues`.
-- Claim up to `limit` runnable jobs (of any queue or of the named ones). SKIP LOCKED lets workers claim side by
-- side. Paused queues (pgqueue.queues) are read once per claim: the table decides, never a notification.
-- started_at stays NULL until the worker reports that the handler started (record_starts): a job
-- claimed but never started is then told apart from one cut short, and goes back uncharged.
-- attempts is capped below the integer maximum so that one hand-edited row cannot make every claim fail
-- (the worker fails a job claimed past its max_attempts without running it).
-- args come back as text: the worker parses each job's on its own, so one unreadable row fails alone.
-- Limits (pgqueue.limits, read once per claim like the paused queues): picked jobs of a limited task or queue
-- go through pgqueue.grant_limits (migrations 0008 and 0014), which grants free slots and rate starts exactly.
-- A job denied a slot is parked as `held` (but see no_slot below); one a full rate window turns away stays
-- pending with run_at moved to when a start frees (`deferred_by`, `due_at`); both uncharged, and both come back with `held` true so the worker
-- knows the batch was not short for want of jobs. A rate-limited job that would only wait in the worker's
-- memory (no free slot there: `free`) is not claimed at all and comes back as a `no_slot` row, so that a start
-- is counted only for a handler about to run; so does a job under a concurrency limit that it would only hold
-- in memory while the limit has no slot free (migration 0016), and a job denied a slot of a key of which this
-- claim took a slot (migration 0023: the worker claims again as that slot frees). With no limited job picked,
-- grant_limits is never called.
-- `finished` names the jobs this statement completes (composed in store/queries.py): their slots are free for
-- this claim. grant_limits serves its candidates in picked's order, which a CTE scan keeps (no second sort), and
-- is told each one's place in the claim (`positions`): the jobs ahead of it that run take the free slots first.
-- Held jobs whose slot this very statement frees (`freed`: the limit keys of the jobs it completes) are
-- candidates too, ahead of the pending ones (they were in line first): the freed slot goes to them in the same
-- statement, instead of the completion waking one (wake_held) for a later claim to take, a round trip and two
-- row updates more per job when a limit binds. A held job that finds its slot taken after all stays held. They
-- count towards `limit`: the pending jobs picked beyond what they leave are unlocked untouched (beside them,
-- pending jobs of a full limit would only be parked). The LIMIT is applied to the pick's result, not inside the
-- pick: an expression there would be planned as a tenth of the table, and the UPDATE as a scan of it.
-- The picked jobs are written by pgqueue.claim_picked (migration 0019), which looks each up by its primary key
-- whatever the statistics: written here, the prepared claim's plan, made once beside a near-empty table, kept
-- joining them to a sequential scan of the whole table as it filled. The limits' decisions go to it as one
-- array (ROW(decided.*): the columns of grant_limits' answer, in its order).
-- The rows come back in claim order (the ORDER BY at the end): the worker starts them so.
-- waited: how long the job was runnable before this claim (the queue-wait metric), by the server's clock.
-- slotted: the job took a concurrency slot or was held for one (the worker then claims as its slots free: its
-- completions may free slots for held jobs, which only a claim takes).
WITH paused AS MATERIALIZED (
    SELECT coalesce(array_agg(name), ARRAY[]::text[]) AS queues FROM pgqueue.queues WHERE paused
),
WANTED,
limited AS MATERIALIZED (
    SELECT coalesce(array_agg(target) FILTER (WHERE scope = 'task'), ARRAY[]::text[]) AS tasks,
           coalesce(array_agg(target) FILTER (WHERE scope = 'queue'), ARRAY[]::text[]) AS queues
    FROM pgqueue.limits
    HAVING count(*) > 0
),
freed AS (
    SELECT key, count(*)::integer AS slots
    FROM finished, unnest(finished.limit_keys) AS key
    GROUP BY key
),
held_ready AS (
    SELECT ready.id, ready.task, ready.queue, ready.priority, ready.run_at
    FROM freed
    CROSS JOIN paused
    CROSS JOIN wanted_queues
    CROSS JOIN LATERAL pgqueue.held_in_line(freed.key, freed.slots, paused.queues, wanted_queues.names) AS ready
),
PICK,
picked AS (
    SELECT id, task, queue, priority, run_at FROM held_ready
    UNION ALL
    (
        SELECT id, task, queue, priority, run_at FROM picked_pending
        LIMIT greatest(%(limit)s - (SELECT count(*) FROM held_ready), 0)
    )
),
candidates AS (
    SELECT array_agg(numbered.id ORDER BY numbered.position) AS ids,
           array_agg(numbered.position ORDER BY numbered.position) AS positions
    FROM limited
    CROSS JOIN (SELECT picked.id, picked.task, picked.queue, row_number() OVER () AS position FROM picked) AS numbered
    WHERE numbered.task = ANY(limited.tasks) OR numbered.queue = ANY(limited.queues)
    HAVING count(*) > 0
),
decided AS (
    SELECT granted.job_id, granted.keys, granted.held_by, granted.deferred_by, granted.due_at, granted.no_slot,
           granted.rated, granted.stripe
    FROM candidates
    CROSS JOIN LATERAL pgqueue.grant_limits(
        candidates.ids, candidates.positions::int[], ARRAY(SELECT finished.id FROM finished), %(free)s
    ) AS granted
),
claimed AS MATERIALIZED (
    SELECT claim.id, claim.queue, claim.task, claim.args, claim.attempts, claim.max_attempts, claim.held_by,
           claim.priority, claim.run_at, claim.trace_context, claim.deferred_by, claim.was_due, claim.rated,
           claim.slotted
    FROM (SELECT array_agg(picked.id) AS ids, array_agg(picked.run_at) AS due FROM picked) AS batch
    CROSS JOIN LATERAL pgqueue.claim_picked(
        batch.ids, batch.due,
        ARRAY(SELECT ROW(decided.*)::pgqueue.limit_decision FROM decided),
        %(worker_id)s, %(lease)s::interval
    ) AS claim
    WHERE batch.ids IS NOT NULL
)
SELECT id, queue, task, args, attempts, max_attempts, held, waited, trace_context, due_at, no_slot, rated, slotted
FROM (
    SELECT id, queue, task, args::text AS args, attempts, max_attempts,
           held_by IS NOT NULL OR deferred_by IS NOT NULL AS held,
           extract(epoch FROM now() - was_due)::float8 AS waited, trace_context::text AS trace_context,
           CASE WHEN deferred_by IS NOT NULL THEN extract(epoch FROM run_at)::float8 END AS due_at,
           false AS no_slot, rated, slotted, priority, was_due
    FROM claimed
    UNION ALL
    SELECT decided.job_id, NULL, NULL, NULL, NULL, NULL, true, 0, NULL, NULL, true, decided.rated, false, NULL, NULL
    FROM decided
    WHERE decided.no_slot
) AS answer
-- A CTE that only reads runs when it is first read: this filter, decided before any row is produced, makes the
-- acks (`finished`, in the claim that carries them) run first, so that the pick's own snapshots see them written.
WHERE (SELECT count(*) FROM finished) >= 0
ORDER BY no_slot, priority DESC, was_due, id;

-- name: wanted_any
-- The queues the claim takes jobs of (WANTED in the claim): any.
wanted_queues AS MATERIALIZED (SELECT NULL::text[] AS names)

-- name: pick_any
-- The claim's pick of pending jobs of any queue (PICK in the claim): pgqueue.pending_in_line (migration 0017) walks
-- jobs_claim_idx in claim order and stops at `limit`, however many rows are finished and whatever the statistics.
picked_pending AS (
    SELECT line.id, line.task, line.queue, line.priority, line.run_at
    FROM paused
    CROSS JOIN LATERAL pgqueue.pending_in_line(%(limit)s, paused.queues) AS line
)

-- name: wanted_from_queues
-- The queues the claim takes jobs of (WANTED in the claim): the named ones.
wanted_queues AS MATERIALIZED (SELECT %(queues)s::text[] AS names)

-- name: pick_from_queues
-- The claim's pick of pending jobs of named queues (PICK in the claim): one walk of jobs_queue_claim_idx per queue
-- that is not paused (pgqueue.queue_pending_in_line, migration 0017), then the best `limit` of those candidates
-- (the others are unlocked when the statement ends).
picked_pending AS (
    SELECT candidate.id, candidate.task, wanted.queue, candidate.priority, candidate.run_at
    FROM wanted_queues
    CROSS JOIN unnest(wanted_queues.names) AS wanted(queue)
    CROSS JOIN paused
    CROSS JOIN LATERAL pgqueue.queue_pending_in_line(wanted.queue, %(limit)s) AS candidate
    WHERE wanted.queue <> ALL(paused.queues)
    ORDER BY candidate.priority DESC, candidate.run_at, candidate.id
    LIMIT %(limit)s
)

-- name: record_outcomes
-- A worker's buffered handler starts and completions (batched acknowledgement), written by
-- pgqueue.record_outcomes (migration 0021), which returns the completed jobs. The attempt and worker checks there
-- make a late ack of a job that was rescued, cancelled or handed back a no-op. The ids, attempts and results are
-- parallel arrays, one attempt per job (statements.latest_attempts). A busy worker runs it as the first CTE of its
-- next claim (record_outcomes_and_claim*, composed in store/queries.py). Written in a function, the acks find their
-- jobs by primary key whatever the statistics, so this statement can be prepared: written in this statement, the
-- prepared plan, made once beside a near-empty table, kept finding them by a sequential scan as the table filled.
-- The arrays are not joined as a table (FROM unnest(...)) on purpose: on a table analyzed while nearly empty the
-- planner expected one running job of this worker and looped over the whole batch once per running job, 26.6 ms
-- for an ack of 115 beside 512 running.
SELECT finished.id, finished.limit_keys
FROM pgqueue.record_outcomes(
    %(started_ids)s::bigint[], %(started_attempts)s::int[], %(ids)s::bigint[], %(attempts)s::int[],
    %(results)s::jsonb[], %(worker_id)s
) AS finished

-- name: fail_jobs
-- Batched failure: each job goes back to pending after its backoff (retry) or to failed.
-- Every attempt's error is appended to the history; `error` keeps the last one. With tracing, the entry
-- carries the attempt's trace id, so a failed attempt leads to its trace (without, the entry has no such key).
-- The arrays are parallel, one element per job: each job's own are found at its id's position (see record_outcomes
-- for why the arrays are not joined as a table).
UPDATE pgqueue.jobs AS job
SET status = CASE WHEN (%(retry)s::bool[])[array_position(%(ids)s::bigint[], job.id)] THEN 'pending' ELSE 'failed' END,
    run_at = CASE WHEN (%(retry)s::bool[])[array_position(%(ids)s::bigint[], job.id)]
        THEN now() + (%(delays)s::interval[])[array_position(%(ids)s::bigint[], job.id)] ELSE job.run_at END,
    started_at = coalesce(job.started_at, now()),
    finished_at = CASE WHEN (%(retry)s::bool[])[array_position(%(ids)s::bigint[], job.id)] THEN NULL ELSE now() END,
    lease_expires_at = NULL,
    error = (%(errors)s::text[])[array_position(%(ids)s::bigint[], job.id)],
    errors = job.errors || jsonb_build_array(jsonb_build_object(
        'attempt', job.attempts,
        'started_at', coalesce(job.started_at, now()),
        'at', now(),
        'error', (%(errors)s::text[])[array_position(%(ids)s::bigint[], job.id)],
        'traceback', (%(tracebacks)s::text[])[array_position(%(ids)s::bigint[], job.id)],
        'worker', job.worker_id,
        'counted', true
    ) || jsonb_strip_nulls(jsonb_build_object('trace_id', (%(trace_ids)s::text[])[array_position(%(ids)s::bigint[], job.id)])))
WHERE job.id = ANY(%(ids)s::bigint[])
  AND job.attempts = (%(attempts)s::int[])[array_position(%(ids)s::bigint[], job.id)]
  AND job.status = 'running'
  AND job.worker_id = %(worker_id)s
RETURNING job.id, job.status, extract(epoch FROM job.run_at) AS run_at;

-- name: snooze_jobs
-- Handlers that raised Snooze: back to pending, due after their delay, the attempt not charged
-- (attempts - 1, so the next claim gives it the same number). A snooze is not an error: `error` and the
-- error history are left alone, and `snoozes` counts them (a history entry per snooze would grow without
-- bound for a job that snoozes every few seconds). worker_id stays, as for a retry: the worker that last ran it.
-- The same guards as fail_jobs: a late write is a no-op.
UPDATE pgqueue.jobs AS job
SET status = 'pending',
    attempts = job.attempts - 1,
    run_at = now() + (%(delays)s::interval[])[array_position(%(ids)s::bigint[], job.id)],
    started_at = NULL,
    lease_expires_at = NULL,
    snoozes = job.snoozes + 1
WHERE job.id = ANY(%(ids)s::bigint[])
  AND job.attempts = (%(attempts)s::int[])[array_position(%(ids)s::bigint[], job.id)]
  AND job.status = 'running'
  AND job.worker_id = %(worker_id)s
RETURNING job.id, extract(epoch FROM job.run_at) AS run_at;

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
-- time so that pruning never holds long locks. Failed jobs are kept for retry-failed. The same statement drops
-- the rate starts older than an hour, the longest window a rate may have (a claim drops its own keys' old starts;
-- these are of keys no claim has looked at since).
WITH old_rate_starts AS (
    DELETE FROM pgqueue.rate_starts WHERE at < now() - interval '1 hour'
)
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
      AND (%(since)s::interval IS NULL OR created_at >= now() - %(since)s::interval)
      AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
      AND (%(meta)s::jsonb IS NULL OR meta @> %(meta)s::jsonb)
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
        WHERE j.dedup_key = m.dedup_key AND j.status IN ('pending', 'running', 'held')
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
-- by NOTIFY (or its next heartbeat), stops the handler. A cancelled job is never retried. Waiting jobs (with
-- parents not finished) are cancelled too; the trigger of migration 0010 then cancels their own dependents.
WITH cancelled AS (
    UPDATE pgqueue.jobs
    SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL
    WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('pending', 'running', 'held', 'waiting')
    RETURNING id, worker_id
)
SELECT id, worker_id, pg_notify('pgqueue_cancel', json_build_object('id', id)::text)::text AS notified
FROM cancelled;

-- name: job_state
-- A job's status and outcome, for Queue.result(): read once LISTEN is on (so a finish before it is not missed)
-- and again after each notification of the finished channel (a hint: this row decides).
SELECT status, result, error FROM pgqueue.jobs WHERE id = %(id)s;

-- name: enqueued_jobs
-- Queue.enqueued(): the jobs of a task (NULL: any) whose args contain the given ones (`@>`, served by
-- jobs_args_idx) and whose status is one of these (NULL: any), oldest first; for an app's tests to assert on.
SELECT id, queue, task, args, status, attempts, run_at, dedup_key, debounce_key
FROM pgqueue.jobs
WHERE (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(args)s::jsonb IS NULL OR args @> %(args)s::jsonb)
  AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
ORDER BY id
LIMIT %(limit)s;

-- name: drained_jobs
-- What a drain ran: the jobs runnable when it began and those its worker claimed, as they are now.
SELECT id, task, args, status, attempts, result, error
FROM pgqueue.jobs
WHERE id = ANY(%(ids)s::bigint[]) OR worker_id = %(worker_id)s
ORDER BY id;

-- name: runnable_job_ids
SELECT id FROM pgqueue.jobs WHERE status = 'pending' AND run_at <= now() ORDER BY id LIMIT %(limit)s;

-- name: queue_status
-- `pgqueue status`: the jobs not finished per queue and status, exact, each from its partial index (pending:
-- jobs_queue_claim_idx, running: jobs_lease_idx, failed: jobs_failed_queue_idx, held and waiting:
-- jobs_parked_queue_idx), and the completed and cancelled ones of the last hour (jobs_finished_idx): the cost
-- follows the backlog and the last hour's work, not the history (a full count of 10 million rows takes a second).
SELECT queue, status, count(*) AS jobs FROM pgqueue.jobs WHERE status = 'pending' GROUP BY queue, status
UNION ALL
SELECT queue, status, count(*) FROM pgqueue.jobs WHERE status = 'running' GROUP BY queue, status
UNION ALL
SELECT queue, status, count(*) FROM pgqueue.jobs WHERE status = 'failed' GROUP BY queue, status
UNION ALL
SELECT queue, status, count(*) FROM pgqueue.jobs WHERE status IN ('held', 'waiting') GROUP BY queue, status
UNION ALL
SELECT queue, status, count(*)
FROM pgqueue.jobs
WHERE finished_at >= now() - interval '1 hour' AND status IN ('completed', 'cancelled')
GROUP BY queue, status
ORDER BY queue, status;

-- name: queue_status_all
-- `pgqueue status --all`: every job of the table counted, finished ones of any age too (a scan of the table).
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
-- A worker's first statement: fails at once (UndefinedTable) when the database has no pgqueue schema yet, and
-- tells the worker which migration the database is at (it refuses to run on one older than its code).
SELECT version_num FROM pgqueue.alembic_version;

-- name: probe
-- A LISTEN connection's heartbeat: a silently dead connection delivers no notifications, this finds it out.
SELECT 1;

-- name: backend_pid
-- Compared with the pid the connection was given at start-up: they differ only when a pooler
-- (PgBouncer and the like) sits in between, since it hands its clients made-up keys.
SELECT pg_backend_pid();

-- ================================================================================================
-- queue control (pgqueue/store/limits.py): concurrency limits, pause and resume
-- ================================================================================================

-- name: sync_limits
-- A worker registers the limits its app declares (parallel arrays, sorted by name so that all workers lock
-- rows in one order) and removes the task limits of its registered tasks (`tasks`) that no longer declare one.
-- Queue limits are only ever added or changed here: one set at run time stays until removed. Returns the
-- limits that changed, whose held jobs the caller wakes (wake_held) so the claim decides on them anew.
WITH declared AS (
    SELECT *
    FROM unnest(
        %(names)s::text[], %(scopes)s::text[], %(targets)s::text[], %(concurrencies)s::int[], %(key_args)s::text[],
        %(rates)s::int[], %(rate_periods)s::interval[], %(rate_key_args)s::text[]
    ) AS d(name, scope, target, concurrency, key_arg, rate, rate_period, rate_key_arg)
),
registered AS (
    INSERT INTO pgqueue.limits AS l
        (name, scope, target, concurrency, key_arg, rate, rate_period, rate_key_arg, updated_at)
    SELECT name, scope, target, concurrency, key_arg, rate, rate_period, rate_key_arg, now() FROM declared
    ON CONFLICT (name) DO UPDATE
    SET concurrency = excluded.concurrency, key_arg = excluded.key_arg, rate = excluded.rate,
        rate_period = excluded.rate_period, rate_key_arg = excluded.rate_key_arg, updated_at = now()
    WHERE (l.concurrency, l.key_arg, l.rate, l.rate_period, l.rate_key_arg)
          IS DISTINCT FROM (excluded.concurrency, excluded.key_arg, excluded.rate, excluded.rate_period,
                            excluded.rate_key_arg)
    RETURNING name
),
removed AS (
    DELETE FROM pgqueue.limits
    WHERE scope = 'task' AND target = ANY(%(tasks)s::text[]) AND name <> ALL(%(names)s::text[])
    RETURNING name
)
SELECT name FROM registered
UNION ALL
SELECT name FROM removed;

-- name: limit_for_update
-- One limit as it stands, locked: a run-time change of its concurrency keeps its rate, and the other way round.
SELECT concurrency, key_arg, rate, extract(epoch FROM rate_period)::float8 AS rate_seconds, rate_key_arg
FROM pgqueue.limits
WHERE name = %(name)s
FOR UPDATE;

-- name: set_limit
-- One limit set at run time (`pgqueue queues limit`, Queue.set_queue_limit): every column given.
INSERT INTO pgqueue.limits AS l
    (name, scope, target, concurrency, key_arg, rate, rate_period, rate_key_arg, updated_at)
VALUES (%(name)s, %(scope)s, %(target)s, %(concurrency)s, %(key_arg)s, %(rate)s, %(rate_period)s::interval,
        %(rate_key_arg)s, now())
ON CONFLICT (name) DO UPDATE
SET concurrency = excluded.concurrency, key_arg = excluded.key_arg, rate = excluded.rate,
    rate_period = excluded.rate_period, rate_key_arg = excluded.rate_key_arg, updated_at = now()
RETURNING name;

-- name: remove_limit
DELETE FROM pgqueue.limits WHERE name = %(name)s RETURNING name;

-- name: release_deferred
-- The jobs waiting for a start of these limits' rates (run_at moved by the window) are due now: run after a limit
-- changes, so that a rate raised or removed does not leave a backlog waiting on the old one's schedule. The claim
-- decides on them anew. Their queues' workers are woken.
WITH released AS (
    UPDATE pgqueue.jobs AS job
    SET run_at = now(), deferred_by = NULL
    FROM unnest(%(names)s::text[]) AS changed(name)
    WHERE job.status = 'pending' AND job.deferred_by IS NOT NULL
      AND (job.deferred_by = jsonb_build_array('rate', changed.name)::text
           OR starts_with(job.deferred_by, left(jsonb_build_array('rate', changed.name)::text, -1) || ', '))
    RETURNING job.queue
)
SELECT queue, count(*) AS woken,
       pg_notify('pgqueue_jobs', json_build_object('queue', queue, 'run_at', 0)::text)::text AS notified
FROM released
GROUP BY queue;

-- name: wake_held
-- Held jobs back to pending: up to `per_key` per limit key (NULL: all) of the limits named (NULL: every limit),
-- and every held job whose limit no longer exists (or that names none). A claim decides on them anew, so waking too many costs a
-- claim, never a limit. Run after a limit changes, and by maintenance each round with per_key 1: a claim that
-- parked a job just as the slot it wanted freed (the freeing statement found it not yet held) is caught here.
WITH keys AS (
    SELECT key, pgqueue.limit_of(key) AS limit_name
    FROM (SELECT DISTINCT held_by AS key FROM pgqueue.jobs WHERE status = 'held') AS held_keys
),
picked AS (
    SELECT held.id
    FROM keys
    CROSS JOIN LATERAL (
        SELECT job.id
        FROM pgqueue.jobs AS job
        WHERE job.status = 'held' AND job.held_by = keys.key
        ORDER BY job.priority DESC, job.run_at, job.id
        LIMIT CASE WHEN keys.limit_name IS NOT NULL THEN %(per_key)s::int END
        FOR UPDATE SKIP LOCKED
    ) AS held
    WHERE %(names)s::text[] IS NULL
       OR keys.limit_name = ANY(%(names)s::text[])
       OR keys.limit_name IS NULL
),
unkeyed AS (
    -- A held job that names no key (hand-written) has no limit to wait for.
    SELECT id FROM pgqueue.jobs WHERE status = 'held' AND held_by IS NULL FOR UPDATE SKIP LOCKED
),
woken AS (
    UPDATE pgqueue.jobs AS job
    SET status = 'pending', held_by = NULL
    FROM (SELECT id FROM picked UNION ALL SELECT id FROM unkeyed) AS picked
    WHERE job.id = picked.id AND job.status = 'held'
    RETURNING job.queue
)
SELECT queue, count(*) AS woken,
       pg_notify('pgqueue_jobs', json_build_object('queue', queue, 'run_at', 0)::text)::text AS notified
FROM woken
GROUP BY queue;

-- name: set_queue_paused
-- Pause or resume a queue. Workers read pgqueue.queues inside every claim, so a pause holds from the next claim
-- on (running jobs finish); a resume notifies the queue's workers, which claim at once.
WITH changed AS (
    INSERT INTO pgqueue.queues AS q (name, paused, updated_at)
    VALUES (%(queue)s, %(paused)s, now())
    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = now()
    RETURNING name, paused
)
SELECT name, paused,
       CASE WHEN NOT paused
            THEN pg_notify('pgqueue_jobs', json_build_object('queue', name, 'run_at', 0)::text)::text END AS notified
FROM changed;

-- name: queue_known
-- A queue is known when it has jobs, settings or a limit.
SELECT EXISTS (SELECT FROM pgqueue.jobs WHERE queue = %(queue)s)
    OR EXISTS (SELECT FROM pgqueue.queues WHERE name = %(queue)s)
    OR EXISTS (SELECT FROM pgqueue.limits WHERE scope = 'queue' AND target = %(queue)s) AS known;

-- name: list_queues
-- Every queue with jobs, settings or a limit: its job counts per status (a JSON object), paused or not, and its
-- concurrency limit (NULL: none).
WITH counts AS (
    SELECT queue, jsonb_object_agg(status, jobs) AS jobs
    FROM (SELECT queue, status, count(*) AS jobs FROM pgqueue.jobs GROUP BY queue, status) AS per_status
    GROUP BY queue
),
names AS (
    SELECT queue AS name FROM counts
    UNION
    SELECT name FROM pgqueue.queues
    UNION
    SELECT target FROM pgqueue.limits WHERE scope = 'queue'
)
SELECT names.name,
       coalesce(queues.paused, false) AS paused,
       limits.concurrency,
       coalesce(counts.jobs, jsonb_build_object())::text AS jobs,
       pgqueue.rate_text(limits.rate, limits.rate_period) AS rate
FROM names
LEFT JOIN pgqueue.queues ON queues.name = names.name
LEFT JOIN pgqueue.limits ON limits.scope = 'queue' AND limits.target = names.name
LEFT JOIN counts ON counts.queue = names.name
ORDER BY names.name;

-- name: list_limits
-- Every declared limit, with how many of its jobs run and how many are held right now, and for a rate how many
-- wait for a start (pending, run_at moved by the rate: deferred_by names one of its keys).
SELECT lim.name, lim.scope, lim.target, lim.concurrency, lim.key_arg,
       (SELECT count(*) FROM pgqueue.jobs AS job
        WHERE job.status = 'running'
          AND CASE WHEN lim.scope = 'task' THEN job.task ELSE job.queue END = lim.target) AS running,
       (SELECT count(*) FROM pgqueue.jobs AS job
        WHERE job.status = 'held' AND pgqueue.limit_of(job.held_by) = lim.name) AS held,
       pgqueue.rate_text(lim.rate, lim.rate_period) AS rate,
       lim.rate_key_arg,
       (SELECT count(*) FROM pgqueue.jobs AS job
        WHERE job.status = 'pending' AND job.deferred_by IS NOT NULL
          AND (job.deferred_by = jsonb_build_array('rate', lim.name)::text
               OR starts_with(job.deferred_by, left(jsonb_build_array('rate', lim.name)::text, -1) || ', '))
       ) AS deferred
FROM pgqueue.limits AS lim
ORDER BY lim.name;

-- name: claim_unlimited
-- An idle worker's claim while no limit exists (pgqueue.claim_unlimited, migration 0022): the jobs it claims, in
-- claim order, with the columns of `claim`; or, while any limit exists, one row of NULLs and nothing claimed (the
-- worker then sends `claim`, which decides the limits). `queues` NULL: of any queue not paused.
SELECT claim.id, claim.queue, claim.task, claim.args, claim.attempts, claim.max_attempts, false AS held,
       claim.waited, claim.trace_context, NULL::float8 AS due_at, false AS no_slot, false AS rated, false AS slotted
FROM pgqueue.claim_unlimited(%(limit)s, %(queues)s::text[], %(worker_id)s, %(lease)s::interval) AS claim;
