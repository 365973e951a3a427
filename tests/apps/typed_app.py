"""Tasks with typed arguments (a pydantic model, dataclasses), run by real workers in tests/integration/test_typed.py.
Each handler returns what it was given, so the test reads from the job's result that it got instances."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from pgqueue import Queue

queue = Queue()


class Line(BaseModel):
    sku: str
    quantity: int


class Order(BaseModel):
    id: int
    lines: list[Line]


@dataclass
class Address:
    street: str
    postcode: str


@dataclass
class Customer:
    name: str
    address: Address
    vip: bool = False


@queue.task(max_attempts=1)
def invoice(order: Order, customer: Customer, note: str | None = None) -> dict[str, object]:
    return {
        "order": type(order).__name__,
        "line": type(order.lines[0]).__name__,
        "units": sum(line.quantity for line in order.lines),
        "customer": type(customer).__name__,
        "address": type(customer.address).__name__,
        "postcode": customer.address.postcode,
        "vip": customer.vip,
        "note": note,
    }


@queue.task  # five attempts: a job whose args do not fit must fail on its first, for good
async def ship(order: Order | None = None) -> str:
    return "nothing" if order is None else f"{type(order).__name__} {order.id}"
