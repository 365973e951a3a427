"""Concurrency limits, decided inside the claim: the `limits` table, the `held` status and two functions.

- `pgqueue.limits`: one row per declared limit, `task:NAME` (optionally per value of one argument, `key_arg`) or
  `queue:NAME`, with its `concurrency`. Written by workers at start (the limits their app declares) and by
  `pgqueue queues limit`.
- `pgqueue.grant_slots(candidates)`: called by the claim with the ids of the limited jobs it picked (in claim
  order). It takes a transaction-scoped advisory lock per limit key, in one global order, so claims that want
  the same key take turns and never deadlock; then, in a new statement (a new snapshot, which sees every claim
  committed before the lock was granted), it counts the running jobs of each key from the jobs table itself and
  grants what is free. The count is the truth: no counter to drift, nothing to free on completion, failure,
  cancel or rescue (a lost job counts until its lease expires and it is rescued). Jobs the claim finishes in the
  same statement (`finished`) are not counted: their rows are locked by that claim, so they cannot run again.
- status `held`: a limited job that was denied a slot is parked out of the claim's partial indexes (it spends
  no attempt and costs idle workers nothing). `held_by` names the key that was full.
- trigger `jobs_wake_held`: when a job holding limit keys (`limit_keys`, set by the claim) stops running, one
  held job per key goes back to pending and its queue is notified. A claim that parks a job just as a slot frees
  can miss this; the parking worker's next maintenance round wakes one held job per key (`wake_held`), so nothing
  is held for good.
- `jobs_dedup_key_idx` covers held jobs too: a held job keeps its dedup key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

STATUSES_BEFORE = "'pending', 'running', 'completed', 'failed', 'cancelled'"
STATUSES = "'pending', 'running', 'completed', 'failed', 'cancelled', 'held'"

GRANT_SLOTS = """
CREATE FUNCTION pgqueue.grant_slots(candidates bigint[], finished bigint[])
RETURNS TABLE (job_id bigint, keys text[], held_by text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    -- One element per (job, key), in claim order: what each candidate needs.
    need_ids bigint[];
    need_keys text[];
    -- One element per distinct key: how to count its running jobs, and then how many slots are free.
    key_names text[];
    key_scopes text[];
    key_targets text[];
    key_args text[];
    key_values jsonb[];
    key_caps integer[];
    free integer[];
    free_before integer[];
    reused jsonb;
    lock_id bigint;
    first_index integer := 1;
    last_index integer;
    position integer;
    full_key text;
BEGIN
    IF coalesce(cardinality(candidates), 0) = 0 THEN
        RETURN;
    END IF;
    -- The count below must see claims committed while we waited for the locks: a REPEATABLE READ snapshot
    -- would not, and could grant a slot twice. (SERIALIZABLE is safe: it aborts one of two such claims.)
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'pgqueue concurrency limits need READ COMMITTED (or SERIALIZABLE) transactions'
            USING HINT = 'this session defaults to REPEATABLE READ: see default_transaction_isolation';
    END IF;
    SELECT array_agg(k.id ORDER BY k.ord, k.key), array_agg(k.key ORDER BY k.ord, k.key)
    INTO need_ids, need_keys
    FROM pgqueue.job_limit_keys(candidates) AS k;
    IF need_ids IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(d.key ORDER BY d.key), array_agg(d.scope ORDER BY d.key), array_agg(d.target ORDER BY d.key),
           array_agg(d.key_arg ORDER BY d.key), array_agg(d.key_value ORDER BY d.key),
           array_agg(d.concurrency ORDER BY d.key)
    INTO key_names, key_scopes, key_targets, key_args, key_values, key_caps
    FROM (
        SELECT DISTINCT ON (k.key) k.key, k.scope, k.target, k.key_arg, k.key_value, k.concurrency
        FROM pgqueue.job_limit_keys(candidates) AS k
        ORDER BY k.key
    ) AS d;
    -- Claims wanting a key take turns here, each key locked in one global order (no deadlock among claims).
    FOR lock_id IN SELECT DISTINCT hashtextextended(name, 8008) FROM unnest(key_names) AS name ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(lock_id);
    END LOOP;
    -- A new statement, so a new snapshot: it sees every claim of these keys committed before our locks.
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
    free_before := free;
    -- In claim order: a job runs when every key it needs has a free slot, else it is held by the first full one.
    WHILE first_index <= cardinality(need_ids) LOOP
        last_index := first_index;
        WHILE last_index < cardinality(need_ids) AND need_ids[last_index + 1] = need_ids[first_index] LOOP
            last_index := last_index + 1;
        END LOOP;
        full_key := NULL;
        FOR i IN first_index..last_index LOOP
            position := array_position(key_names, need_keys[i]);
            IF free[position] <= 0 THEN
                full_key := key_names[position];
                EXIT;
            END IF;
        END LOOP;
        job_id := need_ids[first_index];
        IF full_key IS NULL THEN
            FOR i IN first_index..last_index LOOP
                position := array_position(key_names, need_keys[i]);
                free[position] := free[position] - 1;
            END LOOP;
            keys := need_keys[first_index:last_index];
            held_by := NULL;
        ELSE
            keys := NULL;
            held_by := full_key;
        END IF;
        RETURN NEXT;
        first_index := last_index + 1;
    END LOOP;
    -- Slots of jobs this statement completes that this claim took again, per key: the wake trigger of those
    -- completions (run at the statement's end, in this transaction) then wakes no held job for them.
    IF coalesce(cardinality(finished), 0) > 0 THEN
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

# The limit keys of each job: one per limit on its task or its queue, a JSON array: ["task:NAME"], or for a
# per-argument limit ["task:NAME", value] (1 and "1" are different keys; a job without the argument has null).
# JSON, so that no task name or value can spell another limit's key. A value longer than 100 characters is
# spelled by its md5 (the key is indexed while held; a huge value must not make that index refuse the row): keys
# only name locks and held jobs, the running jobs are counted by the value itself.
JOB_LIMIT_KEYS = """
CREATE FUNCTION pgqueue.job_limit_keys(ids bigint[])
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
      ON (lim.scope = 'task' AND lim.target = job.task) OR (lim.scope = 'queue' AND lim.target = job.queue)
$$
"""

# The limit a key (as job_limit_keys spells it) belongs to; NULL when there is none (removed, or a hand-written
# held_by). Compared as text, never parsed: a bad value in one row cannot make a statement fail.
LIMIT_OF = """
CREATE FUNCTION pgqueue.limit_of(key text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT lim.name
    FROM pgqueue.limits AS lim
    WHERE key = jsonb_build_array(lim.name)::text
       OR starts_with(key, left(jsonb_build_array(lim.name)::text, -1) || ', ')
    LIMIT 1
$$
"""

WAKE_HELD = """
CREATE FUNCTION pgqueue.wake_held() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    woken record;
    freed text[] := ARRAY[]::text[];
    reused jsonb;
    freed_key text;
BEGIN
    -- The common case, nothing held for these keys, costs one probe of jobs_held_idx.
    IF NOT EXISTS (SELECT FROM pgqueue.jobs WHERE status = 'held' AND held_by = ANY(OLD.limit_keys)) THEN
        RETURN NULL;
    END IF;
    -- A claim in this same statement may have taken the slot again (grant_slots does not count the jobs the
    -- statement completes, and says which slots it reused): then no held job is woken only to be held again.
    -- Any other claim can take the slot only after this transaction commits, so a slot freed here is never lost.
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


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgqueue.limits (
            name text PRIMARY KEY,
            scope text NOT NULL,
            target text NOT NULL,
            concurrency integer NOT NULL,
            key_arg text,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT limits_scope_check CHECK (scope IN ('task', 'queue')),
            CONSTRAINT limits_name_check CHECK (name = scope || ':' || target),
            CONSTRAINT limits_concurrency_check CHECK (concurrency >= 1),
            CONSTRAINT limits_key_arg_check CHECK (key_arg IS NULL OR scope = 'task')
        )
        """
    )
    op.execute("COMMENT ON COLUMN pgqueue.limits.key_arg IS 'at most concurrency running jobs per value of this arg'")
    op.execute("ALTER DOMAIN pgqueue.job_status DROP CONSTRAINT job_status_check")
    op.execute(f"ALTER DOMAIN pgqueue.job_status ADD CONSTRAINT job_status_check CHECK (VALUE IN ({STATUSES}))")
    op.execute("ALTER TABLE pgqueue.jobs ADD COLUMN limit_keys text[], ADD COLUMN held_by text")
    op.execute("COMMENT ON COLUMN pgqueue.jobs.limit_keys IS 'the limit slots the running job holds'")
    op.execute("COMMENT ON COLUMN pgqueue.jobs.held_by IS 'the full limit key that holds the job back'")
    op.execute("CREATE INDEX jobs_held_idx ON pgqueue.jobs (held_by, priority DESC, run_at, id) WHERE status = 'held'")
    op.execute("DROP INDEX pgqueue.jobs_dedup_key_idx")
    op.execute(
        "CREATE UNIQUE INDEX jobs_dedup_key_idx ON pgqueue.jobs (dedup_key) "
        "WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running', 'held')"
    )
    op.execute(JOB_LIMIT_KEYS)
    op.execute(GRANT_SLOTS)
    op.execute(LIMIT_OF)
    op.execute(WAKE_HELD)
    op.execute(
        "CREATE TRIGGER jobs_wake_held AFTER UPDATE OF status ON pgqueue.jobs FOR EACH ROW "
        "WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND OLD.limit_keys IS NOT NULL) "
        "EXECUTE FUNCTION pgqueue.wake_held()"
    )
    op.execute(
        "CREATE TRIGGER jobs_wake_held_on_delete AFTER DELETE ON pgqueue.jobs FOR EACH ROW "
        "WHEN (OLD.status = 'running' AND OLD.limit_keys IS NOT NULL) "
        "EXECUTE FUNCTION pgqueue.wake_held()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_wake_held_on_delete ON pgqueue.jobs")
    op.execute("DROP TRIGGER jobs_wake_held ON pgqueue.jobs")
    op.execute("DROP FUNCTION pgqueue.wake_held()")
    op.execute("DROP FUNCTION pgqueue.limit_of(text)")
    op.execute("DROP FUNCTION pgqueue.grant_slots(bigint[], bigint[])")
    op.execute("DROP FUNCTION pgqueue.job_limit_keys(bigint[])")
    # Held jobs have no place in the old schema: back to pending (the old claim takes them, unlimited).
    op.execute("UPDATE pgqueue.jobs SET status = 'pending' WHERE status = 'held'")
    op.execute("DROP INDEX pgqueue.jobs_dedup_key_idx")
    op.execute(
        "CREATE UNIQUE INDEX jobs_dedup_key_idx ON pgqueue.jobs (dedup_key) "
        "WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running')"
    )
    op.execute("DROP INDEX pgqueue.jobs_held_idx")
    op.execute("ALTER TABLE pgqueue.jobs DROP COLUMN held_by, DROP COLUMN limit_keys")
    op.execute("ALTER DOMAIN pgqueue.job_status DROP CONSTRAINT job_status_check")
    op.execute(f"ALTER DOMAIN pgqueue.job_status ADD CONSTRAINT job_status_check CHECK (VALUE IN ({STATUSES_BEFORE}))")
    op.execute("DROP TABLE pgqueue.limits")
