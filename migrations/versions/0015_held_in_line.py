"""The held jobs next in line for a limit key, for the claim that frees that key's slots.

- `pgqueue.held_in_line(held_key, wanted, paused, wanted_queues)`: up to `wanted` jobs held by `held_key`, in
  claim order (priority, then due time, then id), locked with SKIP LOCKED; none of a paused queue, and only of
  `wanted_queues` unless it is NULL. The claim that completes jobs of a limited task hands the slots those
  completions free to these jobs in the same statement.

Why a function: held jobs come and go in bursts (a claim parks hundreds at once), so the table's statistics seldom
know them. Planned with statistics that count no held job, the lookup read every held job by another partial index
(jobs_parked_queue_idx) and sorted them: 57 ms with 18,750 held, inside a claim that holds the key's lock. The
function is planned with sorts and bitmap scans off, which leaves the one ordered scan of jobs_held_idx (held_by,
priority DESC, run_at, id): it reads `wanted` entries and stops. It is declared to return few rows (ROWS 1: a
claim's share of one key), so that the claim never joins them to the table by a scan of it.

- `pgqueue.wake_held()` (the trigger run as each limited job stops running) looks at the slots its statement's claim
  took again first: when the claim took every slot the job freed (the common case when a limit binds: the claim
  that completes the job hands its slot on), it returns without a query. It ran a probe of the held jobs for
  every completed job before, while the claim held the key's lock, so that other claims of the key waited for it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

HELD_IN_LINE = """
CREATE FUNCTION pgqueue.held_in_line(held_key text, wanted integer, paused text[], wanted_queues text[])
RETURNS TABLE (id bigint, task text, queue text, priority integer, run_at timestamptz)
LANGUAGE sql VOLATILE
ROWS 1
SET enable_sort = off
SET enable_bitmapscan = off
AS $$
    SELECT job.id, job.task, job.queue, job.priority, job.run_at
    FROM pgqueue.jobs AS job
    WHERE job.status = 'held' AND job.held_by = held_key
      AND job.queue <> ALL(coalesce(paused, ARRAY[]::text[]))
      AND (wanted_queues IS NULL OR job.queue = ANY(wanted_queues))
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT greatest(wanted, 0)
    FOR UPDATE SKIP LOCKED
$$
"""

WAKE_HELD = """
CREATE OR REPLACE FUNCTION pgqueue.wake_held() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    woken record;
    freed text[] := ARRAY[]::text[];
    reused jsonb;
    freed_key text;
BEGIN
    -- The slots of this job that a claim in this same statement took again (grant_limits and grant_slots do not
    -- count the jobs the statement completes, and say which slots they reused): no held job is woken for those,
    -- only to be held again. Any other claim can take a slot only after this transaction commits, so a slot
    -- freed here is never lost.
    reused := nullif(current_setting('pgqueue.reused_slots', true), '')::jsonb;
    FOREACH freed_key IN ARRAY OLD.limit_keys LOOP
        IF coalesce((reused ->> freed_key)::integer, 0) > 0 THEN
            reused := jsonb_set(reused, ARRAY[freed_key], to_jsonb((reused ->> freed_key)::integer - 1));
        ELSE
            freed := freed || freed_key;
        END IF;
    END LOOP;
    IF reused IS NOT NULL THEN
        PERFORM set_config('pgqueue.reused_slots', reused::text, true);
    END IF;
    IF cardinality(freed) = 0 THEN
        RETURN NULL;
    END IF;
    -- Nothing held for the keys freed, the common case without a binding limit: one probe of jobs_held_idx.
    IF NOT EXISTS (SELECT FROM pgqueue.jobs WHERE status = 'held' AND held_by = ANY(freed)) THEN
        RETURN NULL;
    END IF;
    -- One held job per key freed (SKIP LOCKED: two statements waking at once never wait on each other).
    FOR woken IN
        WITH picked AS (
            SELECT (
                SELECT held.id
                FROM pgqueue.jobs AS held
                WHERE held.status = 'held' AND held.held_by = freed_slot.key
                ORDER BY held.priority DESC, held.run_at, held.id
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            ) AS id
            FROM unnest(freed) AS freed_slot(key)
        ),
        unparked AS (
            UPDATE pgqueue.jobs AS job
            SET status = 'pending', held_by = NULL
            FROM picked
            WHERE job.id = picked.id AND job.status = 'held'
            RETURNING job.queue
        )
        SELECT DISTINCT queue FROM unparked
    LOOP
        PERFORM pg_notify('pgqueue_jobs', json_build_object('queue', woken.queue, 'run_at', 0)::text);
    END LOOP;
    RETURN NULL;
END
$$
"""


def _limits_0008():  # type: ignore[no-untyped-def]
    """Migration 0008's module (its text of wake_held), for the downgrade."""
    path = Path(__file__).with_name("0008_limits.py")
    spec = importlib.util.spec_from_file_location("pgqueue_migration_0008", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(HELD_IN_LINE)
    op.execute(WAKE_HELD)
    op.execute(
        "COMMENT ON FUNCTION pgqueue.held_in_line(text, integer, text[], text[]) IS "
        "'the held jobs next in line for a limit key, locked (SKIP LOCKED), for the claim that frees its slots'"
    )


def downgrade() -> None:
    op.execute(_limits_0008().WAKE_HELD.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP FUNCTION pgqueue.held_in_line(text, integer, text[], text[])")
