"""PostgreSQL restarted (fast and immediate shutdown) while workers claim and complete and a producer enqueues."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgqueue import DatabaseUnavailableError, Queue
from tests.apps.jobs_app import queue as app_queue
from tests.faults.harness import (
    FaultDatabase,
    PrivateServer,
    Producer,
    Workers,
    runs_per_job,
    scalar,
    statuses,
    wait_until,
)

# A test-only trigger in the test's own database: an insert of n = -1 sleeps inside the server, so that its
# commit is surely in flight when the server goes down.
SLOW_INSERT_DDL = """
CREATE FUNCTION fault_slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(120);
    RETURN NEW;
END $$;
CREATE TRIGGER fault_slow_insert BEFORE INSERT ON pgqueue.jobs
FOR EACH ROW WHEN (NEW.args->>'n' = '-1') EXECUTE FUNCTION fault_slow_insert();
"""


class BlockedEnqueue:
    """One enqueue (sync or async API) whose insert hangs in the server until the server goes down."""

    def __init__(self, dsn: str, *, use_async: bool) -> None:
        self.application = f"blocked_enqueue_{'async' if use_async else 'sync'}"
        self.queue = Queue(make_conninfo(dsn, application_name=self.application))
        self.queue.tasks = app_queue.tasks
        self.outcome: int | BaseException | None = None
        self.thread = threading.Thread(target=self._run_async if use_async else self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.outcome = self.queue.enqueue("fault_record", {"n": -1})
        except BaseException as exc:
            self.outcome = exc
        finally:
            self.queue.close()

    def _run_async(self) -> None:
        async def enqueue() -> None:
            try:
                self.outcome = await self.queue.enqueue_async("fault_record", {"n": -1})
            except BaseException as exc:
                self.outcome = exc
            finally:
                await self.queue.aclose()

        asyncio.run(enqueue())

    def in_flight(self, db: psycopg.Connection) -> bool:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event = 'PgSleep'"
        return bool(scalar(db, query, (self.application,)))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart(
    mode: str,
    pg_server: PrivateServer,
    fault_db: FaultDatabase,
    db: psycopg.Connection,
    workers: Workers,
    figures: dict[str, Any],
) -> None:
    options = ("--concurrency", "4", "--lease", "5", "--poll-interval", "1")
    pool = workers.start_many(3, fault_db.dsn, *options)
    producer = Producer(make_conninfo(fault_db.dsn, application_name="producer")).start()
    try:
        wait_until(lambda: scalar(db, "SELECT count(*) FROM fault_results") >= 50, what="jobs flowing")

        db.execute(SLOW_INSERT_DDL)
        blocked = [BlockedEnqueue(fault_db.dsn, use_async=use_async) for use_async in (False, True)]
        wait_until(lambda: all(enqueue.in_flight(db) for enqueue in blocked), what="enqueues in flight")
        down = time.monotonic()
        pg_server.restart(mode)
        up = time.monotonic()
        db = psycopg.connect(fault_db.dsn, autocommit=True)
        server_up_at = scalar(db, "SELECT now()")

        # Recovered: every worker has run a job again and the producer has had an enqueue acknowledged.
        resumed_in = wait_until(
            lambda: scalar(db, "SELECT count(DISTINCT pid) FROM fault_results WHERE at > %s", (server_up_at,)) == 3,
            timeout=60,
            what="all workers running jobs again",
        )
        wait_until(lambda: producer.acked_at[-1] > up, timeout=60, what="enqueue working again")
        enqueue_resumed_in = min(at for at in producer.acked_at if at > up) - up
        time.sleep(1)
    finally:
        producer.stop()
    for enqueue in blocked:
        enqueue.thread.join(30)

    stuck_past_lease = 0

    def all_done() -> bool:
        nonlocal stuck_past_lease
        stuck_past_lease = max(
            stuck_past_lease,
            scalar(
                db,
                "SELECT count(*) FROM pgqueue.jobs WHERE status = 'running' "
                "AND lease_expires_at < now() - interval '5 seconds'",
            ),
        )
        return set(statuses(db)) == {"completed"}

    wait_until(all_done, timeout=120, what="every job completed")

    in_table = {job_id for (job_id,) in db.execute("SELECT id FROM pgqueue.jobs")}
    acked = set(producer.acked)
    runs = runs_per_job(db)
    twice = {job_id for job_id, count in runs.items() if count > 1}
    lost_in_rescue = {
        job_id
        for job_id, errors in db.execute("SELECT id, errors FROM pgqueue.jobs")
        if any(error["error"].startswith("worker lost") for error in errors)
    }

    for enqueue in blocked:  # a commit in flight when the server went: one clear error, and no job
        assert isinstance(enqueue.outcome, DatabaseUnavailableError), enqueue.outcome
        assert str(enqueue.outcome).startswith("database unavailable: ")
    assert not scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE args->>'n' = '-1'")
    assert all(isinstance(error, DatabaseUnavailableError) for error in producer.errors), producer.errors
    assert acked <= in_table  # every acknowledged enqueue is there
    assert set(runs) == in_table  # every job ran
    assert twice <= lost_in_rescue  # a second run only after a lease expired
    assert stuck_past_lease == 0
    # One main connection per worker: the claim loop and housekeeping did not both reconnect (and leak one).
    main_connections = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'pgqueue worker'"
    )
    assert scalar(db, main_connections) == len(pool)
    for worker in pool:
        assert worker.alive()
        log = worker.output()
        assert log.count("database connection lost") == 1, log
        assert log.count("database connection re-established") == 1, log
        assert "Traceback" not in log
    figures.update(
        enqueued=len(in_table),
        completed=statuses(db)["completed"],
        lost=len(acked - in_table),
        **{"ran twice": len(twice)},
        **{"recovery s": f"{resumed_in:.1f}"},
        notes=f"server down {up - down:.1f} s; {len(producer.errors) + len(blocked)} enqueue(s) raised "
        f"DatabaseUnavailableError; {len(in_table - acked)} stored but unacknowledged; producer back after "
        f"{enqueue_resumed_in:.1f} s",
    )
    db.close()


def test_idle_workers_notice_a_restart(
    pg_server: PrivateServer,
    fault_db: FaultDatabase,
    db: psycopg.Connection,
    workers: Workers,
    figures: dict[str, Any],
) -> None:
    pool = workers.start_many(2, fault_db.dsn, "--poll-interval", "1")
    time.sleep(1)  # idle: waiting on LISTEN and the poll timer, their connections quiet
    pg_server.restart("fast", down_for=2)
    up = time.monotonic()
    db = psycopg.connect(fault_db.dsn, autocommit=True)
    queue = Queue(fault_db.dsn)
    queue.tasks = app_queue.tasks
    ids = [queue.enqueue("fault_record", {"n": n}) for n in range(20)]
    queue.close()
    wait_until(lambda: statuses(db).get("completed") == 20, timeout=60, what="jobs after the restart")
    recovered_in = time.monotonic() - up

    for worker in pool:  # one may have run all 20 while the other was still in its reconnect backoff
        wait_until(lambda worker=worker: "re-established" in worker.output(), timeout=30, what="reconnected")
    recovered_in = max(recovered_in, time.monotonic() - up)

    runs = runs_per_job(db)
    assert set(runs) == set(ids) and max(runs.values()) == 1
    for worker in pool:
        log = worker.output()
        assert worker.alive() and "Traceback" not in log, log
        assert log.count("database connection lost") == 1 and log.count("re-established") == 1, log
    figures.update(
        enqueued=20,
        completed=statuses(db)["completed"],
        lost=20 - len(runs),
        **{"ran twice": 0},
        **{"recovery s": f"{recovered_in:.1f}"},
        notes="idle workers, server down 2 s; 20 jobs enqueued once it was back (recovery = all ran, both reconnected)",
    )
    db.close()
