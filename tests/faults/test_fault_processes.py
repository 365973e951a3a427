"""Worker processes die or are stopped mid-job: kill -9 with many jobs in flight, SIGTERM during a deploy."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg

from pgqueue import JobSpec, Queue
from tests.apps.jobs_app import queue as app_queue
from tests.faults.harness import (
    FaultDatabase,
    WorkerProcess,
    Workers,
    kill_and_settle,
    runs_per_job,
    scalar,
    statuses,
    wait_until,
    worker_pid,
)


def make_queue(dsn: str) -> Queue:
    queue = Queue(dsn)
    queue.tasks = app_queue.tasks  # the workers' task definitions, this test's database
    return queue


def running_in(db: psycopg.Connection, worker: WorkerProcess) -> set[int]:
    rows = db.execute("SELECT id, worker_id FROM pgqueue.jobs WHERE status = 'running'").fetchall()
    return {job_id for job_id, worker_id in rows if worker_pid(worker_id) == worker.pid}


def kill_when_busy(db: psycopg.Connection, victim: WorkerProcess, busy: int) -> tuple[set[int], float]:
    """kill -9 once `victim` runs `busy` jobs; returns the jobs it held at death and when it died."""
    wait_until(lambda: len(running_in(db, victim)) >= busy, timeout=60, what=f"worker {victim.pid} busy")
    died = kill_and_settle(db, victim.process)
    # Dead and its server processes gone, it can change nothing: what the database shows as its running jobs is what
    # it held.
    return running_in(db, victim), died


def test_kill_9_mid_job_many_in_flight(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    total = 600  # enough to keep every slot busy through both kills
    queue = make_queue(fault_db.dsn)
    queue.enqueue_many([JobSpec("fault_record", {"n": n, "seconds": 0.2 + (n % 4) * 0.1}) for n in range(total)])
    options = ("--concurrency", "6", "--lease", "3", "--poll-interval", "1")
    pool = workers.start_many(3, fault_db.dsn, *options)

    held: set[int] = set()
    recovery: list[float] = []
    for victim in pool[:2]:
        jobs_held, died = kill_when_busy(db, victim, busy=4)
        pool.append(workers.start(fault_db.dsn, *options))  # what a supervisor does
        # Recovered once its jobs are runnable again (rescued jobs queue up behind the backlog).
        wait_until(
            lambda jobs=list(jobs_held): (
                not scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND status = 'running'", (jobs,))
            ),
            timeout=60,
            what="the killed worker's jobs rescued",
        )
        recovery.append(time.monotonic() - died)
        held |= jobs_held
    wait_until(lambda: statuses(db).get("completed") == total, timeout=120, what="every job completed")

    runs = runs_per_job(db)
    twice = {job_id for job_id, count in runs.items() if count > 1}
    assert statuses(db) == {"completed": total}
    assert set(runs) == {job_id for (job_id,) in db.execute("SELECT id FROM pgqueue.jobs")}  # none lost
    assert twice <= held  # a second run only for a job its dead worker held
    for job_id, attempts, errors in db.execute("SELECT id, attempts, errors FROM pgqueue.jobs ORDER BY id"):
        if job_id in held:
            assert errors and errors[0]["error"].startswith("worker lost: lease expired"), (job_id, errors)
        else:
            assert (attempts, errors) == (1, []), (job_id, attempts, errors)
    assert all(worker.alive() for worker in pool[2:])
    figures.update(
        enqueued=total,
        completed=statuses(db)["completed"],
        lost=total - len(runs),
        **{"ran twice": len(twice)},
        **{"recovery s": " / ".join(f"{seconds:.1f}" for seconds in recovery)},
        notes=f"2 workers killed holding {len(held)} jobs (lease 3 s); twice = handler done, ack not yet written",
    )


def test_kill_9_while_draining_short_jobs_claimed_ahead(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    """Short jobs are claimed ahead of free slots; a worker killed then holds many more jobs than it runs."""
    total, concurrency = 3000, 6
    queue = make_queue(fault_db.dsn)
    queue.enqueue_many([JobSpec("fault_record", {"n": n}) for n in range(total)])
    options = ("--concurrency", str(concurrency), "--lease", "3", "--poll-interval", "1")
    victim = workers.start_many(1, fault_db.dsn, *options)[0]
    wait_until(lambda: scalar(db, "SELECT count(*) FROM fault_results") >= 300, what="short jobs flowing")
    held, died = kill_when_busy(db, victim, busy=2 * concurrency)
    survivor = workers.start(fault_db.dsn, *options)
    wait_until(lambda: statuses(db).get("completed") == total, timeout=120, what="every job completed")
    recovered = time.monotonic() - died

    runs = runs_per_job(db)
    twice = {job_id for job_id, count in runs.items() if count > 1}
    assert len(held) > concurrency  # it held jobs claimed ahead, not only those in its slots
    assert statuses(db) == {"completed": total}
    assert len(runs) == total  # none lost
    assert twice <= held  # a second run only for a job it held: done, its ack not yet written
    uncharged = 0
    for job_id, attempts, errors in db.execute("SELECT id, attempts, errors FROM pgqueue.jobs ORDER BY id"):
        if job_id in held:
            # Rescued with the lost attempt recorded. It counts only when its handler was known to start; a job
            # claimed ahead (or killed before its start was written) goes back uncharged.
            (lost,) = errors
            assert lost["error"].startswith("worker lost: lease expired"), (job_id, errors)
            assert attempts == (2 if lost["counted"] else 1), (job_id, attempts, errors)
            uncharged += not lost["counted"]
        else:
            assert (attempts, errors) == (1, []), (job_id, attempts, errors)
    assert uncharged > 0  # jobs claimed ahead were among those held, and they cost no attempt
    assert survivor.alive()
    figures.update(
        enqueued=total,
        completed=statuses(db)["completed"],
        lost=total - len(runs),
        **{"ran twice": len(twice)},
        **{"recovery s": f"{recovered:.1f}"},
        notes=f"killed holding {len(held)} jobs ({concurrency} slots, the rest claimed ahead or done but not yet "
        f"acked); all rescued after the lease (3 s); {uncharged} had not started and cost no attempt; twice = done, "
        "ack not yet written",
    )


def test_sigterm_during_deploy(
    fault_db: FaultDatabase, db: psycopg.Connection, workers: Workers, figures: dict[str, Any]
) -> None:
    long_jobs, short_jobs, grace = 4, 150, 2.0
    queue = make_queue(fault_db.dsn)
    # The long jobs first, so that they are running when the deploy comes; they outlast the grace period.
    queue.enqueue_many([JobSpec("fault_record", {"n": n, "seconds": 8}, priority=1) for n in range(long_jobs)])
    queue.enqueue_many([JobSpec("fault_record", {"n": long_jobs + n, "seconds": 0.3}) for n in range(short_jobs)])
    options = ("--concurrency", "4", "--lease", "5", "--poll-interval", "1", "--grace-period", str(grace))
    old = workers.start_many(2, fault_db.dsn, *options)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM fault_results") >= 10, what="short jobs flowing")

    running_at_sigterm = dict(db.execute("SELECT id, worker_id FROM pgqueue.jobs WHERE status = 'running'").fetchall())
    for worker in old:
        worker.process.send_signal(15)
    signalled = time.monotonic()
    new = [workers.start(fault_db.dsn, *options) for _ in range(2)]  # the deploy's new processes
    codes = [worker.process.wait(grace + 20) for worker in old]
    exited_in = time.monotonic() - signalled
    old_pids = {worker.pid for worker in old}
    left_running = [
        job_id
        for job_id, worker_id in db.execute("SELECT id, worker_id FROM pgqueue.jobs WHERE status = 'running'")
        if worker_pid(worker_id) in old_pids
    ]
    wait_until(lambda: statuses(db).get("completed") == long_jobs + short_jobs, timeout=90, what="every job completed")

    total = long_jobs + short_jobs
    runs = runs_per_job(db)
    handed_back = {
        job_id
        for job_id, errors in db.execute("SELECT id, errors FROM pgqueue.jobs")
        if any(error["error"].startswith("interrupted: worker stopped") for error in errors)
    }
    assert codes == [0, 0]
    assert left_running == []  # nothing of the old processes is left running
    assert exited_in < grace + 15  # the grace period bounds the stop, not the 8 s jobs
    assert statuses(db) == {"completed": total}
    assert len(runs) == total and max(runs.values()) == 1  # none lost, none ran twice
    long_ids = {job_id for (job_id,) in db.execute("SELECT id FROM pgqueue.jobs WHERE priority = 1")}
    assert handed_back == long_ids & set(running_at_sigterm)  # past the grace period: handed back, attempt recorded
    for job_id, attempts, errors in db.execute("SELECT id, attempts, errors FROM pgqueue.jobs"):
        # The interrupted attempt is in the history but not counted: the job completed as attempt 1.
        assert attempts == 1, (job_id, errors)
        assert [error["counted"] for error in errors] == ([False] if job_id in handed_back else []), errors
    short_finished_by_old = scalar(
        db,
        "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s) AND priority = 0 AND attempts = 1",
        (list(running_at_sigterm),),
    )
    assert all(w.alive() for w in new)
    assert all("no new jobs;" in worker.output() for worker in old)
    handed_lines = re.findall(r"handed (\d+) unfinished job\(s\) back", "".join(w.output() for w in old))
    assert sum(map(int, handed_lines)) == len(handed_back)
    figures.update(
        enqueued=total,
        completed=statuses(db)["completed"],
        lost=total - len(runs),
        **{"ran twice": sum(1 for count in runs.values() if count > 1)},
        **{"recovery s": f"{exited_in:.1f}"},
        notes=f"grace {grace:g} s: {short_finished_by_old} running short jobs finished in it, "
        f"{len(handed_back)} long ones handed back (attempt recorded) and rerun by the new processes",
    )
