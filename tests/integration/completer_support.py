"""A completer on a real worker connection, as the worker builds one, for tests that drive it by hand."""

from __future__ import annotations

from typing import Any

from pgqueue.worker.completer import Completer
from pgqueue.worker.connection import MainConnection, Outages


async def open_completer(dsn: str, worker_id: str) -> tuple[MainConnection, Completer]:
    """The connection (opened: close it when done) and its completer; a lost connection fails the test."""

    async def reconnected(_conn: Any) -> None:
        return None

    async def lost(_exc: BaseException) -> None:
        raise AssertionError("the connection was not expected to fail")

    connection = MainConnection(dsn, lease=30, reconnect_max_delay=1, outages=Outages(), after_reconnect=reconnected)
    await connection.open()
    completer = Completer(
        connection, worker_id=worker_id, lease=30, queues=None, on_lost=lost, on_retry_due=lambda _at: None
    )
    return connection, completer
