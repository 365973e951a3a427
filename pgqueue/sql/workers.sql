-- The workers registry (pgqueue.workers): written by each worker process, read by the dashboard. A worker
-- writes its row when it starts, beats with the rescue statement it sends every maintenance interval anyway
-- (worker_heartbeat is composed with rescue_lost_jobs in store/queries.py: no extra statement while idle),
-- marks it stopped on a clean exit; any worker prunes the rows of workers long gone.

-- name: register_worker
-- A worker's row as it starts. An id is unique per process start (host:pid:random), so a conflict means only
-- that the row was written by this process before (a retried start): start over.
INSERT INTO pgqueue.workers AS w
    (id, host, pid, queues, concurrency, running, heartbeat_interval, started_at, heartbeat_at, stopped_at)
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, 0, %(heartbeat_interval)s,
        now(), now(), NULL)
ON CONFLICT (id) DO UPDATE
SET host = excluded.host, pid = excluded.pid, queues = excluded.queues, concurrency = excluded.concurrency,
    running = 0, heartbeat_interval = excluded.heartbeat_interval, started_at = now(), heartbeat_at = now(),
    stopped_at = NULL;

-- name: worker_heartbeat
-- The heartbeat, a CTE of the maintenance round's rescue: how many slots are busy, and "still here". An upsert,
-- so a row that is missing (its start-up write failed in an outage, or someone deleted it) comes back; its
-- started_at is then the time it came back.
INSERT INTO pgqueue.workers AS w (id, host, pid, queues, concurrency, running, heartbeat_interval)
VALUES (%(worker_id)s, %(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(running)s, %(heartbeat_interval)s)
ON CONFLICT (id) DO UPDATE
SET running = excluded.running, heartbeat_interval = excluded.heartbeat_interval, heartbeat_at = now();

-- name: worker_stopped
-- A clean stop: the row stays (the dashboard shows it as stopped) until it is pruned.
UPDATE pgqueue.workers
SET stopped_at = now(), heartbeat_at = now(), running = 0
WHERE id = %(worker_id)s;

-- name: prune_workers
-- Rows of workers not heard from for `keep` (stopped, or died without saying so), a bounded batch at a time,
-- read by workers_heartbeat_idx.
DELETE FROM pgqueue.workers
WHERE id IN (
    SELECT id
    FROM pgqueue.workers
    WHERE heartbeat_at < now() - %(keep)s::interval
    LIMIT %(batch)s
);
