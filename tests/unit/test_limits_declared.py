"""Limits as declared in code: checked at declaration, before any I/O; what a worker syncs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pgqueue import Queue
from pgqueue.queue.limits import Limit, Rate, declared_columns, parse_rate


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
        ({"rate_limit": "0/s"}, "between 1 and 10000"),
        ({"rate_limit": "10001/s"}, "between 1 and 10000"),
        ({"rate_limit": "10/d"}, "look like"),
        ({"rate_limit": "10 per second"}, "look like"),
        ({"rate_limit": "-1/s"}, "look like"),
        ({"rate_limit": 10}, "must be a string"),
        ({"rate_limit": "1" * 5000 + "/s"}, "between 1 and 10000"),
        ({"rate_key": "customer_id"}, "needs rate_limit"),
        ({"rate_limit": "1/s", "rate_key": "nope"}, "not an argument"),
        ({"rate_limit": "1/s", "rate_key": 3}, "name of one of"),
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
        ("pdf", "4", "whole number"),
        ("pdf", None, "needs concurrency, rate_limit or both"),
    ],
)
def test_bad_queue_limits_are_refused(name: str, concurrency: Any, message: str) -> None:
    q = Queue("postgresql://unused")
    with pytest.raises(ValueError, match=message):
        q.limit_queue(name, concurrency=concurrency)
    assert q.limits == []


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/s", Rate(10, 1)),
        (" 100 / m ", Rate(100, 60)),
        ("5/H", Rate(5, 3600)),
        ("1/second", Rate(1, 1)),
        ("7/min", Rate(7, 60)),
        ("10000/hour", Rate(10000, 3600)),
    ],
)
def test_rates_are_read_as_people_write_them(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate
    assert parse_rate(str(rate)) == rate


def test_rate_limits_are_declared_with_or_without_concurrency() -> None:
    q = Queue("postgresql://unused")

    @q.task(rate_limit="10/s")
    def webhook(url: str) -> None: ...

    @q.task(concurrency=2, rate_limit="100/m", rate_key="customer_id")
    def sync_customer(customer_id: int) -> None: ...

    q.limit_queue("mail", rate_limit="5/h")
    assert sorted(q.limits, key=lambda limit: limit.name) == [
        Limit("queue", "mail", None, rate=Rate(5, 3600)),
        Limit("task", "sync_customer", 2, None, Rate(100, 60), "customer_id"),
        Limit("task", "webhook", None, rate=Rate(10, 1)),
    ]
    columns = declared_columns(q.limits)
    assert columns["concurrencies"] == [None, 2, None]
    assert columns["rates"] == [5, 100, 10]
    assert columns["rate_periods"] == [timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)]
    assert columns["rate_key_args"] == [None, "customer_id", None]
