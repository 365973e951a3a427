"""The Django project's tasks: `pgqueue work --app tests.integrations.django_project.jobs` (DSN in PGQUEUE_DSN).

The handler uses the Django ORM in the worker process, as a Django project's jobs would.
"""

from __future__ import annotations

import os

from django.conf import settings as django_settings

from pgqueue import Queue
from tests.integrations.django_project import settings

if not django_settings.configured:  # a worker process; the tests configure Django themselves
    settings.configure(os.environ["PGQUEUE_DSN"])

# Imported once the settings exist (the model needs them).
from django.db import close_old_connections

from tests.integrations.django_project.orders.models import Order

queue = Queue()


@queue.task(name="confirm_order", queue="orders")
def confirm_order(order_id: int) -> dict[str, str]:
    # Sync handlers run on worker threads, each with its own Django connection: close it when a job is done,
    # as Django does after each request (a long-lived thread would otherwise keep it past CONN_MAX_AGE).
    try:
        order = Order.objects.get(id=order_id)
        order.status = "confirmed"
        order.save(update_fields=["status"])
        return {"reference": order.reference}
    finally:
        close_old_connections()


@queue.task(name="send_receipt", queue="emails")
def send_receipt(order_id: int, to: str) -> None:
    pass
