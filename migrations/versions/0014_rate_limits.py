"""Rate limits, decided inside the claim like the concurrency limits: at most N starts per period, cluster-wide.

- `pgqueue.limits` gains `rate` and `rate_period` (at most `rate` starts in any window of `rate_period`) and
  `rate_key_arg` (per value of that argument). `concurrency` may now be NULL: a limit row has a concurrency, a
  rate or both.
- `pgqueue.rate_starts`: one row per start granted under a rate, with the database's clock at the grant. The
  window is counted from these rows, so a crash, a rescue or a rolled-back claim can never make it drift: a claim
  that rolls back takes its rows with it, and a rescued job's new attempt is a new start.
- `pgqueue.grant_limits(candidates, positions, finished, free_slots)`, called by the claim instead of `grant_slots`
  (which stays, so that a worker of the previous release keeps running through a rolling deploy: it keeps the
  concurrency limits and ignores the rates): the same exact concurrency decision, and for jobs under a rate, in
  the same locks and the same claim order:
  - the rate's window has room: granted; one row in `rate_starts` per rate key.
  - the window is full: the job stays pending, unspent, with `run_at` moved to when a start of the window frees
    (after those already waiting for that key: a backlog is spread at period/N, not moved again every period), and
    `deferred_by` naming the key. Idle workers sleep until then.
  - the claiming worker has no free slot for it (a job it would only claim ahead): left pending, untouched. A
    start is counted when the job's handler is about to run, never while it waits in a worker's memory.
- `jobs_deferred_idx`: the latest due time of the jobs waiting for each rate key (one probe per claim that defers).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Only concurrency limits have slots: a rate-only limit row is no key of job_limit_keys.
JOB_LIMIT_KEYS = """
CREATE OR REPLACE FUNCTION pgqueue.job_limit_keys(ids bigint[])
RETURNS TABLE (id bigint, ord bigint, key text, scope text, target text, key_arg text, key_value jsonb,
               concurrency integer)
LANGUAGE sql STABLE AS $$
    SELECT job.id, wanted.ord,
           CASE WHEN lim.key_arg IS NULL THEN jsonb_build_array(lim.name)
                WHEN length(coalesce(job.args -> lim.key_arg, 'null'::jsonb)::text) <= 100
                THEN jsonb_build_array(lim.name, coalesce(job.args -> lim.key_arg, 'null'::jsonb))
                ELSE jsonb_build_array(lim.name, 'md5:' || md5(coalesce(job.args -> lim.key_arg, 'null'::jsonb)::text))
           END::text,
           lim.scope, lim.target, lim.key_arg,
           CASE WHEN lim.key_arg IS NOT NULL THEN coalesce(job.args -> lim.key_arg, 'null'::jsonb) END,
           lim.concurrency
    FROM unnest(ids) WITH ORDINALITY AS wanted(id, ord)
    JOIN pgqueue.jobs AS job ON job.id = wanted.id
    JOIN pgqueue.limits AS lim
      ON lim.concurrency IS NOT NULL
     AND ((lim.scope = 'task' AND lim.target = job.task) OR (lim.scope = 'queue' AND lim.target = job.queue))
$$
"""

# The rate keys of each job, spelled like the limit keys but under "rate" (["rate", NAME] or ["rate", NAME,
# value]), so that a rate key can never be a concurrency key (no limit is named "rate"). Huge values by md5.
JOB_RATE_KEYS = """
CREATE FUNCTION pgqueue.job_rate_keys(ids bigint[])
RETURNS TABLE (id bigint, ord bigint, key text, rate integer, period interval, waiting boolean)
LANGUAGE sql STABLE AS $$
    SELECT keyed.id, keyed.ord, keyed.key, keyed.rate, keyed.period, keyed.key = keyed.deferred_by
    FROM (
        SELECT job.id, wanted.ord, job.deferred_by, lim.rate, lim.rate_period AS period,
               CASE WHEN lim.rate_key_arg IS NULL THEN jsonb_build_array('rate', lim.name)
                    WHEN length(coalesce(job.args -> lim.rate_key_arg, 'null'::jsonb)::text) <= 100
                    THEN jsonb_build_array('rate', lim.name, coalesce(job.args -> lim.rate_key_arg, 'null'::jsonb))
                    ELSE jsonb_build_array(
                        'rate', lim.name, 'md5:' || md5(coalesce(job.args -> lim.rate_key_arg, 'null'::jsonb)::text))
               END::text AS key
        FROM unnest(ids) WITH ORDINALITY AS wanted(id, ord)
        JOIN pgqueue.jobs AS job ON job.id = wanted.id
        JOIN pgqueue.limits AS lim
          ON lim.rate IS NOT NULL
         AND ((lim.scope = 'task' AND lim.target = job.task) OR (lim.scope = 'queue' AND lim.target = job.queue))
    ) AS keyed
$$
"""

# A rate as people write it: 10/s, 100/m, 5/h; another period (written by hand) in seconds: 3/90s.
RATE_TEXT = """
CREATE FUNCTION pgqueue.rate_text(rate integer, period interval) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN rate IS NULL THEN NULL
                WHEN period = interval '1 second' THEN rate || '/s'
                WHEN period = interval '1 minute' THEN rate || '/m'
                WHEN period = interval '1 hour' THEN rate || '/h'
                ELSE rate || '/' || extract(epoch FROM period)::float8 || 's'
           END
$$
"""

GRANT_LIMITS = """
CREATE FUNCTION pgqueue.grant_limits(
    candidates bigint[], positions integer[], finished bigint[], free_slots integer
)
RETURNS TABLE (
    job_id bigint, keys text[], held_by text, deferred_by text, due_at timestamptz, no_slot boolean, rated boolean
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    -- Concurrency, as grant_slots did: one element per (job, key) in claim order; one per distinct key.
    need_ids bigint[];
    need_keys text[];
    key_names text[];
    key_scopes text[];
    key_targets text[];
    key_args text[];
    key_values jsonb[];
    key_caps integer[];
    free integer[];
    free_before integer[];
    -- Rates: one element per (job, rate key) in claim order; one per distinct rate key.
    rate_ids bigint[];
    rate_need_keys text[];
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
    lock_id bigint;
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
    SELECT array_agg(k.id ORDER BY k.ord, k.key), array_agg(k.key ORDER BY k.ord, k.key)
    INTO need_ids, need_keys
    FROM pgqueue.job_limit_keys(candidates) AS k;
    SELECT array_agg(d.key ORDER BY d.key), array_agg(d.scope ORDER BY d.key), array_agg(d.target ORDER BY d.key),
           array_agg(d.key_arg ORDER BY d.key), array_agg(d.key_value ORDER BY d.key),
           array_agg(d.concurrency ORDER BY d.key)
    INTO key_names, key_scopes, key_targets, key_args, key_values, key_caps
    FROM (
        SELECT DISTINCT ON (k.key) k.key, k.scope, k.target, k.key_arg, k.key_value, k.concurrency
        FROM pgqueue.job_limit_keys(candidates) AS k
        ORDER BY k.key
    ) AS d;
    SELECT array_agg(r.id ORDER BY r.ord, r.key), array_agg(r.key ORDER BY r.ord, r.key),
           array_agg(coalesce(r.waiting, false) ORDER BY r.ord, r.key)
    INTO rate_ids, rate_need_keys, rate_waiting
    FROM pgqueue.job_rate_keys(candidates) AS r;
    SELECT array_agg(d.key ORDER BY d.key), array_agg(d.rate ORDER BY d.key), array_agg(d.period ORDER BY d.key)
    INTO rate_names, rate_caps, rate_periods
    FROM (
        SELECT DISTINCT ON (r.key) r.key, r.rate, r.period FROM pgqueue.job_rate_keys(candidates) AS r ORDER BY r.key
    ) AS d;
    need_ids := coalesce(need_ids, ARRAY[]::bigint[]);
    rate_ids := coalesce(rate_ids, ARRAY[]::bigint[]);
    IF cardinality(need_ids) = 0 AND cardinality(rate_ids) = 0 THEN
        RETURN;
    END IF;
    -- Claims wanting a key take turns here, every key (slot or rate) locked in one global order: no deadlock.
    FOR lock_id IN
        SELECT DISTINCT hashtextextended(name, 8008)
        FROM unnest(coalesce(key_names, ARRAY[]::text[]) || coalesce(rate_names, ARRAY[]::text[])) AS name
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(lock_id);
    END LOOP;
    -- New statements from here on, so new snapshots: they see every claim of these keys committed before our locks.
    IF key_names IS NOT NULL THEN
        SELECT array_agg(
                   slot.cap - (
                       SELECT count(*)
                       FROM pgqueue.jobs AS running
                       WHERE running.status = 'running'
                         AND running.id <> ALL(coalesce(finished, ARRAY[]::bigint[]))
                         AND CASE WHEN slot.scope = 'task' THEN running.task ELSE running.queue END = slot.target
                         AND (slot.arg IS NULL OR coalesce(running.args -> slot.arg, 'null'::jsonb) = slot.value)
                   )::integer
                   ORDER BY slot.ord
               )
        INTO free
        FROM unnest(key_scopes, key_targets, key_args, key_values, key_caps) WITH ORDINALITY
             AS slot(scope, target, arg, value, cap, ord);
    END IF;
    free_before := free;
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
        FOR i IN first_index..last_index LOOP
            position := array_position(key_names, need_keys[i]);
            IF free[position] <= 0 THEN
                full_key := key_names[position];
                EXIT;
            END IF;
        END LOOP;
        slow_key := NULL;
        slow_due := NULL;
        IF full_key IS NULL AND has_rate THEN
            FOR i IN job_rate_first..job_rate_last LOOP
                position := array_position(rate_names, rate_need_keys[i]);
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
        IF full_key IS NOT NULL THEN
            held_by := full_key;
        ELSIF slow_key IS NOT NULL THEN
            deferred_by := slow_key;
            due_at := slow_due;
            FOR i IN job_rate_first..job_rate_last LOOP
                position := array_position(rate_names, rate_need_keys[i]);
                IF rate_names[position] = slow_key THEN
                    rate_first[position] := rate_first[position] + 1;
                    rate_last_due[position] := greatest(rate_last_due[position], slow_due);
                END IF;
            END LOOP;
        ELSIF has_rate AND runs_before >= free_slots THEN
            -- The claiming worker would only hold it in memory: no start is counted for a handler not running.
            no_slot := true;
        ELSE
            FOR i IN first_index..last_index LOOP
                position := array_position(key_names, need_keys[i]);
                free[position] := free[position] - 1;
            END LOOP;
            IF last_index >= first_index THEN
                keys := need_keys[first_index:last_index];
            END IF;
            FOR i IN job_rate_first..job_rate_last LOOP
                position := array_position(rate_names, rate_need_keys[i]);
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
        SELECT jsonb_object_agg(done.key, least(done.jobs, free_before[slot.ord] - free[slot.ord]))
        INTO reused
        FROM (
            SELECT held_key AS key, count(*) AS jobs
            FROM pgqueue.jobs AS f, unnest(f.limit_keys) AS held_key
            WHERE f.id = ANY(finished)
            GROUP BY held_key
        ) AS done
        JOIN unnest(key_names) WITH ORDINALITY AS slot(name, ord) ON slot.name = done.key
        WHERE free_before[slot.ord] > free[slot.ord];
        IF reused IS NOT NULL THEN
            PERFORM set_config('pgqueue.reused_slots', reused::text, true);
        END IF;
    END IF;
END
$$
"""


def _limits_0008():  # type: ignore[no-untyped-def]
    """Migration 0008's module (its text of job_limit_keys), for the downgrade."""
    path = Path(__file__).with_name("0008_limits.py")
    spec = importlib.util.spec_from_file_location("pgqueue_migration_0008", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE pgqueue.limits
            ALTER COLUMN concurrency DROP NOT NULL,
            ADD COLUMN rate integer,
            ADD COLUMN rate_period interval,
            ADD COLUMN rate_key_arg text,
            DROP CONSTRAINT limits_concurrency_check,
            DROP CONSTRAINT limits_key_arg_check,
            ADD CONSTRAINT limits_concurrency_check CHECK (concurrency IS NULL OR concurrency >= 1),
            ADD CONSTRAINT limits_key_arg_check CHECK (key_arg IS NULL OR (scope = 'task' AND concurrency IS NOT NULL)),
            ADD CONSTRAINT limits_rate_check CHECK (
                (rate IS NULL AND rate_period IS NULL)
                OR (rate BETWEEN 1 AND 10000 AND rate_period > interval '0' AND rate_period <= interval '1 hour')
            ),
            ADD CONSTRAINT limits_rate_key_arg_check CHECK (
                rate_key_arg IS NULL OR (scope = 'task' AND rate IS NOT NULL)
            ),
            ADD CONSTRAINT limits_some_limit_check CHECK (concurrency IS NOT NULL OR rate IS NOT NULL)
        """
    )
    op.execute("COMMENT ON COLUMN pgqueue.limits.rate IS 'at most this many starts in any window of rate_period'")
    op.execute("COMMENT ON COLUMN pgqueue.limits.rate_key_arg IS 'the rate counts per value of this arg'")
    op.execute(
        """
        CREATE TABLE pgqueue.rate_starts (
            key text NOT NULL,
            at timestamptz NOT NULL,
            job_id bigint NOT NULL
        )
        """
    )
    op.execute("COMMENT ON TABLE pgqueue.rate_starts IS 'the starts granted under a rate, while in its window'")
    op.execute("CREATE INDEX rate_starts_key_idx ON pgqueue.rate_starts (key, at)")
    op.execute("ALTER TABLE pgqueue.jobs ADD COLUMN deferred_by text")
    op.execute("COMMENT ON COLUMN pgqueue.jobs.deferred_by IS 'the rate key whose window moved run_at'")
    op.execute(
        "CREATE INDEX jobs_deferred_idx ON pgqueue.jobs (deferred_by, run_at) "
        "WHERE deferred_by IS NOT NULL AND status = 'pending'"
    )
    op.execute(JOB_LIMIT_KEYS)
    op.execute(JOB_RATE_KEYS)
    op.execute(GRANT_LIMITS)
    op.execute(RATE_TEXT)


def downgrade() -> None:
    limits_0008 = _limits_0008()
    op.execute("DROP FUNCTION pgqueue.grant_limits(bigint[], integer[], bigint[], integer)")
    op.execute("DROP FUNCTION pgqueue.job_rate_keys(bigint[])")
    op.execute("DROP FUNCTION pgqueue.rate_text(integer, interval)")
    op.execute(limits_0008.JOB_LIMIT_KEYS.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP INDEX pgqueue.jobs_deferred_idx")
    op.execute("ALTER TABLE pgqueue.jobs DROP COLUMN deferred_by")
    op.execute("DROP TABLE pgqueue.rate_starts")
    # Rate-only limits have no place in the old schema; a limit with both keeps its concurrency.
    op.execute("DELETE FROM pgqueue.limits WHERE concurrency IS NULL")
    op.execute(
        """
        ALTER TABLE pgqueue.limits
            DROP CONSTRAINT limits_some_limit_check,
            DROP CONSTRAINT limits_rate_key_arg_check,
            DROP CONSTRAINT limits_rate_check,
            DROP CONSTRAINT limits_key_arg_check,
            DROP CONSTRAINT limits_concurrency_check,
            DROP COLUMN rate_key_arg,
            DROP COLUMN rate_period,
            DROP COLUMN rate,
            ALTER COLUMN concurrency SET NOT NULL,
            ADD CONSTRAINT limits_concurrency_check CHECK (concurrency >= 1),
            ADD CONSTRAINT limits_key_arg_check CHECK (key_arg IS NULL OR scope = 'task')
        """
    )
