"""LISTEN on a connection of its own: notifications in, parsed, out as callbacks. It owns no claim state.

Anyone who can connect can NOTIFY: a notification is only a hint to look at the table. The listener says
what it heard (`on_jobs(queue_name, run_at)`, `on_cancel()`), that it is listening again after a gap in
which it heard nothing (`on_listening()`), and that its connection was lost (`on_lost()`); the worker decides
what each means.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg

from pgqueue.store import connections, statements
from pgqueue.store.run import count_async
from pgqueue.store.schema import CANCEL_CHANNEL, JOBS_CHANNEL
from pgqueue.text import shown
from pgqueue.worker.connection import Outages
from pgqueue.worker.rules import FIRST_RECONNECT_DELAY, reconnect_delays

log = logging.getLogger("pgqueue.worker")

GARBAGE_LOG_EVERY = 60.0  # seconds: a flood of malformed notifications costs one log line a minute


def parse_jobs_message(payload: str) -> tuple[str, float] | None:
    """(queue name, run_at) from a notification on the jobs channel, or None for anything else."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    queue_name, run_at = message.get("queue"), message.get("run_at", 0)
    if not isinstance(queue_name, str) or isinstance(run_at, bool) or not isinstance(run_at, int | float):
        return None
    run_at = float(run_at)
    return (queue_name, run_at) if math.isfinite(run_at) else None


class Listener:
    def __init__(
        self,
        dsn: str,
        *,
        poll_interval: float,
        lease: float,
        reconnect_max_delay: float,
        outages: Outages,
        on_jobs: Callable[[str, float], None],
        on_cancel: Callable[[], None],
        on_listening: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._dsn = dsn
        self._poll_interval = poll_interval
        # No answer within this counts as a lost connection: a black-holed path that TCP keepalives cannot
        # see would otherwise leave the worker deaf for good.
        self._answer_timeout = min(10.0, lease)
        self._max_delay = reconnect_max_delay
        self._outages = outages
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self._on_listening = on_listening
        self._on_lost = on_lost
        self._garbage_logged_at = -GARBAGE_LOG_EVERY

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff; returns when LISTEN cannot work (a pooler)."""
        delays = reconnect_delays(self._max_delay)
        while True:
            try:
                kwargs = connections.connect_kwargs(self._dsn, "pgqueue listen")
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, **kwargs)
            except psycopg.OperationalError as exc:
                self._outages.lost(exc)
                await asyncio.sleep(next(delays))
                continue
            delays = reconnect_delays(self._max_delay)
            try:
                async with conn:
                    if not await self._listen(conn):
                        log.warning(
                            "LISTEN cannot work through a connection pooler: polling every %g s instead "
                            "(set --listen-dsn / PGQUEUE_LISTEN_DSN to a direct connection for instant wake-ups)",
                            self._poll_interval,
                        )
                        return
                    self._outages.back()
                    self._on_listening()
                    await self._receive(conn)
            except psycopg.OperationalError as exc:
                # The main connection is probably gone too: a claim now finds out, rather than the next poll.
                self._on_lost()
                self._outages.lost(exc)
            except Exception:  # never let the listener die silently: polling alone would be slow
                log.exception("LISTEN failed; reconnecting")
                await asyncio.sleep(FIRST_RECONNECT_DELAY)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """LISTEN on both channels; False behind a pooler, where it cannot work."""
        async with self._answer():  # the path can go silent while we set up, too
            if await connections.behind_pooler_async(conn):
                return False
            await count_async(conn, statements.listen(JOBS_CHANNEL))
            await count_async(conn, statements.listen(CANCEL_CHANNEL))
        return True

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # A silently dead connection delivers nothing; a cheap probe each poll interval finds it out.
        while True:
            async for notice in conn.notifies(timeout=self._poll_interval):
                self._heard(notice.channel, notice.payload)
            async with self._answer():
                await count_async(conn, statements.probe())

    @contextlib.asynccontextmanager
    async def _answer(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._answer_timeout):
                yield
        except TimeoutError:
            raise psycopg.OperationalError(f"LISTEN connection: no answer within {self._answer_timeout:g} s") from None

    def _heard(self, channel: str, payload: str) -> None:
        if channel == CANCEL_CHANNEL:
            # Which jobs are cancelled is for the table to say: the payload is not even read.
            self._on_cancel()
            return
        wanted = parse_jobs_message(payload)
        if wanted is None:
            self._log_garbage(channel, payload)
            return
        self._on_jobs(*wanted)

    def _log_garbage(self, channel: str, payload: str) -> None:
        now = time.monotonic()
        if now - self._garbage_logged_at >= GARBAGE_LOG_EVERY:
            self._garbage_logged_at = now
            log.warning("ignored a malformed notification on %s: %s", channel, shown(payload))
        else:
            log.debug("ignored a malformed notification on %s: %s", channel, shown(payload))
