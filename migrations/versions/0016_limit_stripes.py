"""Concurrency slots in stripes, so that claims of one limit key no longer take turns.

Until now every claim that wanted a slot of a key took that key's advisory lock and held it to its commit: two
workers draining one limited task claimed one after the other, and a second worker added nothing (a no-op drain
under a limit of 1000 that never binds: 4,200 jobs/s with two workers, 4,400 with one; 6,600 unlimited).

- A key's `concurrency` is split over STRIPES (4) stripes, stripe s having concurrency / 4 slots, one more for
  the first concurrency % 4 of them (a limit of 1 has one stripe with a slot, so it works as before). Each stripe
  has its own advisory lock, which a claim takes with pg_try_advisory_xact_lock: a stripe another claim holds is
  skipped, never waited for. Under the stripe's lock, in a new statement (a new snapshot), the claim counts the
  running jobs in that stripe, exactly as it counted the whole key before: per stripe, claims still take turns,
  and the key's slots are the sum of its stripes', so the limit stays exact.
- `jobs.limit_stripe`: the stripe a running job's slots are in (one number for all its keys). A running job
  without one (granted by an older release, or set running by hand) counts in every stripe: never too many.
- A claim tries first the stripes that the jobs its own statement completes free (it hands those slots on), then
  one of its own (its backend's pid modulo 4), so that two workers' claims seldom meet; it looks at the key's
  other stripes only when those are full or taken, and then first without locks, locking only a stripe that
  looks free (a full one is left to the worker whose jobs fill it, which wants its lock to hand their slots on).
  A job for which no stripe the claim could lock has a free slot is held as before; a stripe it could not lock
  was being claimed from, so the jobs granted there free slots (and wake held jobs) as they finish, and
  maintenance's wake is the backstop.
- The key's own lock (the lock of migration 0008) is now taken shared: claims do not wait for each other on it,
  and grant_slots (a worker of a release before 0014, which takes it exclusively and counts every running job)
  still excludes them all, so a rolling deploy stays exact too.
- A concurrency-limited job that the claiming worker would only hold in memory (beyond its free slots: claimed
  ahead) is granted when a slot is free, like any other, and when none is free it is left pending, untouched
  (`no_slot`), instead of being parked: so a worker can claim limited jobs ahead without parking hundreds.
- `grant_limits` returns the stripe of each job it grants (`stripe`), which the claim writes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The slots of stripe `stripe` of a limit of `concurrency`: an even share, the first ones one more.
STRIPE_SLOTS = """
CREATE FUNCTION pgqueue.stripe_slots(concurrency integer, stripe integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT concurrency / 4 + CASE WHEN stripe < concurrency % 4 THEN 1 ELSE 0 END
$$
"""

# The running jobs of one limit key per stripe (0..3), less the jobs of `finished` (which the calling statement
# completes). A job of no stripe (granted by an older release, or set running by hand) or of a stripe out of range
# (a hand-edited row) counts in every stripe.
STRIPE_RUNNING = """
CREATE FUNCTION pgqueue.stripe_running(scope text, target text, key_arg text, key_value jsonb, finished bigint[])
RETURNS integer[]
LANGUAGE sql STABLE AS $$
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
$$
"""

GRANT_LIMITS = """
CREATE FUNCTION pgqueue.grant_limits(
    candidates bigint[], positions integer[], finished bigint[], free_slots integer
)
RETURNS TABLE (
    job_id bigint, keys text[], held_by text, deferred_by text, due_at timestamptz, no_slot boolean, rated boolean,
    stripe smallint
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    -- Concurrency: one element per (job, key) in claim order; one per distinct key; one per (key, stripe).
    need_ids bigint[];
    need_keys text[];
    need_positions integer[];  -- of each need_keys element in key_names (a text array is searched, not indexed)
    key_names text[];
    key_scopes text[];
    key_targets text[];
    key_args text[];
    key_values jsonb[];
    key_caps integer[];
    key_looked integer[];  -- per key: 0 no stripe locked yet, 1 its first stripe, 2 every stripe it could
    key_granted integer[];  -- per key: slots this claim granted
    key_full boolean[];  -- per key: every stripe looked at, none this claim could lock has a free slot
    stripe_state integer[];  -- per (key, stripe), at (key - 1) * 4 + stripe + 1: 0 not tried, 1 ours, 2 taken
    stripe_free integer[];  -- per (key, stripe) that is ours: slots free, less this claim's grants
    stripe_cap integer[];  -- per (key, stripe): its slots
    counted integer[];  -- running jobs per stripe 0..3 of one key, a job of no stripe counted in each
    stripe_order integer[];  -- the stripes in the order this claim tries them
    looked_free boolean[];  -- per stripe 0..3 of one key: free slots in the snapshot, before its lock
    try_stripe integer;
    slot_index integer;
    fits boolean;
    key_position integer;
    -- Rates: one element per (job, rate key) in claim order; one per distinct rate key.
    rate_ids bigint[];
    rate_need_keys text[];
    rate_positions integer[];  -- of each rate_need_keys element in rate_names
    rate_waiting boolean[];  -- the job waits for this key already (its run_at was moved for it)
    rate_names text[];
    rate_caps integer[];
    rate_periods interval[];
    rate_used integer[];  -- starts in the window, counting this claim's grants
    rate_stored integer[];  -- of those, the ones in pgqueue.rate_starts already (this claim's are written at the end)
    grant_keys text[] := ARRAY[]::text[];  -- this claim's starts, written in one statement at the end
    grant_jobs bigint[] := ARRAY[]::bigint[];
    window_index integer;
    rate_first integer[];  -- which start of the window frees next (1-based into the window's starts)
    rate_last_due timestamptz[];  -- the latest due time given to a job waiting for the key
    granted_at timestamptz;
    reused jsonb;
    key_lock record;
    first_index integer := 1;
    last_index integer;
    rate_index integer := 1;
    position integer;
    runs_before integer := 0;  -- jobs ahead of this candidate in the claim that run now
    denied_before integer := 0;  -- candidates ahead of this one that do not
    full_key text;
    slow_key text;
    slow_due timestamptz;
    key_due timestamptz;
    has_rate boolean;
    job_rate_first integer;
    job_rate_last integer;
BEGIN
    IF coalesce(cardinality(candidates), 0) = 0 THEN
        RETURN;
    END IF;
    -- The counts below must see claims committed while we waited for the locks: a REPEATABLE READ snapshot
    -- would not, and could grant a slot or a start twice. (SERIALIZABLE is safe: it aborts one of two claims.)
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'pgqueue limits need READ COMMITTED (or SERIALIZABLE) transactions'
            USING HINT = 'this session defaults to REPEATABLE READ: see default_transaction_isolation';
    END IF;
    -- Each job's keys read once (one look at the job and the limits per candidate), the distinct keys from them.
    WITH k AS MATERIALIZED (SELECT * FROM pgqueue.job_limit_keys(candidates)),
    d AS (SELECT DISTINCT ON (k.key) k.* FROM k ORDER BY k.key)
    SELECT (SELECT array_agg(k.id ORDER BY k.ord, k.key) FROM k),
           (SELECT array_agg(k.key ORDER BY k.ord, k.key) FROM k),
           array_agg(d.key ORDER BY d.key), array_agg(d.scope ORDER BY d.key), array_agg(d.target ORDER BY d.key),
           array_agg(d.key_arg ORDER BY d.key), array_agg(d.key_value ORDER BY d.key),
           array_agg(d.concurrency ORDER BY d.key)
    INTO need_ids, need_keys, key_names, key_scopes, key_targets, key_args, key_values, key_caps
    FROM d;
    WITH r AS MATERIALIZED (SELECT * FROM pgqueue.job_rate_keys(candidates)),
    d AS (SELECT DISTINCT ON (r.key) r.* FROM r ORDER BY r.key)
    SELECT (SELECT array_agg(r.id ORDER BY r.ord, r.key) FROM r),
           (SELECT array_agg(r.key ORDER BY r.ord, r.key) FROM r),
           (SELECT array_agg(coalesce(r.waiting, false) ORDER BY r.ord, r.key) FROM r),
           array_agg(d.key ORDER BY d.key), array_agg(d.rate ORDER BY d.key), array_agg(d.period ORDER BY d.key)
    INTO rate_ids, rate_need_keys, rate_waiting, rate_names, rate_caps, rate_periods
    FROM d;
    need_ids := coalesce(need_ids, ARRAY[]::bigint[]);
    rate_ids := coalesce(rate_ids, ARRAY[]::bigint[]);
    SELECT array_agg(array_position(key_names, wanted.key) ORDER BY wanted.ord)
    INTO need_positions
    FROM unnest(need_keys) WITH ORDINALITY AS wanted(key, ord);
    SELECT array_agg(array_position(rate_names, wanted.key) ORDER BY wanted.ord)
    INTO rate_positions
    FROM unnest(rate_need_keys) WITH ORDINALITY AS wanted(key, ord);
    IF cardinality(need_ids) = 0 AND cardinality(rate_ids) = 0 THEN
        RETURN;
    END IF;
    -- Every key's own lock in one global order (no deadlock): a rate key's exclusively (claims of a rate take
    -- turns), a slot key's shared (only grant_slots of an older release takes it exclusively). The stripes'
    -- locks below are only ever tried, never waited for, so they cannot deadlock either.
    FOR key_lock IN
        SELECT hashtextextended(name, 8008) AS id, bool_or(is_rate) AS exclusive
        FROM (
            SELECT name, false AS is_rate FROM unnest(coalesce(key_names, ARRAY[]::text[])) AS name
            UNION ALL
            SELECT name, true FROM unnest(coalesce(rate_names, ARRAY[]::text[])) AS name
        ) AS named
        GROUP BY 1
        ORDER BY 1
    LOOP
        IF key_lock.exclusive THEN
            PERFORM pg_advisory_xact_lock(key_lock.id);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(key_lock.id);
        END IF;
    END LOOP;
    IF key_names IS NOT NULL THEN
        -- The stripes this statement's completions free come first: the claim hands those slots on (the other
        -- workers' claims do not need them), so the workers keep to stripes of their own and seldom meet. Then
        -- the claim's own stripe (its backend's pid modulo 4), then the others.
        SELECT array_agg(
                   g.stripe ORDER BY g.stripe = ANY(freed.stripes) DESC, (g.stripe - pg_backend_pid() % 4 + 4) % 4
               )
        INTO stripe_order
        FROM generate_series(0, 3) AS g(stripe)
        CROSS JOIN (
            SELECT coalesce(array_agg(DISTINCT done.limit_stripe), ARRAY[]::smallint[]) AS stripes
            FROM pgqueue.jobs AS done
            WHERE done.id = ANY(coalesce(finished, ARRAY[]::bigint[]))
        ) AS freed;
        SELECT array_agg(pgqueue.stripe_slots(k.cap, g.stripe) ORDER BY k.ord, g.stripe)
        INTO stripe_cap
        FROM unnest(key_caps) WITH ORDINALITY AS k(cap, ord)
        CROSS JOIN generate_series(0, 3) AS g(stripe);
        key_looked := array_fill(0, ARRAY[cardinality(key_names)]);
        key_granted := array_fill(0, ARRAY[cardinality(key_names)]);
        key_full := array_fill(false, ARRAY[cardinality(key_names)]);
        stripe_state := array_fill(0, ARRAY[cardinality(key_names) * 4]);
        stripe_free := array_fill(0, ARRAY[cardinality(key_names) * 4]);
    END IF;
    IF rate_names IS NOT NULL THEN
        -- The grant's instant, read after the locks: every start granted before it is committed and counted, and
        -- every later one is granted at a later instant. The window is (granted_at - period, granted_at].
        granted_at := clock_timestamp();
        -- One statement each for all the keys (not one per key): the starts that left their windows go, then each
        -- key's count and the latest due time of the jobs waiting for it.
        DELETE FROM pgqueue.rate_starts AS old
        USING unnest(rate_names, rate_periods) AS k(name, period)
        WHERE old.key = k.name AND old.at <= granted_at - k.period;
        SELECT array_agg(counted.starts ORDER BY k.ord), array_agg(1 ORDER BY k.ord),
               array_agg(latest.due ORDER BY k.ord)
        INTO rate_used, rate_first, rate_last_due
        FROM unnest(rate_names) WITH ORDINALITY AS k(name, ord)
        CROSS JOIN LATERAL (
            SELECT count(*)::integer AS starts FROM pgqueue.rate_starts AS started WHERE started.key = k.name
        ) AS counted
        CROSS JOIN LATERAL (
            SELECT max(waiting.run_at) AS due FROM pgqueue.jobs AS waiting
            WHERE waiting.deferred_by = k.name AND waiting.status = 'pending' AND waiting.run_at > granted_at
        ) AS latest;
        rate_stored := rate_used;
    END IF;
    -- In claim order, each candidate with its slot keys (need_*) and its rate keys (rate_*), both sorted by job.
    FOR c IN 1..cardinality(candidates) LOOP
        job_id := candidates[c];
        keys := NULL;
        held_by := NULL;
        deferred_by := NULL;
        due_at := NULL;
        no_slot := false;
        stripe := NULL;
        runs_before := positions[c] - 1 - denied_before;
        -- This job's slot keys: need_keys[first_index..last_index].
        last_index := first_index - 1;
        WHILE last_index < cardinality(need_ids) AND need_ids[last_index + 1] = job_id LOOP
            last_index := last_index + 1;
        END LOOP;
        job_rate_first := rate_index;
        job_rate_last := rate_index - 1;
        WHILE job_rate_last < cardinality(rate_ids) AND rate_ids[job_rate_last + 1] = job_id LOOP
            job_rate_last := job_rate_last + 1;
        END LOOP;
        has_rate := job_rate_last >= job_rate_first;
        rated := has_rate;
        full_key := NULL;
        -- A key found full stays full for this claim (its grants only take slots): no need to look again.
        FOR i IN first_index..last_index LOOP
            IF key_full[need_positions[i]] THEN
                full_key := need_keys[i];
                EXIT;
            END IF;
        END LOOP;
        IF last_index >= first_index AND full_key IS NULL THEN
            -- The first stripe (in stripe_order) with a free slot of every key of the job. A key's stripes are
            -- locked as they are first needed: its first one, then (when that is full or taken) the others.
            FOR attempt IN 0..3 LOOP
                try_stripe := stripe_order[attempt + 1];
                fits := true;
                FOR i IN first_index..last_index LOOP
                    key_position := need_positions[i];
                    IF stripe_cap[(key_position - 1) * 4 + try_stripe + 1] = 0 THEN
                        fits := false;  -- a stripe without slots (a limit under 4)
                        EXIT;
                    END IF;
                    slot_index := (key_position - 1) * 4 + try_stripe + 1;
                    IF stripe_state[slot_index] = 0 AND key_looked[key_position] < 2 THEN
                        IF key_looked[key_position] = 1 THEN
                            -- Before locking the key's other stripes, a look without locks: a stripe full in this
                            -- snapshot is left alone (the worker whose jobs fill it will want its lock to hand
                            -- their slots on). One that looks free is locked and counted again.
                            counted := pgqueue.stripe_running(
                                key_scopes[key_position], key_targets[key_position], key_args[key_position],
                                key_values[key_position], finished
                            );
                            looked_free := ARRAY[
                                stripe_cap[(key_position - 1) * 4 + 1] > counted[1],
                                stripe_cap[(key_position - 1) * 4 + 2] > counted[2],
                                stripe_cap[(key_position - 1) * 4 + 3] > counted[3],
                                stripe_cap[(key_position - 1) * 4 + 4] > counted[4]
                            ];
                        END IF;
                        FOR s IN 0..3 LOOP
                            CONTINUE WHEN key_looked[key_position] = 0 AND s <> try_stripe;
                            CONTINUE WHEN stripe_state[(key_position - 1) * 4 + s + 1] <> 0;
                            CONTINUE WHEN stripe_cap[(key_position - 1) * 4 + s + 1] = 0;
                            stripe_state[(key_position - 1) * 4 + s + 1] := CASE
                                WHEN key_looked[key_position] = 1 AND NOT looked_free[s + 1] THEN 2
                                WHEN pg_try_advisory_xact_lock(
                                    hashtextextended(key_names[key_position], 8009 + s)
                                ) THEN -1
                                ELSE 2 END;
                        END LOOP;
                        key_looked[key_position] := key_looked[key_position] + 1;
                        -- A new statement, so a new snapshot: it sees every claim of these stripes committed before
                        -- our locks. Jobs this statement completes are not counted (their rows are ours).
                        counted := pgqueue.stripe_running(
                            key_scopes[key_position], key_targets[key_position], key_args[key_position],
                            key_values[key_position], finished
                        );
                        FOR s IN 0..3 LOOP
                            IF stripe_state[(key_position - 1) * 4 + s + 1] = -1 THEN
                                stripe_state[(key_position - 1) * 4 + s + 1] := 1;
                                stripe_free[(key_position - 1) * 4 + s + 1] :=
                                    stripe_cap[(key_position - 1) * 4 + s + 1] - counted[s + 1];
                            END IF;
                        END LOOP;
                    END IF;
                    IF stripe_state[slot_index] <> 1 OR stripe_free[slot_index] <= 0 THEN
                        fits := false;
                        EXIT;
                    END IF;
                END LOOP;
                IF fits THEN
                    stripe := try_stripe;
                    EXIT;
                END IF;
            END LOOP;
            IF stripe IS NULL THEN
                -- Held by the first of its keys with no free slot in any stripe this claim could see.
                FOR i IN first_index..last_index LOOP
                    key_position := need_positions[i];
                    fits := false;
                    FOR s IN 0..3 LOOP
                        IF stripe_state[(key_position - 1) * 4 + s + 1] = 1
                           AND stripe_free[(key_position - 1) * 4 + s + 1] > 0 THEN
                            fits := true;
                        END IF;
                    END LOOP;
                    IF NOT fits THEN
                        full_key := need_keys[i];
                        -- Full for good when no stripe with slots is left to try.
                        key_full[key_position] := true;
                        FOR s IN 0..3 LOOP
                            IF stripe_cap[(key_position - 1) * 4 + s + 1] > 0
                               AND stripe_state[(key_position - 1) * 4 + s + 1] = 0 THEN
                                key_full[key_position] := false;
                            END IF;
                        END LOOP;
                        EXIT;
                    END IF;
                END LOOP;
                full_key := coalesce(full_key, need_keys[first_index]);
            END IF;
        END IF;
        slow_key := NULL;
        slow_due := NULL;
        IF full_key IS NULL AND has_rate THEN
            FOR i IN job_rate_first..job_rate_last LOOP
                position := rate_positions[i];
                IF rate_used[position] >= rate_caps[position] THEN
                    -- When a start of the window frees for this job: the next start due to leave the window; for
                    -- a job not yet waiting for the key, also after the jobs that are, spaced at period / rate
                    -- (a backlog is spread once, not moved again every period). A job that waits already and
                    -- finds the window full (it was claimed a moment after a later start) keeps its place.
                    window_index := least(rate_first[position], rate_used[position]);
                    IF window_index > rate_stored[position] THEN
                        key_due := granted_at + rate_periods[position];  -- a start of this very claim
                    ELSE
                        key_due := (
                            SELECT started.at FROM pgqueue.rate_starts AS started
                            WHERE started.key = rate_names[position]
                            ORDER BY started.at
                            OFFSET window_index - 1
                            LIMIT 1
                        ) + rate_periods[position];
                        key_due := coalesce(key_due, granted_at + rate_periods[position]);
                    END IF;
                    IF rate_last_due[position] IS NOT NULL AND NOT rate_waiting[i] THEN
                        key_due := greatest(
                            key_due, rate_last_due[position] + rate_periods[position] / rate_caps[position]
                        );
                    END IF;
                    IF slow_due IS NULL OR key_due > slow_due THEN
                        slow_due := key_due;
                        slow_key := rate_names[position];
                    END IF;
                END IF;
            END LOOP;
        END IF;
        IF full_key IS NOT NULL AND runs_before >= free_slots THEN
            -- Claimed ahead only, and no slot: left pending for a worker with a free slot (parked, it would have to
            -- be woken again, and a claim for hundreds ahead would park hundreds).
            stripe := NULL;
            no_slot := true;
        ELSIF full_key IS NOT NULL THEN
            held_by := full_key;
        ELSIF slow_key IS NOT NULL THEN
            stripe := NULL;
            deferred_by := slow_key;
            due_at := slow_due;
            FOR i IN job_rate_first..job_rate_last LOOP
                position := rate_positions[i];
                IF rate_names[position] = slow_key THEN
                    rate_first[position] := rate_first[position] + 1;
                    rate_last_due[position] := greatest(rate_last_due[position], slow_due);
                END IF;
            END LOOP;
        ELSIF has_rate AND runs_before >= free_slots THEN
            -- The claiming worker would only hold it in memory: no start is counted for a handler not running.
            stripe := NULL;
            no_slot := true;
        ELSE
            IF stripe IS NOT NULL THEN
                FOR i IN first_index..last_index LOOP
                    key_position := need_positions[i];
                    slot_index := (key_position - 1) * 4 + stripe + 1;
                    stripe_free[slot_index] := stripe_free[slot_index] - 1;
                    key_granted[key_position] := key_granted[key_position] + 1;
                END LOOP;
                keys := need_keys[first_index:last_index];
            END IF;
            FOR i IN job_rate_first..job_rate_last LOOP
                position := rate_positions[i];
                rate_used[position] := rate_used[position] + 1;
                grant_keys := grant_keys || rate_names[position];
                grant_jobs := grant_jobs || job_id;
            END LOOP;
        END IF;
        IF held_by IS NOT NULL OR deferred_by IS NOT NULL OR no_slot THEN
            denied_before := denied_before + 1;
        END IF;
        RETURN NEXT;
        first_index := last_index + 1;
        rate_index := job_rate_last + 1;
    END LOOP;
    IF cardinality(grant_keys) > 0 THEN
        INSERT INTO pgqueue.rate_starts (key, at, job_id)
        SELECT granted.key, granted_at, granted.job FROM unnest(grant_keys, grant_jobs) AS granted(key, job);
    END IF;
    -- Slots of jobs this statement completes that this claim took again, per key: the wake trigger of those
    -- completions (run at the statement's end, in this transaction) then wakes no held job for them.
    IF coalesce(cardinality(finished), 0) > 0 AND key_names IS NOT NULL THEN
        SELECT jsonb_object_agg(done.key, least(done.jobs, key_granted[slot.ord]))
        INTO reused
        FROM (
            SELECT held_key AS key, count(*) AS jobs
            FROM pgqueue.jobs AS f, unnest(f.limit_keys) AS held_key
            WHERE f.id = ANY(finished)
            GROUP BY held_key
        ) AS done
        JOIN unnest(key_names) WITH ORDINALITY AS slot(name, ord) ON slot.name = done.key
        WHERE key_granted[slot.ord] > 0;
        IF reused IS NOT NULL THEN
            PERFORM set_config('pgqueue.reused_slots', reused::text, true);
        END IF;
    END IF;
END
$$
"""


def _rate_limits_0014():  # type: ignore[no-untyped-def]
    """Migration 0014's module (its text of grant_limits), for the downgrade."""
    path = Path(__file__).with_name("0014_rate_limits.py")
    spec = importlib.util.spec_from_file_location("pgqueue_migration_0014", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute("ALTER TABLE pgqueue.jobs ADD COLUMN limit_stripe smallint")
    op.execute(
        "COMMENT ON COLUMN pgqueue.jobs.limit_stripe IS 'the limit stripe (0-3) the running job''s slots are in'"
    )
    op.execute(STRIPE_SLOTS)
    op.execute(STRIPE_RUNNING)
    op.execute("DROP FUNCTION pgqueue.grant_limits(bigint[], integer[], bigint[], integer)")
    op.execute(GRANT_LIMITS)


def downgrade() -> None:
    op.execute("DROP FUNCTION pgqueue.grant_limits(bigint[], integer[], bigint[], integer)")
    op.execute(_rate_limits_0014().GRANT_LIMITS)
    op.execute("DROP FUNCTION pgqueue.stripe_running(text, text, text, jsonb, bigint[])")
    op.execute("DROP FUNCTION pgqueue.stripe_slots(integer, integer)")
    op.execute("ALTER TABLE pgqueue.jobs DROP COLUMN limit_stripe")
