"""The example's tasks. The web app only enqueues them; a worker runs them:

pgqueue work --app examples.fastapi_orders.jobs
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pgqueue import Backoff, Queue

log = logging.getLogger("fastapi_orders.jobs")

# The web app enqueues on its own transaction's connection and never needs this queue's DSN; the worker takes
# its DSN from --dsn, PGQUEUE_DSN or DATABASE_URL.
queue = Queue()


@queue.task(name="send_confirmation_email", queue="emails", max_attempts=5)
async def send_confirmation_email(order_id: int, to: str) -> dict[str, str]:
    await asyncio.sleep(0.05)  # stands in for the mail provider's API
    log.info("order %s: confirmation sent to %s", order_id, to)
    return {"sent_to": to}


@queue.task(name="generate_invoice", queue="invoices", timeout=120)
def generate_invoice(order_id: int) -> dict[str, str]:
    # A sync handler runs on a worker thread: blocking code (a PDF renderer, say) is fine here.
    log.info("order %s: invoice generated", order_id)
    return {"pdf": f"invoices/{order_id}.pdf"}


@queue.task(name="notify_warehouse", queue="warehouse", retry=Backoff(base=2, max_delay=300))
async def notify_warehouse(order_id: int, items: list[dict[str, Any]]) -> dict[str, int]:
    await asyncio.sleep(0.05)  # stands in for the warehouse's webhook
    units = sum(int(item["quantity"]) for item in items)
    log.info("order %s: warehouse notified of %s units", order_id, units)
    return {"units": units}
