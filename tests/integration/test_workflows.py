"""Workflows with real worker processes: dependencies, chains, batches with a callback, both failure policies,
retry-failed and cancel across a workflow, burst workers that run what their completions release, and the
exactly-once release of one dependent of 1,000 parents finishing together on 4 processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgqueue import InBatch, JobSpec, Queue
from tests.apps.workflow_app import RUNS_DDL
from tests.integration.test_processes import wait_until

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.workflow_app"


def pgqueue(dsn: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    return subprocess.run(
        [PGQUEUE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def burst(dsn: str, *args: str) -> None:
    done = pgqueue(dsn, "work", "--app", APP, "--burst", *args)
    assert done.returncode == 0, done.stdout + done.stderr


def start_worker(dsn: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    return subprocess.Popen(
        [PGQUEUE, "work", "--app", APP, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def status(db: psycopg.Connection, job_id: int) -> str:
    return db.execute("SELECT status FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()[0]


def runs(db: psycopg.Connection) -> list[tuple[int, str, list, dict]]:
    """(job id, step, parents as [{id, status}], parent results) of every handler run, in the order they ran."""
    return db.execute("SELECT job_id, step, parents, parent_results FROM wf_runs ORDER BY seq").fetchall()


@pytest.fixture
def wf(dsn: str, db: psycopg.Connection):
    db.execute(RUNS_DDL)
    from tests.apps import workflow_app

    q = Queue(dsn)
    q.tasks = workflow_app.queue.tasks  # the same task definitions, on this test's database
    yield q
    q.close()


def test_after_waits_for_its_parent_and_reads_its_result(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    invoice = wf.enqueue("wf_step", {"step": "invoice", "value": {"pdf": "inv-42.pdf"}})
    email = wf.enqueue("wf_step", {"step": "email"}, after=[invoice])
    assert status(db, email) == "waiting"
    burst(dsn)  # one burst worker runs the parent and then the dependent its completion released
    assert [(step, parents, results) for _id, step, parents, results in runs(db)] == [
        ("invoice", [], {}),
        ("email", [{"id": invoice, "status": "completed"}], {str(invoice): {"pdf": "inv-42.pdf"}}),
    ]
    assert status(db, email) == "completed"


def test_chain_runs_in_order_each_reading_the_previous_result(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    ids = wf.chain(
        ("wf_step", {"step": "a", "value": 1}),
        ("wf_step_async", {"step": "b", "value": 2}),
        ("wf_step", {"step": "c", "value": 3}),
    )
    assert [status(db, i) for i in ids] == ["pending", "waiting", "waiting"]
    burst(dsn, "--concurrency", "4")
    seen = runs(db)
    assert [step for _id, step, _p, _r in seen] == ["a", "b", "c"]
    assert [results for _id, _step, _p, results in seen] == [{}, {str(ids[0]): 1}, {str(ids[1]): 2}]
    assert [status(db, i) for i in ids] == ["completed"] * 3


def test_a_failed_parent_cancels_the_chain_below_it(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    ids = wf.chain(
        ("wf_step", {"step": "a"}),
        ("wf_step", {"step": "b", "fail": True}),
        ("wf_step", {"step": "c"}),
        ("wf_step", {"step": "d"}),
    )
    burst(dsn)
    assert [step for _id, step, _p, _r in runs(db)] == ["a", "b"]  # c and d never ran
    rows = db.execute("SELECT status, error FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall()
    assert [s for s, _ in rows] == ["completed", "failed", "cancelled", "cancelled"]
    assert rows[2][1] == f"cancelled: job {ids[1]}, which it depends on, failed"
    assert rows[3][1] == f"cancelled: job {ids[1]}, which it depends on, failed"


def test_on_failure_run_runs_anyway_and_sees_the_failure(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    good = wf.enqueue("wf_step", {"step": "good", "value": "ok"})
    bad = wf.enqueue("wf_step", {"step": "bad", "fail": True})
    report = wf.enqueue("wf_step", {"step": "report"}, after=[good, bad], on_failure="run")
    burst(dsn)
    by_step = {step: (job_id, parents, results) for job_id, step, parents, results in runs(db)}
    assert by_step["report"] == (
        report,
        [{"id": good, "status": "completed"}, {"id": bad, "status": "failed"}],
        {str(good): "ok"},
    )
    assert status(db, report) == "completed"


def test_batch_callback_runs_once_after_all_and_counts_outcomes(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    batch = wf.batch(
        [("wf_step", {"step": f"thumb{i}", "value": i, "fail": i == 3}) for i in range(6)],
        on_complete=("wf_step", {"step": "album"}),
    )
    assert status(db, batch.callback) == "waiting"
    burst(dsn, "--workers", "2", "--concurrency", "3")
    seen = runs(db)
    albums = [parents for _id, step, parents, _r in seen if step == "album"]
    assert len(albums) == 1  # once
    assert seen[-1][1] == "album"  # after every job of the batch
    outcomes = [p["status"] for p in albums[0]]
    assert (outcomes.count("completed"), outcomes.count("failed")) == (5, 1)
    assert status(db, batch.callback) == "completed"


def test_enqueue_many_builds_a_diamond_and_refuses_a_cycle(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    top, left, right, bottom = wf.enqueue_many(
        [
            JobSpec("wf_step", {"step": "top"}),
            JobSpec("wf_step", {"step": "left"}, after=[InBatch(0)]),
            JobSpec("wf_step", {"step": "right"}, after=[InBatch(0)]),
            JobSpec("wf_step", {"step": "bottom"}, after=[InBatch(1), InBatch(2)]),
        ]
    )
    burst(dsn)
    order = [step for _id, step, _p, _r in runs(db)]
    assert order[0] == "top" and order[-1] == "bottom" and sorted(order[1:3]) == ["left", "right"]
    assert db.execute("SELECT waiting_for FROM pgqueue.jobs WHERE id = %s", (bottom,)).fetchone() == (0,)
    assert [(p.id, p.status) for p in wf.parents(bottom)] == [(left, "completed"), (right, "completed")]
    assert [p.id for p in wf.parents(left)] == [top]


def test_retry_failed_rearms_the_dependents_it_cancelled(
    wf: Queue, dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    flag = tmp_path / "fixed"
    ids = wf.chain(
        ("wf_step", {"step": "a", "fail_unless": str(flag)}),
        ("wf_step", {"step": "b"}),
        ("wf_step", {"step": "c"}),
    )
    burst(dsn)
    assert [status(db, i) for i in ids] == ["failed", "cancelled", "cancelled"]
    flag.touch()
    done = pgqueue(dsn, "retry-failed", "--id", str(ids[0]))
    assert done.returncode == 0, done.stderr
    assert [status(db, i) for i in ids] == ["pending", "waiting", "waiting"]
    burst(dsn)
    assert [status(db, i) for i in ids] == ["completed"] * 3
    assert [step for _id, step, _p, _r in runs(db)] == ["a", "a", "b", "c"]
    errors = db.execute("SELECT error FROM pgqueue.jobs WHERE id = ANY(%s)", (ids[1:],)).fetchall()
    assert errors == [(None,), (None,)]


def test_cancel_of_a_waiting_job_cancels_its_dependents(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    parent = wf.enqueue("wf_step", {"step": "parent"}, delay=3600)  # not due: the chain below it waits
    ids = wf.chain(("wf_step", {"step": "x"}), ("wf_step", {"step": "y"}))
    child = wf.enqueue("wf_step", {"step": "child"}, after=[parent, ids[1]])
    grandchild = wf.enqueue("wf_step", {"step": "grandchild"}, after=[child])
    keeps_going = wf.enqueue("wf_step", {"step": "keeps_going"}, after=[child], on_failure="run")
    done = pgqueue(dsn, "cancel", str(child))
    assert done.returncode == 0, done.stderr
    assert status(db, grandchild) == "cancelled"
    assert status(db, keeps_going) == "pending"  # its parent was cancelled: it runs anyway
    burst(dsn)
    assert sorted(step for _id, step, _p, _r in runs(db)) == ["keeps_going", "x", "y"]
    assert status(db, parent) == "pending"


def test_enqueue_joins_the_callers_transaction(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    with psycopg.connect(dsn) as conn:
        parent = wf.enqueue("wf_step", {"step": "p"}, connection=conn)
        wf.enqueue("wf_step", {"step": "c"}, after=[parent], connection=conn)
        wf.chain(("wf_step", {"step": "x"}), ("wf_step", {"step": "y"}), connection=conn)
        conn.rollback()
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pgqueue.job_dependencies").fetchone() == (0,)
    with psycopg.connect(dsn) as conn:
        parent = wf.enqueue("wf_step", {"step": "p"}, connection=conn)
        child = wf.enqueue("wf_step", {"step": "c"}, after=[parent], connection=conn)
    assert [status(db, parent), status(db, child)] == ["pending", "waiting"]


def test_async_twins(wf: Queue, dsn: str, db: psycopg.Connection) -> None:
    asyncio.run(_async_twins(wf, db))


async def _async_twins(wf: Queue, db: psycopg.Connection) -> None:
    parent = await wf.enqueue_async("wf_step", {"step": "p", "value": 7})
    child = await wf.enqueue_async("wf_step", {"step": "c"}, after=[parent])
    ids = await wf.chain_async(("wf_step", {"step": "x"}), ("wf_step", {"step": "y"}))
    batch = await wf.batch_async([("wf_step", {"step": "b"})], on_complete=("wf_step", {"step": "cb"}))
    assert [status(db, i) for i in (parent, child, *ids, *batch.ids, batch.callback)] == [
        "pending", "waiting", "pending", "waiting", "pending", "waiting",
    ]  # fmt: skip
    assert [p.id for p in await wf.parents_async(child)] == [parent]
    await wf.aclose()


def test_one_release_of_one_dependent_of_1000_parents_finishing_together_on_4_processes(
    wf: Queue, dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    flag = tmp_path / "go"
    batch = wf.batch(
        [("wf_barrier", {"flag": str(flag)}) for _ in range(1000)],
        on_complete=JobSpec("wf_step", {"step": "fan-in"}, queue="fanin"),
    )
    workers = start_worker(dsn, "--workers", "4", "--concurrency", "250", "--queue", "default", "--queue", "fanin")
    try:
        # Every parent is running (held at the barrier) on one of the 4 processes before any may finish.
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM pgqueue.jobs WHERE status = 'running' AND started_at IS NOT NULL"
                ).fetchone()[0]
                == 1000
            ),
            what="1000 parents running",
        )
        holders = db.execute("SELECT count(DISTINCT worker_id) FROM pgqueue.jobs WHERE task = 'wf_barrier'")
        assert holders.fetchone()[0] == 4
        # Each release notifies the dependent's queue once (the trigger); nothing else is enqueued on it now.
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute("LISTEN pgqueue_jobs")
            flag.touch()
            wait_until(lambda: status(db, batch.callback) == "completed", what="the fan-in job completed")
            releases = [
                n
                for n in listener.notifies(timeout=1.0, stop_after=10_000)
                if json.loads(n.payload)["queue"] == "fanin"
            ]
        assert len(releases) == 1
        assert db.execute("SELECT count(*) FROM wf_runs WHERE step = 'fan-in'").fetchone() == (1,)
        attempts, waiting_for = db.execute(
            "SELECT attempts, waiting_for FROM pgqueue.jobs WHERE id = %s", (batch.callback,)
        ).fetchone()
        assert (attempts, waiting_for) == (1, 0)
        unresolved = db.execute("SELECT count(*) FROM pgqueue.job_dependencies WHERE parent_status IS NULL")
        assert unresolved.fetchone() == (0,)
        parents = db.execute("SELECT parents FROM wf_runs WHERE step = 'fan-in'").fetchone()[0]
        assert len(parents) == 1000 and {p["status"] for p in parents} == {"completed"}
    finally:
        workers.send_signal(signal.SIGTERM)
        output, _ = workers.communicate(timeout=60)
    assert workers.returncode == 0, output
