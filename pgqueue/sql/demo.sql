-- `pgqueue demo` (pgqueue/cli/demo.py): an application's own table, and the SQL that shows its jobs' history.

-- name: demo_create_schema
CREATE SCHEMA IF NOT EXISTS pgqueue_demo;

-- name: demo_create_orders
CREATE TABLE IF NOT EXISTS pgqueue_demo.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL
);

-- name: demo_insert_order
INSERT INTO pgqueue_demo.orders (customer, total) VALUES (%(customer)s, %(total)s) RETURNING id;

-- name: demo_jobs_of_order
SELECT count(*) FROM pgqueue.jobs WHERE args->>'order_id' = %(order_id)s;

-- name: demo_unfinished
SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%(ids)s) AND status IN ('pending', 'running');

-- name: demo_history
SELECT id, task, status, attempts, args->>'order_id' AS order_id,
       finished_at - created_at AS took,
       (SELECT string_agg(e->>'attempt' || ': ' || (e->>'error'), '; ') FROM jsonb_array_elements(errors) e)
           AS errors
FROM pgqueue.jobs
WHERE queue = 'pgqueue-demo' AND args->>'order_id' = %(order_id)s
ORDER BY id;
