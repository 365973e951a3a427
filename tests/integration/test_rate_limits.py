"""Rate limits with real worker processes. The database's own decisions are copied, as they are made, from
pgqueue.rate_starts into `rate_grants` by a trigger of the test's; the handlers record their starts in
`limit_runs`. The number of windows holding more grants than the rate allows must be zero, across kill -9 and
rescue too, and every run must have been granted first."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from pgqueue import Queue
from tests.apps import limits_app
from tests.apps.limits_app import RUNS_DDL
from tests.faults.harness import kill_and_settle
from tests.integration.test_cli_queues import run as run_cli
from tests.integration.test_limits import overlaps, start_worker, stop
from tests.integration.test_processes import count, wait_until

GRANTS_DDL = """
CREATE TABLE rate_grants (key text NOT NULL, at timestamptz NOT NULL, job_id bigint NOT NULL);
CREATE FUNCTION copy_rate_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rate_grants (key, at, job_id) VALUES (NEW.key, NEW.at, NEW.job_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER copy_rate_grant AFTER INSERT ON pgqueue.rate_starts
FOR EACH ROW EXECUTE FUNCTION copy_rate_grant();
"""

# For each grant of a key: the grants of that key in the window that ends with it, (at - period, at].
MOST_IN_A_WINDOW = """
SELECT g.key, max((
    SELECT count(*) FROM rate_grants AS o
    WHERE o.key = g.key AND o.at > g.at - %(period)s::interval AND o.at <= g.at
)) AS most
FROM rate_grants AS g
WHERE g.key LIKE %(keys)s
GROUP BY g.key
ORDER BY g.key
"""

# Each handler run and the latest grant of its job at or before its start: how long the start took to reach the
# handler (NULL: a run that was never granted).
RUN_DELAYS = """
SELECT r.job_id, r.attempt, extract(epoch FROM r.started_at - (
    SELECT max(g.at) FROM rate_grants AS g WHERE g.job_id = r.job_id AND g.at <= r.started_at
))::float8
FROM limit_runs AS r
WHERE r.task = ANY(%(tasks)s)
"""

# The handler starts of a task (per key when asked) in any window of `window` seconds ending with a start.
MOST_STARTS_IN = """
SELECT coalesce(max((
    SELECT count(*) FROM limit_runs AS o
    WHERE o.task = s.task AND o.key IS NOT DISTINCT FROM s.key
      AND o.started_at > s.started_at - make_interval(secs => %(window)s) AND o.started_at <= s.started_at
)), 0)
FROM limit_runs AS s
WHERE s.task = %(task)s
"""


def most_in_a_window(db: psycopg.Connection, keys: str, period: str) -> dict[str, int]:
    return {key: int(most) for key, most in db.execute(MOST_IN_A_WINDOW, {"keys": keys, "period": period})}


def running_on(db: psycopg.Connection, pid: int, tasks: list[str] | None = None, *, started: bool = False) -> list[int]:
    """The jobs running on the worker process `pid` (of these tasks; None: all; with `started`, only those whose
    start the worker has written, so that a rescue counts their attempt)."""
    rows = db.execute(
        "SELECT j.id FROM pgqueue.jobs AS j JOIN pgqueue.workers AS w ON w.id = j.worker_id "
        "WHERE w.pid = %s AND j.status = 'running' AND (%s::text[] IS NULL OR j.task = ANY(%s::text[])) "
        "AND (NOT %s OR j.started_at IS NOT NULL)",
        (pid, tasks, tasks, started),
    )
    return [row[0] for row in rows]


@pytest.fixture
def rated(dsn: str, db: psycopg.Connection):
    db.execute(RUNS_DDL)
    db.execute(GRANTS_DDL)
    q = Queue(dsn)
    q.tasks = limits_app.queue.tasks
    q.queue_limits = limits_app.queue.queue_limits
    yield q
    q.close()


@pytest.mark.timeout(300)
def test_rates_hold_over_four_processes_claiming_ahead_and_a_kill(
    rated: Queue, dsn: str, db: psycopg.Connection
) -> None:
    """4 worker processes claiming ahead (prefetch 8), one of them killed with SIGKILL while it runs rated jobs:
    no window ever holds more grants than the rate, per task and per key; every run was granted; the jobs turned
    away spent no attempt; unlimited jobs behind them ran meanwhile."""
    rated.enqueue_many(
        [("rated", {"n": n, "seconds": 0.6}) for n in range(40)]
        + [("rated_per_customer", {"customer_id": n % 3}) for n in range(24)]
        + [("unlimited", {"n": n}) for n in range(200)]
    )
    options = ["--concurrency", "4", "--prefetch", "8", "--lease", "3", "--maintenance-interval", "1"]
    workers = [start_worker(dsn, *options) for _ in range(4)]
    victim = workers[0]
    try:
        wait_until(
            lambda: (
                count(db, "task = 'rated' AND status = 'completed'") >= 5
                and bool(running_on(db, victim.pid, ["rated"], started=True))
            ),
            timeout=120,
            what="the victim running a rated job",
        )
        kill_and_settle(db, victim)  # SIGKILL; then its last statement, if any, has ended
        lost = running_on(db, victim.pid)
        lost_rated = running_on(db, victim.pid, ["rated", "rated_per_customer"], started=True)
        wait_until(lambda: count(db, "status = 'completed'") == 264, timeout=180, what="every job completed")
    finally:
        outputs = [stop(proc) for proc in workers[1:]]
    assert all(proc.returncode == 0 for proc in workers[1:]), outputs
    assert db.execute("SELECT count(DISTINCT pid) FROM limit_runs").fetchone()[0] >= 2

    # The rate (5/s, per task) and the per-customer rate (2/s each): reached, never exceeded.
    assert most_in_a_window(db, '["rate", "task:rated"]', "1 second") == {'["rate", "task:rated"]': 5}
    per_customer = most_in_a_window(db, '["rate", "task:rated_per_customer", %', "1 second")
    assert per_customer == {f'["rate", "task:rated_per_customer", {n}]': 2 for n in range(3)}, per_customer
    # rated_per_customer also has a concurrency of 2 across its customers.
    assert overlaps(db, ["rated_per_customer"], 2)[1] == 0

    # Every run was granted before it started; a run with no grant would be a start the rate did not count.
    delays = db.execute(RUN_DELAYS, {"tasks": ["rated", "rated_per_customer"]}).fetchall()
    assert len(delays) >= 64 and all(delay is not None for _job, _attempt, delay in delays), delays
    # The killed worker's lost rated jobs ran again, each new attempt under a grant of its own.
    rerun = {job for job, attempt, _delay in delays if attempt > 1}
    assert lost_rated and set(lost_rated) <= rerun, (lost_rated, delays)
    # Jobs the rate turned away spent no attempt: only jobs lost with the killed worker have more than one.
    assert {row[0] for row in db.execute("SELECT id FROM pgqueue.jobs WHERE attempts <> 1")} <= set(lost)

    # Unlimited jobs were not kept behind the rated ones: all of them ran before the last rated job started.
    last_rated = db.execute("SELECT max(started_at) FROM limit_runs WHERE task = 'rated'").fetchone()[0]
    early = db.execute(
        "SELECT count(DISTINCT job_id) FROM limit_runs WHERE task = 'unlimited' AND started_at < %s", (last_rated,)
    ).fetchone()[0]
    assert early == 200, early

    # Seen from the handlers, whose starts come a few milliseconds after the grant: no window shortened by the
    # slowest delivery holds more starts than the rate either.
    slowest = max(delay for _job, _attempt, delay in delays)
    assert slowest < 1.0, slowest
    most = db.execute(MOST_STARTS_IN, {"task": "rated", "window": 1.0 - slowest}).fetchone()[0]
    assert most <= 5, (most, slowest)


@pytest.mark.timeout(180)
def test_jobs_waiting_for_a_rate_cost_idle_workers_nothing(rated: Queue, dsn: str, db: psycopg.Connection) -> None:
    """A rate set at run time (1/h): one job runs, the rest wait with run_at moved, uncharged; the idle worker
    sends no statement while they wait (no poll within the test); removing the rate runs them at once."""
    db.execute("INSERT INTO pgqueue.jobs (queue, task, status) VALUES ('mail', 'unlimited', 'completed')")
    result = run_cli("queues", "limit", "mail", "--rate", "1/h", dsn=dsn)
    assert result.returncode == 0 and "at most 1/h starts" in result.stdout, result
    worker = start_worker(dsn, "--concurrency", "4", "--poll-interval", "120", "--queue", "mail")
    try:
        db.execute(
            "INSERT INTO pgqueue.jobs (queue, task, args) "
            "SELECT 'mail', 'unlimited', jsonb_build_object('n', n) FROM generate_series(1, 5) AS n"
        )
        wait_until(lambda: count(db, "queue = 'mail' AND status = 'completed'") == 2, what="one job run")
        wait_until(lambda: count(db, "deferred_by IS NOT NULL") == 4, what="four jobs waiting for the rate")
        due = [row[0] for row in db.execute("SELECT run_at - now() FROM pgqueue.jobs WHERE deferred_by IS NOT NULL")]
        assert min(due).total_seconds() > 3000, due  # the next start of the window, an hour after the first
        assert count(db, "deferred_by IS NOT NULL AND attempts <> 0") == 0

        # Idle: every statement of the worker's connections shows as a new query_start in pg_stat_activity.
        seen: set[tuple[int, object]] = set()
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            for pid, started in db.execute(
                "SELECT pid, query_start FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'pgqueue %%'"
            ):
                seen.add((pid, started))
            time.sleep(0.01)
        backends = {pid for pid, _started in seen}
        statements = len(seen) - len(backends)  # the first sight of each backend is its last statement before
        assert statements <= 2, seen  # a maintenance round or two; a claim loop would be hundreds

        listing = json.loads(run_cli("queues", "--json", dsn=dsn).stdout)
        mail = next(row for row in listing["limits"] if row["name"] == "queue:mail")
        assert (mail["rate"], mail["deferred"], mail["concurrency"]) == ("1/h", 4, None), mail
        result = run_cli("queues", "limit", "mail", "--rate", "none", dsn=dsn)
        assert result.returncode == 0 and "no rate limit" in result.stdout, result
        # Woken by the release's notification, not by the 120 s poll.
        wait_until(lambda: count(db, "queue = 'mail' AND status = 'completed'") == 6, timeout=30, what="all run")
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    assert count(db, "attempts > 1") == 0


def test_hostile_rate_keys_and_rows_cost_only_themselves(rated: Queue, dsn: str, db: psycopg.Connection) -> None:
    """Huge, odd and missing key values, a hand-written deferred_by and start rows of a key that is no limit's:
    the rates hold per key and every job runs."""
    huge = "c" * 200_000
    odd = ["\x1b[2J", {"nested": [1, 2]}, None, 1, "1", huge, huge, huge]
    rated.enqueue_many([("rated_per_customer", {"customer_id": value}) for value in odd])
    db.execute(
        "INSERT INTO pgqueue.jobs (task, args, deferred_by) VALUES ('unlimited', '{\"n\": 1}', 'not json ['), "
        "('unlimited', '{\"n\": 2}', %s)",
        ('["rate", "task:gone"]',),
    )
    db.execute('INSERT INTO pgqueue.rate_starts (key, at, job_id) VALUES (\'["rate", "x"]\', now(), -1)')
    worker = start_worker(dsn, "--concurrency", "8")
    try:
        wait_until(lambda: count(db, "status = 'completed'") == len(odd) + 2, timeout=60, what="every job completed")
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    assert "Traceback" not in output and "housekeeping failed" not in output, output
    # 1 and "1" are different customers; the three huge ids one customer (spelled by its md5): 2 a second each.
    most = most_in_a_window(db, '["rate", "task:rated_per_customer", %', "1 second")
    assert len(most) == 6 and max(most.values()) == 2 and sorted(most.values()).count(2) == 1, most
    assert count(db, "attempts <> 1") == 0


def test_a_raised_rate_releases_the_backlog_at_the_next_worker_start(
    rated: Queue, dsn: str, db: psycopg.Connection
) -> None:
    """Jobs spread over the old rate's schedule are due again when a worker starts with a new one declared."""
    db.execute(
        "INSERT INTO pgqueue.limits (name, scope, target, rate, rate_period) VALUES ('task:rated', 'task', 'rated', 1, "
        "'1 hour')"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (task, args, run_at, deferred_by) "
        "SELECT 'rated', jsonb_build_object('n', n), now() + n * interval '1 hour', '[\"rate\", \"task:rated\"]' "
        "FROM generate_series(1, 3) AS n"
    )
    worker = start_worker(dsn, "--concurrency", "4", "--poll-interval", "120")
    try:
        wait_until(lambda: count(db, "status = 'completed'") == 3, timeout=30, what="the backlog ran")
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    assert "limits registered or changed" in output and "task:rated" in output, output


def test_the_prune_drops_starts_that_left_every_window(db: psycopg.Connection) -> None:
    """Starts of keys no claim looks at any more go with the retention prune (older than the longest window)."""
    from pgqueue.store.queries import QUERIES

    db.execute(
        "INSERT INTO pgqueue.rate_starts (key, at, job_id) VALUES ('k', now() - interval '61 minutes', 1), "
        "('k', now() - interval '59 minutes', 2)"
    )
    db.execute(QUERIES["prune_finished"], {"retention": "7 days", "batch": 100})
    assert [row[0] for row in db.execute("SELECT job_id FROM pgqueue.rate_starts")] == [2]


def test_the_previous_releases_claim_function_keeps_slots_and_ignores_rates(db: psycopg.Connection) -> None:
    """A worker of the previous release calls grant_slots during a rolling deploy: it must still decide the
    concurrency limits, and a rate-only limit gives its jobs no key (they run, uncounted, as the README says)."""
    db.execute(
        "INSERT INTO pgqueue.limits (name, scope, target, concurrency, rate, rate_period) VALUES "
        "('task:capped', 'task', 'capped', 1, NULL, NULL), ('task:rated', 'task', 'rated', NULL, 1, '1 hour')"
    )
    ids = [
        row[0]
        for row in db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('capped'), ('capped'), ('rated') RETURNING id")
    ]
    granted = db.execute(
        "SELECT job_id, keys, held_by FROM pgqueue.grant_slots(%s, ARRAY[]::bigint[]) ORDER BY job_id", (ids,)
    ).fetchall()
    assert granted == [(ids[0], ['["task:capped"]'], None), (ids[1], None, '["task:capped"]')], granted
