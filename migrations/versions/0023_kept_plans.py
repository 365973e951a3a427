"""The claim's functions keep their plans, one limited task's candidates are decided at once, and a claim that took
a slot of a limit leaves the jobs of that limit it cannot start pending.

- `pgqueue.pending_in_line`, `pgqueue.queue_pending_in_line` (migration 0017), `pgqueue.held_in_line` (0015) and
  `pgqueue.stripe_running` (0016) become PL/pgSQL functions, the same query in each.
- `pgqueue.grant_limits` (0016) uses generic plans only, planned with sequential scans and JIT off; and when
  every candidate is under the same one concurrency limit and no rate (one limited task, the common case), it
  decides for all of them at once instead of one by one.
- `grant_limits` leaves a job it denies a slot pending (`no_slot`) instead of parking it (`held`) when the same claim
  took a slot of that key (HAND_ON below).

Why: on PostgreSQL before 18 a SQL function that is not inlined (one with SET options, like the three picks, or a
scalar one that reads a table, like stripe_running) is parsed and planned again on every call; a PL/pgSQL
function keeps its statements' plans for the session. And PL/pgSQL itself replans a statement on every call when
the planner prices its plan for the call's values (a custom plan) below its plan for any value (a generic one),
which the array arguments of grant_limits' statements made it do every time: two thirds of grant_limits' time
was spent planning. Measured with pgbench (`BEGIN; SELECT count(*) FROM pgqueue.grant_limits(...); ROLLBACK`,
one client, 25 jobs running under a limit of 50, 2,000 jobs in all): 1.93 / 2.50 / 4.26 ms for 1 / 25 / 100
candidates before, 0.76 / 1.27 / 2.36 ms with generic plans; stripe_running alone 0.56 ms as a SQL function, 0.19
ms in PL/pgSQL.

Why the one-key path: the loop over the candidates cost about 40 us per candidate in the claims of a drain under
a binding limit of 50 (PL/pgSQL evaluates some forty expressions per candidate, over arrays), most of grant_limits'
time. With one key, the loop's decisions have a closed form: the candidates take the free slots in claim order,
stripe by stripe in the order the loop tries them, and each one left over is held, or left pending (`no_slot`)
when the worker would only hold it in memory. The locks and counts are the loop's: the key's own lock shared, then
the first stripe with slots tried and counted; only when it cannot take every candidate, the other stripes that
look free in that count tried, and all the stripes held counted once more. So the limit is as exact as before
(every slot granted was counted free under its stripe's lock, in a snapshot taken after that lock). With it,
the same pgbench: 0.69 / 0.88 / 1.41 ms.

Why the hand-on: while a limit binds, a claim that completes jobs takes their slots again and met a full limit for
the rest of its batch, and parked every job it picked beyond them (a row write, and a wake later: 2.31 row updates
per job in a drain under a binding limit of 50, against 2.00 unlimited). Its worker holds slots of the key and
claims again as each frees (the claim's answer says `slotted`), so it takes those jobs then anyway; parking is left
to claims that took no slot of the key, whose workers may never come back for it (so idle workers still do not spin
on such jobs). A worker that stops tells the queues it held slots in (worker/worker.py).

A generic plan is made once per session, whatever the statistics are then: each of these functions is planned
with sequential scans off (or, for the picks, with sorts and bitmap scans off, as before), so the kept plans use
the indexes they were written for; JIT is off in all of them, for the reason migration 0021 gives.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-08
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

PENDING_IN_LINE = """
CREATE OR REPLACE FUNCTION pgqueue.pending_in_line(wanted integer, paused text[])
RETURNS TABLE (id bigint, task text, queue text, priority integer, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
ROWS 1
SET enable_sort = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT job.id, job.task::text, job.queue::text, job.priority, job.run_at
    FROM pgqueue.jobs AS job
    WHERE job.status = 'pending' AND job.run_at <= now()
      AND job.queue <> ALL(coalesce(paused, ARRAY[]::text[]))
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT greatest(wanted, 0)
    FOR UPDATE SKIP LOCKED;
END
$$
"""

QUEUE_PENDING_IN_LINE = """
CREATE OR REPLACE FUNCTION pgqueue.queue_pending_in_line(queue_name text, wanted integer)
RETURNS TABLE (id bigint, task text, priority integer, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
ROWS 1
SET enable_sort = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT job.id, job.task::text, job.priority, job.run_at
    FROM pgqueue.jobs AS job
    WHERE job.queue = queue_name AND job.status = 'pending' AND job.run_at <= now()
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT greatest(wanted, 0)
    FOR UPDATE SKIP LOCKED;
END
$$
"""

HELD_IN_LINE = """
CREATE OR REPLACE FUNCTION pgqueue.held_in_line(held_key text, wanted integer, paused text[], wanted_queues text[])
RETURNS TABLE (id bigint, task text, queue text, priority integer, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
ROWS 1
SET enable_sort = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT job.id, job.task::text, job.queue::text, job.priority, job.run_at
    FROM pgqueue.jobs AS job
    WHERE job.status = 'held' AND job.held_by = held_key
      AND job.queue <> ALL(coalesce(paused, ARRAY[]::text[]))
      AND (wanted_queues IS NULL OR job.queue = ANY(wanted_queues))
    ORDER BY job.priority DESC, job.run_at, job.id
    LIMIT greatest(wanted, 0)
    FOR UPDATE SKIP LOCKED;
END
$$
"""

# The running jobs of one limit key per stripe (see migration 0016: a job of no stripe, or of one out of range,
# counts in every stripe), less the jobs of `finished`.
STRIPE_RUNNING = """
CREATE OR REPLACE FUNCTION pgqueue.stripe_running(
    scope text, target text, key_arg text, key_value jsonb, finished bigint[]
)
RETURNS integer[]
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
BEGIN
    RETURN (
        SELECT ARRAY[
                   count(*) FILTER (WHERE running.stripe IS NULL OR running.stripe = 0),
                   count(*) FILTER (WHERE running.stripe IS NULL OR running.stripe = 1),
                   count(*) FILTER (WHERE running.stripe IS NULL OR running.stripe = 2),
                   count(*) FILTER (WHERE running.stripe IS NULL OR running.stripe = 3)
               ]::integer[]
        FROM (
            SELECT CASE WHEN job.limit_stripe BETWEEN 0 AND 3 THEN job.limit_stripe END AS stripe
            FROM pgqueue.jobs AS job
            WHERE job.status = 'running'
              AND job.id <> ALL(coalesce(finished, ARRAY[]::bigint[]))
              AND CASE WHEN scope = 'task' THEN job.task ELSE job.queue END = target
              AND (key_arg IS NULL OR coalesce(job.args -> key_arg, 'null'::jsonb) = key_value)
        ) AS running
    );
END
$$
"""

GRANT_LIMITS_SIGNATURE = "pgqueue.grant_limits(bigint[], integer[], bigint[], integer)"
GRANT_LIMITS_SETTINGS = ("plan_cache_mode = force_generic_plan", "enable_seqscan = off", "jit = off")

# Inserted into migration 0016's grant_limits once the candidates' limit keys are read, before their rate keys
# (the loop after it decides every other case).
ONE_KEY_PATH = """
    IF cardinality(key_names) = 1 AND cardinality(need_ids) = cardinality(candidates)
       AND NOT EXISTS (
           -- A rate that could apply to a candidate: any on a queue; with a task's key (every candidate is of that
           -- task), one on that task; with a queue's key, any.
           SELECT FROM pgqueue.limits AS rated
           WHERE rated.rate IS NOT NULL
             AND (rated.scope <> 'task' OR key_scopes[1] <> 'task' OR rated.target = key_targets[1])
       ) THEN
        -- Every candidate under this one key, and no rate: the loop's decisions for all candidates at once, with
        -- its locks (the key's own, shared; then its stripes, tried) and its counts.
        DECLARE
            wanted_slots integer := cardinality(candidates);
            finished_holding bigint;  -- slots of the key that the jobs this statement completes free
            first_stripe integer;
            locked boolean[] := ARRAY[false, false, false, false];  -- per stripe 0..3: its lock is ours
            free integer[] := ARRAY[0, 0, 0, 0];  -- per stripe 0..3 that is ours: slots free
            last_taker integer[] := ARRAY[0, 0, 0, 0];  -- per place in stripe_order: the last candidate it takes
            taken integer := 0;  -- candidates granted
            others_locked boolean := false;
        BEGIN
            PERFORM pg_advisory_xact_lock_shared(hashtextextended(key_names[1], 8008));
            -- The loop's stripe order, and in the same look at the completed jobs the slots of the key they free.
            SELECT array_agg(
                       g.stripe ORDER BY g.stripe = ANY(freed.stripes) DESC, (g.stripe - pg_backend_pid() % 4 + 4) % 4
                   ),
                   min(freed.holding)
            INTO stripe_order, finished_holding
            FROM generate_series(0, 3) AS g(stripe)
            CROSS JOIN (
                SELECT coalesce(array_agg(DISTINCT done.limit_stripe), ARRAY[]::smallint[]) AS stripes,
                       coalesce(sum(cardinality(array_positions(done.limit_keys, key_names[1]))), 0) AS holding
                FROM pgqueue.jobs AS done
                WHERE done.id = ANY(coalesce(finished, ARRAY[]::bigint[]))
            ) AS freed;
            stripe_cap := ARRAY[
                pgqueue.stripe_slots(key_caps[1], 0), pgqueue.stripe_slots(key_caps[1], 1),
                pgqueue.stripe_slots(key_caps[1], 2), pgqueue.stripe_slots(key_caps[1], 3)
            ];
            FOREACH first_stripe IN ARRAY stripe_order LOOP
                EXIT WHEN stripe_cap[first_stripe + 1] > 0;  -- a limit under 4 has stripes without slots
            END LOOP;
            IF pg_try_advisory_xact_lock(hashtextextended(key_names[1], 8009 + first_stripe)) THEN
                locked[first_stripe + 1] := true;
                -- A new statement, so a snapshot that sees every claim of this stripe committed before our lock.
                counted := pgqueue.stripe_running(key_scopes[1], key_targets[1], key_args[1], key_values[1], finished);
                free[first_stripe + 1] := stripe_cap[first_stripe + 1] - counted[first_stripe + 1];
            END IF;
            IF NOT locked[first_stripe + 1] OR free[first_stripe + 1] < wanted_slots THEN
                IF NOT locked[first_stripe + 1] THEN
                    counted := pgqueue.stripe_running(
                        key_scopes[1], key_targets[1], key_args[1], key_values[1], finished
                    );
                END IF;
                -- The other stripes that look free in that count (a full one is left to the worker whose jobs
                -- fill it, which wants its lock to hand their slots on), tried and then counted again.
                FOR s IN 0..3 LOOP
                    CONTINUE WHEN s = first_stripe OR stripe_cap[s + 1] <= counted[s + 1];
                    IF pg_try_advisory_xact_lock(hashtextextended(key_names[1], 8009 + s)) THEN
                        locked[s + 1] := true;
                        others_locked := true;
                    END IF;
                END LOOP;
                IF others_locked THEN
                    counted := pgqueue.stripe_running(
                        key_scopes[1], key_targets[1], key_args[1], key_values[1], finished
                    );
                    FOR s IN 0..3 LOOP
                        IF locked[s + 1] THEN
                            free[s + 1] := stripe_cap[s + 1] - counted[s + 1];
                        END IF;
                    END LOOP;
                END IF;
            END IF;
            FOR place IN 1..4 LOOP
                taken := taken + greatest(free[stripe_order[place] + 1], 0);
                last_taker[place] := taken;
            END LOOP;
            -- A candidate left over is left pending when this claim took a slot of the key (see HAND_ON), else
            -- held unless the worker would only hold it in memory: with nothing granted ahead of it, every
            -- candidate ahead was denied, so positions - ord of the jobs ahead of it run now (runs_before).
            RETURN QUERY
            SELECT candidate.id,
                   CASE WHEN candidate.ord <= taken THEN ARRAY[key_names[1]] END,
                   CASE WHEN candidate.ord > taken AND taken = 0 AND candidate.pos - candidate.ord < free_slots
                        THEN key_names[1] END,
                   NULL::text,
                   NULL::timestamptz,
                   candidate.ord > taken AND (taken > 0 OR candidate.pos - candidate.ord >= free_slots),
                   false,
                   (CASE WHEN candidate.ord <= last_taker[1] THEN stripe_order[1]
                         WHEN candidate.ord <= last_taker[2] THEN stripe_order[2]
                         WHEN candidate.ord <= last_taker[3] THEN stripe_order[3]
                         WHEN candidate.ord <= last_taker[4] THEN stripe_order[4] END)::smallint
            FROM unnest(candidates, positions) WITH ORDINALITY AS candidate(id, pos, ord)
            ORDER BY candidate.ord;
            -- The slots of jobs this statement completes that this claim took again (as at the loop's end).
            IF finished_holding > 0 AND taken > 0 THEN
                PERFORM set_config(
                    'pgqueue.reused_slots',
                    jsonb_build_object(key_names[1], least(finished_holding, taken, wanted_slots))::text,
                    true
                );
            END IF;
            RETURN;
        END;
    END IF;
"""
ONE_KEY_PATH_BEFORE = """
    WITH r AS MATERIALIZED (SELECT * FROM pgqueue.job_rate_keys(candidates)),"""


# In the loop, where a candidate denied a slot is told apart from one the worker would only hold in memory.
HAND_ON_BEFORE = """
        IF full_key IS NOT NULL AND runs_before >= free_slots THEN"""
HAND_ON = """
        IF full_key IS NOT NULL
           AND (runs_before >= free_slots OR key_granted[array_position(key_names, full_key)] > 0) THEN
            -- Also when this claim took a slot of that key: the worker claims again as that slot frees (the
            -- claim's answer says `slotted`), and takes the next job then. Parked, the job would cost two row
            -- writes and wake a worker for nothing; a worker without a slot of the key still parks it."""


def grant_limits_loop(text_0016: str) -> str:
    """Migration 0016's grant_limits with the hand-on rule (HAND_ON): the loop as this migration leaves it."""
    assert text_0016.count(HAND_ON_BEFORE) == 1, "migration 0016's grant_limits is not the text expected"
    return text_0016.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace(HAND_ON_BEFORE, HAND_ON, 1)


def grant_limits(text_0016: str) -> str:
    """This migration's grant_limits: the loop with the hand-on rule, and the one-key path before it."""
    loop = grant_limits_loop(text_0016)
    assert loop.count(ONE_KEY_PATH_BEFORE) == 1, "migration 0016's grant_limits is not the text expected"
    return loop.replace(ONE_KEY_PATH_BEFORE, ONE_KEY_PATH.rstrip("\n") + ONE_KEY_PATH_BEFORE, 1)


def _migration(filename: str) -> ModuleType:
    """An earlier migration's module (its text of a function), for the downgrade."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"pgqueue_migration_{filename[:4]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    for function in (PENDING_IN_LINE, QUEUE_PENDING_IN_LINE, HELD_IN_LINE, STRIPE_RUNNING):
        op.execute(function)
    op.execute(grant_limits(_migration("0016_limit_stripes.py").GRANT_LIMITS))
    for setting in GRANT_LIMITS_SETTINGS:
        op.execute(f"ALTER FUNCTION {GRANT_LIMITS_SIGNATURE} SET {setting}")


def downgrade() -> None:
    # CREATE OR REPLACE also drops the settings the upgrade gave grant_limits.
    stripes = _migration("0016_limit_stripes.py")
    pending = _migration("0017_pending_in_line.py")
    held = _migration("0015_held_in_line.py")
    for text in (
        pending.PENDING_IN_LINE,
        pending.QUEUE_PENDING_IN_LINE,
        held.HELD_IN_LINE,
        stripes.STRIPE_RUNNING,
        stripes.GRANT_LIMITS,
    ):
        op.execute(text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
