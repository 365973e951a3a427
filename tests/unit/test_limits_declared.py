"""Limits as declared in code: checked at declaration, before any I/O; what a worker syncs."""

from __future__ import annotations

from typing import Any

import pytest

from pgqueue import Queue
from pgqueue.queue.limits import Limit, declared_columns


def test_task_and_queue_limits_are_declared() -> None:
    q = Queue("postgresql://unused")

    @q.task(concurrency=4)
    def render(report_id: int) -> None: ...

    @q.task(concurrency=1, concurrency_key="customer_id")
    def sync_customer(customer_id: int) -> None: ...

    @q.task(concurrency=2, concurrency_key="anything")
    def loose(**kwargs: Any) -> None: ...

    @q.task
    def free() -> None: ...

    q.limit_queue("pdf", concurrency=3)
    assert sorted(q.limits, key=lambda limit: limit.name) == [
        Limit("queue", "pdf", 3),
        Limit("task", "loose", 2, "anything"),
        Limit("task", "render", 4),
        Limit("task", "sync_customer", 1, "customer_id"),
    ]
    columns = declared_columns(q.limits)
    assert columns["names"] == ["queue:pdf", "task:loose", "task:render", "task:sync_customer"]
    assert columns["key_args"] == [None, "anything", None, "customer_id"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "between 1 and"),
        ({"concurrency": -1}, "between 1 and"),
        ({"concurrency": 2**31}, "between 1 and"),
        ({"concurrency": True}, "whole number"),
        ({"concurrency": 2.5}, "whole number"),
        ({"concurrency": "4"}, "whole number"),
        ({"concurrency_key": "customer_id"}, "needs concurrency"),
        ({"concurrency": 1, "concurrency_key": "nope"}, "not an argument"),
        ({"concurrency": 1, "concurrency_key": ""}, "name of one of"),
    ],
)
def test_bad_task_limits_are_refused_and_register_nothing(options: dict[str, Any], message: str) -> None:
    q = Queue("postgresql://unused")
    with pytest.raises(ValueError, match=message):

        @q.task(**options)
        def sync_customer(customer_id: int) -> None: ...

    assert q.tasks == {} and q.limits == []


@pytest.mark.parametrize(
    ("name", "concurrency", "message"),
    [
        ("", 2, "non-empty"),
        ("a\x1bb", 2, "control characters"),
        ("x" * 201, 2, "at most 200"),
        ("pdf", 0, "between 1 and"),
        ("pdf", None, "whole number"),
    ],
)
def test_bad_queue_limits_are_refused(name: str, concurrency: Any, message: str) -> None:
    q = Queue("postgresql://unused")
    with pytest.raises(ValueError, match=message):
        q.limit_queue(name, concurrency=concurrency)
    assert q.limits == []
