"""A small app for the test-mode tests: its own test suite (written by tests/integration/test_test_mode.py) uses
pgqueue.pytest_plugin, queue.drain() and queue.enqueued() as an app's tests would."""

from __future__ import annotations

from pgqueue import Discard, Fixed, Queue, Snooze

queue = Queue()
sent: list[str] = []


@queue.task(retry=Fixed(0), max_attempts=2)
def place_order(order_id: int, email: str) -> dict[str, int]:
    queue.enqueue("send_receipt", {"order_id": order_id, "email": email})
    return {"order_id": order_id}


@queue.task
def send_receipt(order_id: int, email: str) -> None:
    if "@" not in email:
        raise Discard(f"no address to send order {order_id}'s receipt to")
    sent.append(email)


@queue.task
async def nightly_report() -> None:
    raise Snooze(3600)


def checkout(order_id: int, email: str) -> int:
    return queue.enqueue("place_order", {"order_id": order_id, "email": email})
