"""Lease renewal on a thread and a connection of its own.

A worker's jobs are taken from it when their leases lapse. Renewing them from the event loop ties the leases
to the loop being free: sync code inside an `async def` handler (or any other stall) would let every job of
the worker lapse, be rescued and run a second time elsewhere while it still runs here. The keeper renews from
a thread instead, so a stalled loop costs only time, and it reports the stall with the async jobs that were
running, one of which is holding the loop.

It also answers "is this attempt still mine?": an attempt missing from the renewal's answer was cancelled,
rescued or claimed again, and the worker is told to stop it. A cancel notification only asks for an early
renewal: the jobs table decides, never the notification.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from pgqueue.store import connections, statements
from pgqueue.store.rows import Attempt
from pgqueue.store.run import fetch
from pgqueue.text import first_line

log = logging.getLogger("pgqueue.worker")

IDLE_CLOSE_ROUNDS = 6  # rounds with nothing to renew before the keeper's connection is closed (idle workers)
RETRY_AFTER_ERROR = 1.0  # seconds
# Early renewals (asked for by cancel notifications) come at most this often: anyone who can connect can send
# those, and a flood of them must not turn into a flood of statements. A real cancel still acts within it.
EARLY_RENEWAL_GAP = 0.1  # seconds


class LeaseKeeper:
    """Renews the leases of the attempts `held()` returns, every `lease / 3` and whenever `renew_now()` asks."""

    def __init__(
        self,
        dsn: str,
        worker_id: str,
        lease: float,
        loop: asyncio.AbstractEventLoop,
        held: Callable[[], list[Attempt]],
        on_lost: Callable[[list[Attempt]], None],
        stalled_jobs: Callable[[], str],
    ) -> None:
        self._dsn = dsn
        self._worker_id = worker_id
        self._lease = timedelta(seconds=lease)
        self._interval = lease / 3
        self._loop = loop
        self._held = held
        self._on_lost = on_lost
        self._stalled_jobs = stalled_jobs
        self._poke = threading.Event()
        self._stopping = False
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._serve, name="pgqueue-leases", daemon=True)
        # Loop liveness: a mark posted to the loop at each round; one still unrun a round later means a stall.
        self._mark_posted: float | None = None
        self._mark_seen = True
        self._stall_reported = False

    def start(self) -> None:
        self._thread.start()

    def renew_now(self) -> None:
        """Renew at once (a cancel notification came): an attempt no longer ours is then stopped promptly."""
        self._poke.set()

    def stop(self) -> None:
        self._stopping = True
        self._poke.set()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        idle_rounds = 0
        delay = self._interval
        last_round = -EARLY_RENEWAL_GAP
        try:
            while not self._stopping:
                if self._poke.wait(delay):
                    time.sleep(max(0.0, last_round + EARLY_RENEWAL_GAP - time.monotonic()))
                self._poke.clear()
                if self._stopping:
                    return
                last_round = time.monotonic()
                self._watch_loop()
                held = self._held()
                if not held:
                    idle_rounds += 1
                    if idle_rounds >= IDLE_CLOSE_ROUNDS:
                        self._close()  # an idle worker keeps two connections, not three
                    delay = self._interval
                    continue
                idle_rounds = 0
                delay = self._interval if self._renew(held) else min(RETRY_AFTER_ERROR, self._interval)
        finally:
            self._close()

    def _renew(self, held: list[Attempt]) -> bool:
        try:
            conn = self._connection()
            rows = fetch(conn, statements.renew_leases(worker_id=self._worker_id, held=held, lease=self._lease))
        except psycopg.Error as exc:
            # The main connection reports outages; a lease that lapses meanwhile is what a rescue is for.
            log.debug("lease renewal failed (%s); trying again", first_line(exc))
            self._close()
            return False
        still_ours = {row.id for row in rows}
        lost = [(job_id, attempt) for job_id, attempt in held if job_id not in still_ours]
        if lost and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_lost, lost)
        return True

    def _watch_loop(self) -> None:
        now = time.monotonic()
        if self._mark_posted is not None and not self._mark_seen:
            if not self._stall_reported:
                self._stall_reported = True
                log.warning(
                    "event loop blocked for at least %.1f s (sync code inside an async handler?); async jobs "
                    "running: %s; their leases are kept meanwhile",
                    now - self._mark_posted,
                    self._stalled_jobs() or "none",
                )
            return
        if self._stall_reported:
            self._stall_reported = False
            log.warning("event loop free again")
        self._mark_posted, self._mark_seen = now, False
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._seen)

    def _seen(self) -> None:
        self._mark_seen = True

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self._dsn, autocommit=True, **connections.connect_kwargs(self._dsn, "pgqueue leases")
            )
            if connections.behind_pooler(conn):
                conn.prepare_threshold = None
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception as exc:  # a connection that is already broken
                log.debug("closing the lease connection: %s", first_line(exc))
