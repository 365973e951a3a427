-- The metrics' statements (pgqueue/worker/metrics.py runs them), one named block each ("-- name: NAME").
-- Queue depth is a fact of the cluster, not of a worker: one worker at a time (whichever holds the session
-- advisory lock below) reads it, every metrics_interval seconds, on a connection of its own; the others export no
-- depth at all. So a cluster of any size runs these once per interval, not once per worker per scrape.

-- name: metrics_try_reporter_lock
-- The depth reporter's lock: held as long as its connection lives (a worker that dies frees it, and another
-- takes over at its next refresh). The key is pgqueue's own: 0x70677175 ("pgqu") in the high half, 1 below.
SELECT pg_try_advisory_lock(1885827445, 1) AS locked;

-- name: metrics_queue_depth
-- Per queue: jobs runnable now (ready), waiting for their run_at (scheduled), running, failed, and how long the
-- oldest runnable one has waited. Reads pending and running jobs (both partial indexes) and failed ones, never
-- the completed history. At most `limit` queues, the most loaded first: a table with a million queue names
-- must not make a scrape that big.
SELECT queue,
       count(*) FILTER (WHERE status = 'pending' AND run_at <= now()) AS ready,
       count(*) FILTER (WHERE status = 'pending' AND run_at > now()) AS scheduled,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'pending' AND run_at <= now())), 0)::float8
           AS oldest_wait
FROM pgqueue.jobs
WHERE status IN ('pending', 'running', 'failed')
GROUP BY queue
ORDER BY count(*) DESC, queue
LIMIT %(limit)s;

-- name: metrics_schedules
-- The reporter's declared schedules that are enabled, their last and next fire times (epoch seconds): a next
-- fire far in the past is a fire late or missed (no worker running the scheduler, or one stuck).
SELECT name,
       extract(epoch FROM last_fire_at)::float8 AS last_fire_at,
       extract(epoch FROM next_fire_at)::float8 AS next_fire_at
FROM pgqueue.schedules
WHERE enabled AND name = ANY(%(names)s::text[])
ORDER BY name;
