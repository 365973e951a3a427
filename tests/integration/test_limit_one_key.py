"""grant_limits' one-key path (migration 0023) decides exactly as the loop it stands in for.

The loop is installed beside it as a temporary function, from the migrations' own text, and both are asked the
same questions: generated states of one limit key (running jobs spread over the stripes, some of no stripe or of
a stripe out of range, some completed by the calling statement, stripes another claim holds locked), candidates
at gapped places in a claim, and workers with few or many free slots. Their answers and the slots they report as
handed on (`pgqueue.reused_slots`) must be the same."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"


def _migration(filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"pgqueue_migration_{filename[:4]}", MIGRATIONS / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loop_text() -> str:
    """The loop as migration 0023 leaves it (0016's, with the hand-on rule), without the one-key path."""
    text = _migration("0023_kept_plans.py").grant_limits_loop(_migration("0016_limit_stripes.py").GRANT_LIMITS)
    text = text.replace("FUNCTION pgqueue.grant_limits(", "FUNCTION pg_temp.loop(", 1)
    assert "pg_temp.loop(" in text and "cardinality(key_names) = 1" not in text
    return text


ASK = """
SELECT job_id, keys, held_by, deferred_by, due_at, no_slot, rated, stripe
FROM {function}(%(candidates)s, %(positions)s, %(finished)s, %(free)s)
ORDER BY job_id
"""


def _answer(conn: psycopg.Connection, function: str, question: dict) -> tuple[list[tuple], str | None]:
    """The decisions and the reused slots, in a transaction rolled back (its advisory locks go with it)."""
    with conn.transaction(force_rollback=True):
        rows = conn.execute(ASK.format(function=function), question).fetchall()
        reused = conn.execute("SELECT nullif(current_setting('pgqueue.reused_slots', true), '')").fetchone()[0]
    return rows, reused


def _arrange(db: psycopg.Connection, rng: random.Random) -> tuple[str, dict, list[int]]:
    """One generated state; returns the key, the question and the stripes another claim holds."""
    db.execute("DELETE FROM pgqueue.jobs")
    db.execute("DELETE FROM pgqueue.limits")
    concurrency = rng.choice([1, 2, 3, 4, 5, 8, 13, 50])
    per_customer = rng.random() < 0.3
    db.execute(
        "INSERT INTO pgqueue.limits (name, scope, target, concurrency, key_arg) VALUES ('task:a', 'task', 'a', %s, %s)",
        (concurrency, "customer" if per_customer else None),
    )
    key = '["task:a", 7]' if per_customer else '["task:a"]'
    running_ids = []
    for _ in range(rng.randint(0, concurrency + 3)):
        stripe = rng.choice([0, 1, 2, 3, 0, 1, 2, 3, None, 9])
        customer = rng.choice([7, 7, 8]) if per_customer else 7
        (job_id,) = db.execute(
            "INSERT INTO pgqueue.jobs (task, args, status, attempts, worker_id, lease_expires_at, limit_keys, "
            "limit_stripe) VALUES ('a', jsonb_build_object('customer', %s), 'running', 1, 'w', "
            "now() + interval '1 hour', ARRAY[%s], %s) RETURNING id",
            (customer, key if customer == 7 else '["task:a", 8]', stripe),
        ).fetchone()
        if customer == 7:
            running_ids.append(job_id)
    wanted = rng.choice([1, 2, 3, 10, 30])
    candidates = [
        row[0]
        for row in db.execute(
            "INSERT INTO pgqueue.jobs (task, args) SELECT 'a', '{\"customer\": 7}' FROM generate_series(1, %s) "
            "RETURNING id",
            (wanted,),
        )
    ]
    positions, place = [], 0
    for _ in candidates:
        place += rng.choice([1, 1, 1, 2, 5])
        positions.append(place)
    finished = rng.sample(running_ids, rng.randint(0, len(running_ids))) if running_ids else []
    question = {
        "candidates": candidates,
        "positions": positions,
        "finished": finished,
        "free": rng.choice([0, 1, wanted // 2, wanted, 100]),
    }
    locked = [stripe for stripe in range(4) if rng.random() < 0.25]
    return key, question, locked


@pytest.mark.parametrize("seed", range(8))
def test_the_one_key_path_decides_as_the_loop(dsn: str, db: psycopg.Connection, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn) as conn, psycopg.connect(dsn) as other:
        conn.execute(_loop_text())
        conn.commit()
        for _ in range(40):
            key, question, locked = _arrange(db, rng)
            with other.transaction():
                for stripe in locked:  # another claim in flight holds these stripes
                    other.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 8009 + %s))", (key, stripe))
                new = _answer(conn, "pgqueue.grant_limits", question)
                loop = _answer(conn, "pg_temp.loop", question)
            assert new == loop, (question, locked)
            assert len(new[0]) == len(question["candidates"])
