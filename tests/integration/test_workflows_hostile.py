"""Hostile input to workflows: unknown and impossible parents, cycles, self-dependency, a huge `after`, parents that
already finished, hand-written SQL and forged notifications. Each is refused with one clear error and nothing
inserted, or settled by the table, never by a notification."""

from __future__ import annotations

import json

import psycopg
import pytest

from pgqueue import InBatch, InvalidJobError, JobSpec, Queue
from pgqueue.queue.jobs import MAX_PARENTS
from tests.apps.workflow_app import RUNS_DDL
from tests.integration.test_workflows import burst, start_worker, status, wait_until


@pytest.fixture
def wf(dsn: str, db: psycopg.Connection):
    db.execute(RUNS_DDL)
    from tests.apps import workflow_app

    q = Queue(dsn)
    q.tasks = workflow_app.queue.tasks
    yield q
    q.close()


def nothing_inserted(db: psycopg.Connection, jobs_before: int) -> bool:
    jobs = db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0]
    edges = db.execute("SELECT count(*) FROM pgqueue.job_dependencies").fetchone()[0]
    return jobs == jobs_before and edges == 0


def test_unknown_parent_is_refused_naming_it_and_nothing_is_inserted(wf: Queue, db: psycopg.Connection) -> None:
    real = wf.enqueue("wf_step", {"step": "real"})
    with pytest.raises(InvalidJobError, match=r"^job 987654 does not exist .*nothing was enqueued$"):
        wf.enqueue("wf_step", {"step": "x"}, after=[real, 987654])
    with pytest.raises(InvalidJobError, match="job 987654 does not exist"):
        wf.enqueue_many([JobSpec("wf_step", {"step": "ok"}), JobSpec("wf_step", {"step": "x"}, after=[987654])])
    with pytest.raises(InvalidJobError, match="job 987654 does not exist"):
        wf.chain(("wf_step", {"step": "a"}), JobSpec("wf_step", {"step": "b"}, after=[987654]))
    for impossible in (0, -5, 2**63):
        with pytest.raises(InvalidJobError, match=f"job {impossible} does not exist"):
            wf.enqueue("wf_step", {"step": "x"}, after=[impossible])
    assert nothing_inserted(db, 1)


def test_unknown_parent_in_the_callers_transaction_inserts_nothing(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    with psycopg.connect(dsn) as conn:
        wf.enqueue("wf_step", {"step": "before"}, connection=conn)
        with pytest.raises(InvalidJobError, match="job 424242 does not exist"):
            wf.enqueue("wf_step", {"step": "x"}, after=[424242], connection=conn)
        conn.rollback()  # the caller's transaction is aborted by the failed statement, as by any other
    assert nothing_inserted(db, 0)


def test_cycles_and_self_dependency_are_refused_before_any_io(wf: Queue, db: psycopg.Connection) -> None:
    with pytest.raises(InvalidJobError, match=r"cycle: 0 -> 2 -> 1 -> 0"):
        wf.enqueue_many(
            [
                JobSpec("wf_step", {"step": "a"}, after=[InBatch(2)]),
                JobSpec("wf_step", {"step": "b"}, after=[InBatch(0)]),
                JobSpec("wf_step", {"step": "c"}, after=[InBatch(1)]),
            ]
        )
    with pytest.raises(InvalidJobError, match="job 1 of this call cannot depend on itself"):
        wf.enqueue_many([JobSpec("wf_step", {"step": "a"}), JobSpec("wf_step", {"step": "b"}, after=[InBatch(1)])])
    with pytest.raises(InvalidJobError, match=r"InBatch\(7\) names no job of this call"):
        wf.enqueue_many([JobSpec("wf_step", {"step": "a"}, after=[InBatch(7)])])
    assert nothing_inserted(db, 0)


def test_a_guessed_own_id_is_refused_as_self_dependency(wf: Queue, db: psycopg.Connection) -> None:
    """A caller that guesses the id its job will get cannot make it wait for itself (a CHECK on the table)."""
    wf.enqueue("wf_step", {"step": "first"})  # the sequence now has a value
    following = db.execute("SELECT last_value + 1 FROM pgqueue.jobs_id_seq").fetchone()[0]
    with pytest.raises(InvalidJobError, match="cannot depend on itself, nor by id on a job of the same call"):
        wf.enqueue("wf_step", {"step": "x"}, after=[following])
    assert nothing_inserted(db, 1)


def test_a_cycle_through_a_guessed_id_of_the_same_call_is_refused(wf: Queue, db: psycopg.Connection) -> None:
    """Job 0 names job 1 by the id it will get, job 1 waits for job 0 by position: a cycle the position check
    cannot see. The statement refuses any id of its own batch, so nothing is inserted."""
    wf.enqueue("wf_step", {"step": "first"})
    second = db.execute("SELECT last_value + 2 FROM pgqueue.jobs_id_seq").fetchone()[0]
    specs = [
        JobSpec("wf_step", {"step": "a"}, after=[second]),
        JobSpec("wf_step", {"step": "b"}, after=[InBatch(0)]),
    ]
    with pytest.raises(InvalidJobError, match="nor by id on a job of the same call"):
        wf.enqueue_many(specs)
    assert nothing_inserted(db, 1)


def test_bad_arguments_give_one_clear_error(wf: Queue, db: psycopg.Connection) -> None:
    parent = wf.enqueue("wf_step", {"step": "p"})
    cases = [
        ({"after": parent}, "after must be a list of job ids"),
        ({"after": str(parent)}, "after must be a list of job ids"),
        ({"after": ["12"]}, "after takes job ids"),
        ({"after": [1.5]}, "after takes job ids"),
        ({"after": [True]}, "after takes job ids"),
        ({"after": [parent], "on_failure": "ignore"}, "on_failure must be 'cancel' or 'run'"),
        ({"on_failure": "\x00\n" * 50}, "on_failure must be 'cancel' or 'run'"),
        ({"after": [parent], "dedup_key": "k"}, "dedup_key and after cannot be combined"),
    ]
    for options, message in cases:
        with pytest.raises(InvalidJobError, match=message):
            wf.enqueue("wf_step", {"step": "x"}, **options)
    assert nothing_inserted(db, 1)


def test_huge_after_lists(wf: Queue, db: psycopg.Connection) -> None:
    with pytest.raises(InvalidJobError, match=f"at most {MAX_PARENTS:,} jobs"):
        wf.enqueue("wf_step", {"step": "x"}, after=range(1, MAX_PARENTS + 2))
    parents = wf.enqueue_many([("wf_step", {"step": "p"})] * 20_000)
    child = wf.enqueue("wf_step", {"step": "child"}, after=parents + parents[:100])  # duplicates count once
    assert db.execute("SELECT waiting_for FROM pgqueue.jobs WHERE id = %s", (child,)).fetchone() == (20_000,)
    db.execute("UPDATE pgqueue.jobs SET status = 'completed' WHERE id = ANY(%s)", (parents[:-1],))
    assert status(db, child) == "waiting"
    db.execute("UPDATE pgqueue.jobs SET status = 'completed' WHERE id = %s", (parents[-1],))
    assert status(db, child) == "pending"


def test_parents_that_already_finished_are_settled_at_once(wf: Queue, db: psycopg.Connection) -> None:
    done, failed, cancelled = (wf.enqueue("wf_step", {"step": s}) for s in ("done", "failed", "cancelled"))
    db.execute("UPDATE pgqueue.jobs SET status = 'completed' WHERE id = %s", (done,))
    db.execute("UPDATE pgqueue.jobs SET status = 'failed' WHERE id = %s", (failed,))
    wf.cancel(cancelled)
    assert status(db, wf.enqueue("wf_step", {"step": "a"}, after=[done])) == "pending"
    on_cancelled = wf.enqueue("wf_step", {"step": "b"}, after=[done, cancelled])
    assert status(db, on_cancelled) == "cancelled"
    error = db.execute("SELECT error FROM pgqueue.jobs WHERE id = %s", (on_cancelled,)).fetchone()[0]
    assert error == f"cancelled: job {cancelled}, which it depends on, was cancelled"
    assert status(db, wf.enqueue("wf_step", {"step": "c"}, after=[failed])) == "cancelled"
    assert status(db, wf.enqueue("wf_step", {"step": "d"}, after=[failed, cancelled], on_failure="run")) == "pending"
    # A batch whose first job is cancelled at once (its parent failed) cancels the batch job below it too.
    first, second = wf.enqueue_many(
        [JobSpec("wf_step", {"step": "e"}, after=[failed]), JobSpec("wf_step", {"step": "f"}, after=[InBatch(0)])]
    )
    assert (status(db, first), status(db, second)) == ("cancelled", "cancelled")


def test_hand_written_sql_releases_once(wf: Queue, db: psycopg.Connection) -> None:
    parent = wf.enqueue("wf_step", {"step": "p"})
    first = wf.enqueue("wf_step", {"step": "c1"}, after=[parent], on_failure="run")
    other = wf.enqueue("wf_step", {"step": "o"})
    second = wf.enqueue("wf_step", {"step": "c2"}, after=[parent, other], on_failure="run")
    db.execute("UPDATE pgqueue.jobs SET status = 'completed' WHERE id = %s", (parent,))
    # Finished again and again by hand: its edges were settled once, nothing counts down twice.
    db.execute("UPDATE pgqueue.jobs SET status = 'failed' WHERE id = %s", (parent,))
    db.execute("UPDATE pgqueue.jobs SET status = 'cancelled' WHERE id = %s", (parent,))
    assert status(db, first) == "pending"
    assert db.execute("SELECT status, waiting_for FROM pgqueue.jobs WHERE id = %s", (second,)).fetchone() == (
        "waiting",
        1,
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO pgqueue.job_dependencies (job_id, depends_on, on_failure) VALUES (%s, %s, 'maybe')",
            (second, parent),
        )


def test_a_deep_chain_fails_and_is_retried_in_one_statement_each(wf: Queue, db: psycopg.Connection) -> None:
    ids = wf.chain(*[("wf_step", {"step": str(i)}) for i in range(3000)])
    db.execute("UPDATE pgqueue.jobs SET status = 'failed' WHERE id = %s", (ids[0],))
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'cancelled'").fetchone() == (2999,)
    db.execute("UPDATE pgqueue.jobs SET status = 'pending', attempts = 0 WHERE id = %s", (ids[0],))
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'waiting'").fetchone() == (2999,)


def test_forged_notifications_never_run_a_waiting_job(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    parent = wf.enqueue("wf_step", {"step": "parent"}, delay=3600)
    child = wf.enqueue("wf_step", {"step": "child"}, after=[parent])
    worker = start_worker(dsn, "--concurrency", "2")
    try:
        for payload in (
            json.dumps({"queue": "default", "run_at": 0}),
            json.dumps({"id": child}),
            "not json",
            "\x01" * 7000,
        ):
            db.execute("SELECT pg_notify('pgqueue_jobs', %s)", (payload,))
            db.execute("SELECT pg_notify('pgqueue_cancel', %s)", (payload,))
        marker = wf.enqueue("wf_step", {"step": "marker"})  # sent after the forgeries, on the same queue
        wait_until(lambda: status(db, marker) == "completed", what="the marker job ran")
        assert (status(db, child), status(db, parent)) == ("waiting", "pending")
        assert [step for (step,) in db.execute("SELECT step FROM wf_runs").fetchall()] == ["marker"]
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output


def test_a_burst_worker_leaves_jobs_waiting_on_a_parent_not_due(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    parent = wf.enqueue("wf_step", {"step": "parent"}, delay=3600)
    child = wf.enqueue("wf_step", {"step": "child"}, after=[parent])
    burst(dsn)  # exits: nothing is runnable
    assert (status(db, parent), status(db, child)) == ("pending", "waiting")


def test_cli_enqueue_after(dsn: str, db: psycopg.Connection) -> None:
    from tests.integration.test_workflows import pgqueue

    parent = pgqueue(dsn, "enqueue", "wf_step", "--args", '{"step": "p"}', "--app", "tests.apps.workflow_app")
    assert parent.returncode == 0, parent.stderr
    parent_id = int(parent.stdout)
    child = pgqueue(
        dsn, "enqueue", "wf_step", "--args", '{"step": "c"}', "--after", str(parent_id), "--on-failure", "run",
        "--app", "tests.apps.workflow_app",
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert status(db, int(child.stdout)) == "waiting"
    for bad, message in (
        (["--after", "987654"], "error: job 987654 does not exist"),
        (["--after", str(parent_id), "--on-failure", "sometimes"], "error: on_failure must be 'cancel' or 'run'"),
    ):
        refused = pgqueue(
            dsn, "enqueue", "wf_step", "--args", '{"step": "x"}', *bad, "--app", "tests.apps.workflow_app"
        )
        assert refused.returncode == 1
        assert refused.stderr.startswith(message) and refused.stderr.count("\n") == 1, refused.stderr
        assert "Traceback" not in refused.stderr
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (2,)
