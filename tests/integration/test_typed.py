"""Typed arguments end to end: checked at enqueue (a mismatch is refused before anything is written), stored as
JSON, rebuilt as instances by a real worker; a hand-written row that does not fit fails alone, permanently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pgqueue import InvalidJobError, JobSpec
from tests.apps.typed_app import Address, Customer, Line, Order, queue

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
CUSTOMER = {"name": "Ada", "address": {"street": "1 Main St", "postcode": "N1 9GU"}}


def work(dsn: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    environment["PGQUEUE_DSN"] = dsn
    result = subprocess.run(
        [PGQUEUE, "work", "--app", "tests.apps.typed_app", "--burst"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def test_instances_and_dicts_are_checked_stored_as_json_and_rebuilt_at_run(dsn: str, db: psycopg.Connection) -> None:
    queue.dsn = dsn
    try:
        from_instances = queue.enqueue(
            "invoice",
            {
                "order": Order(id=7, lines=[Line(sku="a", quantity=2), Line(sku="b", quantity=3)]),
                "customer": Customer(name="Ada", address=Address(street="1 Main St", postcode="N1 9GU"), vip=True),
            },
        )
        from_dicts = queue.enqueue(
            "invoice", {"order": {"id": 8, "lines": [{"sku": "a", "quantity": 1}]}, "customer": CUSTOMER, "note": "x"}
        )
        batch = queue.enqueue_many([JobSpec("ship", {"order": Order(id=9, lines=[])}), JobSpec("ship", {})])
    finally:
        queue.close()
    stored = db.execute("SELECT args FROM pgqueue.jobs WHERE id = %s", (from_instances,)).fetchone()[0]
    assert stored == {
        "order": {"id": 7, "lines": [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 3}]},
        "customer": {"name": "Ada", "address": {"street": "1 Main St", "postcode": "N1 9GU"}, "vip": True},
    }
    work(dsn)
    results = dict(db.execute("SELECT id, result FROM pgqueue.jobs WHERE status = 'completed'").fetchall())
    assert results[from_instances] == {
        "order": "Order", "line": "Line", "units": 5, "customer": "Customer", "address": "Address",
        "postcode": "N1 9GU", "vip": True, "note": None,
    }  # fmt: skip
    assert results[from_dicts]["units"] == 1 and results[from_dicts]["vip"] is False
    assert results[from_dicts]["note"] == "x"
    assert [results[i] for i in batch] == ["Order 9", "nothing"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"order": {"id": "seven", "lines": []}, "customer": CUSTOMER}, "order: id: Input should be a valid integer"),
        (
            {"order": {"id": 1, "lines": [{"sku": "a"}]}, "customer": CUSTOMER},
            "order: lines.0.quantity: Field required",
        ),
        ({"order": [1, 2], "customer": CUSTOMER}, "order: value: Input should be a valid dictionary"),
        ({"order": {"id": 1, "lines": []}, "customer": "Ada"}, "customer: expected Customer (or a dict of its fields)"),
        ({"order": {"id": 1, "lines": []}, "customer": {"name": "Ada"}}, "Customer is missing field 'address'"),
        (
            {"order": {"id": 1, "lines": []}, "customer": {**CUSTOMER, "email": "a@b"}},
            "Customer has no field 'email'",
        ),
        (
            {"order": {"id": 1, "lines": []}, "customer": {"name": "Ada", "address": {"street": 1, "postcode": "x"}}},
            "Customer.address: Address.street must be str, got int",
        ),
        ({"order": {"id": 1, "lines": []}, "customer": {**CUSTOMER, "vip": "yes"}}, "Customer.vip must be bool"),
    ],
)
def test_a_mismatch_is_refused_at_enqueue_with_a_clear_error(
    dsn: str, db: psycopg.Connection, args: dict[str, object], message: str
) -> None:
    queue.dsn = dsn
    try:
        with pytest.raises(InvalidJobError, match="arguments do not fit the types of task 'invoice'") as raised:
            queue.enqueue("invoice", args)
        assert message in str(raised.value) and "\n" not in str(raised.value)
        with pytest.raises(InvalidJobError, match="do not fit the types"):
            queue.enqueue_many([JobSpec("invoice", args)])
    finally:
        queue.close()
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_cli_enqueue_with_the_app_checks_types(dsn: str, db: psycopg.Connection) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    bad = subprocess.run(
        [PGQUEUE, "enqueue", "invoice", "--app", "tests.apps.typed_app", "--dsn", dsn,
         "--args", json.dumps({"order": {"id": "x", "lines": []}, "customer": CUSTOMER})],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: arguments do not fit the types of task 'invoice': order: id:"), bad.stderr
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_a_hand_written_row_that_does_not_fit_fails_alone(dsn: str, db: psycopg.Connection) -> None:
    bad = db.execute(
        "INSERT INTO pgqueue.jobs (task, args) VALUES ('ship', %s) RETURNING id",
        (json.dumps({"order": {"id": "not a number", "lines": []}}),),
    ).fetchone()[0]
    good = db.execute(
        "INSERT INTO pgqueue.jobs (task, args) VALUES ('ship', %s) RETURNING id",
        (json.dumps({"order": {"id": 3, "lines": []}}),),
    ).fetchone()[0]
    work(dsn)
    rows = dict((i, (s, r, e)) for i, s, r, e in db.execute("SELECT id, status, result, error FROM pgqueue.jobs"))
    assert rows[good] == ("completed", "Order 3", None)
    status, _result, error = rows[bad]
    assert status == "failed"
    assert error.startswith("arguments do not fit the types of task 'ship': order: id: Input should be a valid integer")
    assert db.execute("SELECT attempts FROM pgqueue.jobs WHERE id = %s", (bad,)).fetchone() == (1,)  # permanent
