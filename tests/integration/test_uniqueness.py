"""unique_for and debounce on top of dedup_key: real PostgreSQL, concurrent enqueues from many connections."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgqueue import InvalidJobError, Queue

WINDOW = timedelta(minutes=10)


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    q = Queue(dsn)
    q.task(name="reindex")(lambda customer=0, version=0: None)
    yield q
    q.close()


def rows(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute("SELECT id, status, args, dedup_key, debounce_key FROM pgqueue.jobs ORDER BY id").fetchall()


def finish(db: psycopg.Connection, job_id: int, status: str = "completed", ago: timedelta = timedelta(0)) -> None:
    db.execute("UPDATE pgqueue.jobs SET status = %s, finished_at = now() - %s WHERE id = %s", (status, ago, job_id))


def together(count: int, call: Callable[[Queue, int], Any], dsn: str) -> list[Any]:
    """`call(i)` from `count` threads at once, each with a Queue (so a connection) of its own."""
    barrier = threading.Barrier(count)
    answers: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        own = Queue(dsn)
        own.task(name="reindex")(lambda customer=0, version=0: None)
        try:
            own.enqueue("reindex", {"customer": 1})  # opens the pool before the race
            barrier.wait()
            answers[i] = call(own, i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return answers


# -- unique_for -----------------------------------------------------------------------------------------------


def test_unique_for_returns_the_recently_completed_job(queue: Queue, db: psycopg.Connection) -> None:
    first = queue.enqueue("reindex", {"customer": 7}, dedup_key="reindex:7", unique_for=WINDOW)
    assert queue.enqueue("reindex", {"customer": 7}, dedup_key="reindex:7", unique_for=WINDOW) == first  # pending
    finish(db, first, ago=timedelta(minutes=9))
    assert queue.enqueue("reindex", {"customer": 7}, dedup_key="reindex:7", unique_for=WINDOW) == first
    # Plain dedup_key does not look at completed jobs; a shorter window does not reach back 9 minutes.
    newer = queue.enqueue("reindex", {"customer": 7}, dedup_key="reindex:7", unique_for=timedelta(minutes=8))
    assert newer != first
    assert queue.enqueue("reindex", {"customer": 7}, dedup_key="reindex:7", unique_for=WINDOW) == newer  # pending first
    finish(db, newer, ago=timedelta(minutes=11))
    assert queue.enqueue("reindex", {"customer": 7}, dedup_key="reindex:7", unique_for=WINDOW) == first


def test_unique_for_ignores_failed_cancelled_and_old_jobs(queue: Queue, db: psycopg.Connection) -> None:
    seen = set()
    for status, ago in [("failed", timedelta(0)), ("cancelled", timedelta(0)), ("completed", timedelta(minutes=11))]:
        job_id = queue.enqueue("reindex", dedup_key="k", unique_for=WINDOW)
        assert job_id not in seen
        seen.add(job_id)
        finish(db, job_id, status, ago)
    assert queue.enqueue("reindex", dedup_key="k", unique_for=WINDOW) not in seen
    assert len(rows(db)) == 4


def test_unique_for_under_concurrent_enqueues(queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    ids = together(12, lambda q, i: q.enqueue("reindex", {"version": i}, dedup_key="race", unique_for=WINDOW), dsn)
    assert len(set(ids)) == 1
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE dedup_key = 'race'").fetchone()[0] == 1
    finish(db, ids[0])
    again = together(12, lambda q, i: q.enqueue("reindex", dedup_key="race", unique_for=WINDOW), dsn)
    assert set(again) == {ids[0]}
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE dedup_key = 'race'").fetchone()[0] == 1


def test_unique_for_lookup_uses_its_index(queue: Queue, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, dedup_key, status, finished_at) "
        "SELECT 'reindex', 'key-' || n, 'completed', now() FROM generate_series(1, 20000) n"
    )
    db.execute("ANALYZE pgqueue.jobs")
    plan = db.execute(
        "EXPLAIN SELECT id FROM pgqueue.jobs WHERE dedup_key = 'key-5' AND status = 'completed' "
        "AND finished_at > now() - interval '10 minutes' ORDER BY finished_at DESC LIMIT 1"
    ).fetchall()
    assert "jobs_dedup_completed_idx" in "\n".join(line for (line,) in plan)


# -- debounce -------------------------------------------------------------------------------------------------


def due_in(db: psycopg.Connection, job_id: int) -> float:
    return float(
        db.execute("SELECT extract(epoch FROM run_at - now()) FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()[0]
    )


def test_debounce_updates_the_pending_job_in_place(queue: Queue, db: psycopg.Connection) -> None:
    first = queue.enqueue("reindex", {"customer": 1, "version": 1}, dedup_key="c1", debounce=timedelta(seconds=60))
    assert 50 < due_in(db, first) <= 60
    db.execute("UPDATE pgqueue.jobs SET run_at = run_at - interval '30 seconds' WHERE id = %s", (first,))
    second = queue.enqueue("reindex", {"customer": 1, "version": 2}, dedup_key="c1", debounce=timedelta(seconds=60))
    assert second == first
    assert 50 < due_in(db, first) <= 60  # pushed back again
    assert rows(db) == [(first, "pending", {"customer": 1, "version": 2}, None, "c1")]
    other = queue.enqueue("reindex", {"customer": 2}, dedup_key="c2", debounce=60)
    assert other != first


def test_debounce_stops_pushing_at_the_maximum_wait(queue: Queue, db: psycopg.Connection) -> None:
    options = {"dedup_key": "c1", "debounce": timedelta(seconds=100), "debounce_max_wait": timedelta(seconds=150)}
    job_id = queue.enqueue("reindex", {"version": 1}, **options)
    # 100 s later (as the table sees it): due now; one more enqueue may push it only to created_at + 150 s.
    db.execute(
        "UPDATE pgqueue.jobs SET created_at = created_at - interval '100 seconds', "
        "run_at = run_at - interval '100 seconds' WHERE id = %s",
        (job_id,),
    )
    assert queue.enqueue("reindex", {"version": 2}, **options) == job_id
    assert 40 < due_in(db, job_id) <= 50
    db.execute(
        "UPDATE pgqueue.jobs SET created_at = created_at - interval '60 seconds', "
        "run_at = run_at - interval '60 seconds' WHERE id = %s",
        (job_id,),
    )
    assert queue.enqueue("reindex", {"version": 3}, **options) == job_id
    assert due_in(db, job_id) <= 0  # past its maximum wait: runnable now, not pushed
    assert rows(db)[0][2] == {"version": 3}


def test_a_running_job_does_not_swallow_a_debounced_change(queue: Queue, db: psycopg.Connection) -> None:
    first = queue.enqueue("reindex", {"version": 1}, dedup_key="c1", debounce=5)
    db.execute("UPDATE pgqueue.jobs SET status = 'running' WHERE id = %s", (first,))
    second = queue.enqueue("reindex", {"version": 2}, dedup_key="c1", debounce=5)
    assert second != first
    assert queue.enqueue("reindex", {"version": 3}, dedup_key="c1", debounce=5) == second
    assert [(r[1], r[2]) for r in rows(db)] == [("running", {"version": 1}), ("pending", {"version": 3})]


def test_debounce_under_concurrent_enqueues(queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    ids = together(16, lambda q, i: q.enqueue("reindex", {"version": i}, dedup_key="hot", debounce=30), dsn)
    assert len(set(ids)) == 1
    (only,) = db.execute("SELECT args FROM pgqueue.jobs WHERE debounce_key = 'hot'").fetchall()
    assert only[0]["version"] in range(16)


def test_debounce_joins_the_callers_transaction(queue: Queue, dsn: str, db: psycopg.Connection) -> None:
    first = queue.enqueue("reindex", {"version": 1}, dedup_key="c1", debounce=30)
    with psycopg.connect(dsn) as conn:
        assert queue.enqueue("reindex", {"version": 2}, dedup_key="c1", debounce=30, connection=conn) == first
        conn.rollback()
    assert rows(db)[0][2] == {"version": 1}


# -- bad options ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique_for": WINDOW}, "need a dedup_key"),
        ({"debounce": 5}, "need a dedup_key"),
        ({"dedup_key": "k", "unique_for": WINDOW, "debounce": 5}, "either unique_for or debounce"),
        ({"dedup_key": "k", "unique_for": 0}, "unique_for must be longer than zero"),
        ({"dedup_key": "k", "unique_for": -5}, "must not be negative"),
        ({"dedup_key": "k", "unique_for": math.nan}, "is not a duration"),
        ({"dedup_key": "k", "unique_for": math.inf}, "out of range"),
        ({"dedup_key": "k", "unique_for": timedelta(days=999_999_999)}, "out of range"),
        ({"dedup_key": "k", "debounce": 5, "delay": 10}, "debounce sets when the job runs"),
        ({"dedup_key": "k", "debounce": 10, "debounce_max_wait": 5}, "must not be shorter than debounce"),
        ({"dedup_key": "k", "debounce_max_wait": 5}, "debounce_max_wait goes with debounce"),
        ({"dedup_key": "bad\x00key"}, "must not contain a NUL"),
        ({"dedup_key": 42}, "dedup_key must be a str"),
    ],
)
def test_bad_uniqueness_options_are_refused_before_any_io(options: dict[str, Any], message: str) -> None:
    queue = Queue("postgresql://nowhere.invalid/db")
    queue.task(name="reindex")(lambda: None)
    with pytest.raises(InvalidJobError, match=message):
        queue.enqueue("reindex", **options)


def test_a_long_key_is_matched_and_a_too_long_one_refused(queue: Queue, db: psycopg.Connection) -> None:
    import random
    import string

    # Random letters: a repetitive key would be compressed below the index's limit and prove nothing.
    rng = random.Random(7)
    key = "".join(rng.choice(string.ascii_letters) for _ in range(1996)) + "\U0001f600"  # 2,000 bytes of UTF-8
    first = queue.enqueue("reindex", dedup_key=key, unique_for=WINDOW)
    finish(db, first)
    assert queue.enqueue("reindex", dedup_key=key, unique_for=WINDOW) == first
    with pytest.raises(InvalidJobError, match="dedup_key is too long \\(2,001 bytes of UTF-8; the limit is 2,000\\)"):
        queue.enqueue("reindex", dedup_key=key + "x", debounce=5)
