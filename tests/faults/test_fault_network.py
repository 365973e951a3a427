"""The network between workers and PostgreSQL fails: connections cut, or silently black-holed.

Workers reach the database through a TCP proxy (tests/faults/proxy.py); the handlers write their results over a
direct connection, and the test enqueues and observes directly too.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psycopg

from pgqueue import JobSpec, Queue
from tests.apps.jobs_app import queue as app_queue
from tests.faults.harness import FaultDatabase, Workers, runs_per_job, scalar, statuses, wait_until
from tests.faults.proxy import TcpProxy


def enqueue(dsn: str, first: int, count: int, seconds: float = 0.0) -> None:
    queue = Queue(dsn)
    queue.tasks = app_queue.tasks
    try:
        queue.enqueue_many([JobSpec("fault_record", {"n": n, "seconds": seconds}) for n in range(first, first + count)])
    finally:
        queue.close()


def listeners(db: psycopg.Connection, *, listening: bool = False) -> dict[int, int]:
    """pid -> client port of the workers' LISTEN connections (with `listening`: only those past their LISTEN)."""
    query = (
        "SELECT pid, client_port FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'pgqueue listen'"
    )
    if listening:
        query += " AND (query LIKE 'LISTEN %%' OR query = 'SELECT 1')"
    return dict(db.execute(query).fetchall())


def lost_and_back(log: str) -> tuple[int, int]:
    return log.count("database connection lost"), log.count("database connection re-established")


def test_connections_severed_then_restored(
    fault_db: FaultDatabase, db: psycopg.Connection, proxy: TcpProxy, workers: Workers, figures: dict[str, Any]
) -> None:
    through_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}/{fault_db.name}"
    pool = workers.start_many(3, through_proxy, "--concurrency", "4", "--lease", "5", "--poll-interval", "1")
    wait_until(lambda: len(listeners(db)) == 3, what="workers listening")
    enqueue(fault_db.dsn, 0, 200, seconds=0.05)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM fault_results") >= 30, what="jobs flowing")

    cut = proxy.sever()  # every connection reset, new ones refused
    enqueue(fault_db.dsn, 200, 100)  # their notifications reach no worker
    time.sleep(3)
    old_listeners = set(listeners(db))
    proxy.restore()
    restored = time.monotonic()
    wait_until(lambda: statuses(db).get("completed") == 300, timeout=90, what="every job completed")
    wait_until(lambda: len(set(listeners(db)) - old_listeners) == 3, timeout=60, what="LISTEN re-established")
    resumed_in = time.monotonic() - restored
    # The first worker back may well have run everything enqueued meanwhile (reconnects are jittered): to see
    # that each one runs jobs again, stop the other two (SIGSTOP) and give it jobs of its own.
    for turn, worker in enumerate(pool):
        others = [other for other in pool if other is not worker]
        for other in others:
            os.kill(other.process.pid, signal.SIGSTOP)
        try:
            first = 300 + 30 * turn
            enqueue(fault_db.dsn, first, 30)
            wait_until(
                lambda first=first: statuses(db).get("completed") == first + 30,
                timeout=30,
                what=f"worker {worker.process.pid} alone ran its jobs",
            )
        finally:
            for other in others:
                os.kill(other.process.pid, signal.SIGCONT)
        ran_by = {pid for (pid,) in db.execute("SELECT DISTINCT pid FROM fault_results WHERE n >= %s", (first,))}
        assert ran_by == {worker.process.pid}, ran_by

    runs = runs_per_job(db)
    assert statuses(db) == {"completed": 390}
    assert len(runs) == 390 and max(runs.values()) == 1
    for worker in pool:
        assert worker.alive()
        assert lost_and_back(worker.output()) == (1, 1), worker.output()
    figures.update(
        enqueued=390,
        completed=390,
        lost=390 - len(runs),
        **{"ran twice": sum(1 for count in runs.values() if count > 1)},
        **{"recovery s": f"{resumed_in:.1f}"},
        notes=(
            f"{cut} connections reset, new ones refused for 3 s (100 jobs enqueued meanwhile); LISTEN "
            "re-established; all 3 workers ran jobs again"
        ),
    )


def test_silently_dead_listen_connection(
    fault_db: FaultDatabase, db: psycopg.Connection, proxy: TcpProxy, workers: Workers, figures: dict[str, Any]
) -> None:
    through_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}/{fault_db.name}"
    # The probe waits min(10 s, lease) for an answer: with lease 8 the dead LISTEN is noticed after 9 s or
    # more, long after polling (every second) has run the jobs enqueued meanwhile.
    pool = workers.start_many(2, through_proxy, "--lease", "8", "--poll-interval", "1")
    # Past their LISTEN: the black hole then meets the steady state (the set-up has the same timeout).
    wait_until(lambda: len(listeners(db, listening=True)) == 2, what="workers listening")
    old = listeners(db)
    assert proxy.blackhole(lambda link: link.upstream_port in old.values()) == 2  # TCP stays up; nothing moves
    holed = time.monotonic()

    enqueue(fault_db.dsn, 0, 50)
    ran_in = wait_until(lambda: statuses(db).get("completed") == 50, timeout=30, what="jobs run by polling")
    assert set(listeners(db)) == set(old)  # the dead LISTEN not yet noticed: polling alone ran them

    # The old backends live on (the server sees nothing wrong); each worker opened a new one.
    wait_until(lambda: len(set(listeners(db)) - set(old)) == 2, timeout=60, what="LISTEN re-established")
    detected_in = time.monotonic() - holed
    enqueue(fault_db.dsn, 50, 10)
    wait_until(lambda: statuses(db).get("completed") == 60, timeout=30, what="jobs after the new LISTEN")

    runs = runs_per_job(db)
    assert len(runs) == 60 and max(runs.values()) == 1
    for worker in pool:
        assert worker.alive()
        assert "LISTEN connection: no answer within 8 s" in worker.output(), worker.output()
    figures.update(
        enqueued=60,
        completed=statuses(db)["completed"],
        lost=60 - len(runs),
        **{"ran twice": sum(1 for count in runs.values() if count > 1)},
        **{"recovery s": f"{detected_in:.1f}"},
        notes=f"LISTEN black-holed: 50 jobs run by polling in {ran_in:.1f} s; the probe replaced the "
        "connection (recovery = until a new LISTEN)",
    )


def test_black_hole_of_every_open_connection(
    fault_db: FaultDatabase, db: psycopg.Connection, proxy: TcpProxy, workers: Workers, figures: dict[str, Any]
) -> None:
    """Every open connection goes silent for good (a firewall or NAT that lost its state); new ones work."""
    through_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}/{fault_db.name}"
    lease = 4
    pool = workers.start_many(2, through_proxy, "--concurrency", "4", "--lease", str(lease), "--poll-interval", "1")
    wait_until(lambda: len(listeners(db)) == 2, what="workers listening")
    enqueue(fault_db.dsn, 0, 150, seconds=0.1)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM fault_results") >= 20, what="jobs flowing")

    holed = proxy.blackhole(lambda link: True)  # the open ones only: new connections still pass
    held_at = time.monotonic()
    time.sleep(0.5)  # statements already past the proxy finish
    running_then = {job_id for (job_id,) in db.execute("SELECT id FROM pgqueue.jobs WHERE status = 'running'")}
    enqueue(fault_db.dsn, 150, 50)
    wait_until(lambda: statuses(db).get("completed") == 200, timeout=120, what="every job completed")
    recovered_in = time.monotonic() - held_at

    runs = runs_per_job(db)
    twice = {job_id for job_id, count in runs.items() if count > 1}
    rescued = {
        job_id
        for job_id, errors in db.execute("SELECT id, errors FROM pgqueue.jobs")
        if any(error["error"].startswith("worker lost") for error in errors)
    }
    assert statuses(db) == {"completed": 200}
    assert len(runs) == 200  # none lost
    assert twice <= running_then & rescued  # only jobs running when the path died, and only after their lease
    for worker in pool:
        assert worker.alive()
        log = worker.output()
        assert "no answer" in log and "database connection re-established" in log, log
        assert "Traceback" not in log
    figures.update(
        enqueued=200,
        completed=statuses(db)["completed"],
        lost=200 - len(runs),
        **{"ran twice": len(twice)},
        **{"recovery s": f"{recovered_in:.1f}"},
        notes=f"{holed} open connections black-holed for good, lease {lease} s; twice = running then, "
        "lease expired before the worker's new connection could ack",
    )


def test_listen_connection_silent_while_it_is_set_up(
    fault_db: FaultDatabase, db: psycopg.Connection, proxy: TcpProxy, figures: dict[str, Any], monkeypatch: Any
) -> None:
    """The path goes silent between connecting and LISTEN: the set-up has the probe's timeout, not none."""
    import asyncio
    import threading

    from pgqueue.store import connections
    from pgqueue.worker import Worker, WorkerSettings

    through_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}/{fault_db.name}"
    original = connections.behind_pooler_async
    silenced = threading.Event()

    async def silence_first_listen_setup(conn: psycopg.AsyncConnection) -> bool:
        # The first statement of the first LISTEN connection's set-up: black-hole it (a real fault, timed here).
        if not silenced.is_set() and conn.info.port == proxy.port:
            silenced.set()
            assert await asyncio.to_thread(proxy.blackhole, lambda link: True) == 1  # open links only
        return await original(conn)

    monkeypatch.setattr(connections, "behind_pooler_async", silence_first_listen_setup)
    monkeypatch.setenv("PGQUEUE_RESULTS_DSN", fault_db.dsn)  # where fault_record writes, as for worker processes
    queue = Queue(fault_db.dsn)
    queue.tasks = app_queue.tasks
    settings = WorkerSettings(listen_dsn=through_proxy, lease=3, poll_interval=30)  # polling would take 30 s
    worker = Worker(queue, settings)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()), daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        wait_until(silenced.is_set, timeout=30, what="the LISTEN set-up silenced")
        wait_until(lambda: len(listeners(db, listening=True)) == 1, timeout=30, what="a new LISTEN")
        listening_in = time.monotonic() - started
        enqueue(fault_db.dsn, 0, 5)
        woke = time.monotonic()
        wait_until(lambda: statuses(db).get("completed") == 5, timeout=10, what="jobs run on a notification")
        ran_in = time.monotonic() - woke
    finally:
        worker.stop()
        thread.join(30)
    assert ran_in < 5  # woken by NOTIFY, not by the 30 s poll
    runs = runs_per_job(db)
    figures.update(
        enqueued=5,
        completed=statuses(db)["completed"],
        lost=5 - len(runs),
        **{"ran twice": sum(1 for count in runs.values() if count > 1)},
        **{"recovery s": f"{listening_in:.1f}"},
        notes="LISTEN connection black-holed during its set-up (lease 3 s): replaced, then woken by NOTIFY in "
        f"{ran_in:.2f} s",
    )
