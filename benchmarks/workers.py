"""Starting and stopping a library's worker processes the way its users do (its own command line)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

import psycopg
from common import wait_until
from target_base import Target


class Workers:
    def __init__(self, target: Target, dsn: str, processes: int, concurrency: int, log: Path) -> None:
        self.target = target
        self.dsn = dsn
        self.processes = processes
        self.concurrency = concurrency
        self.log = log
        self.popens: list[subprocess.Popen[bytes]] = []
        self._log_file: IO[bytes] | None = None
        self._connections_before = 0  # the database's client connections before the workers started

    def start(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self._connections_before = _client_connections(conn)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("ab")
        header = f"--- {self.target.name} processes={self.processes} concurrency={self.concurrency}\n"
        self._log_file.write(header.encode())
        self._log_file.flush()
        for command in self.target.worker_commands(self.dsn, self.processes, self.concurrency):
            self.popens.append(
                subprocess.Popen(
                    command,
                    env=self.target.env(self.dsn),
                    cwd=self.target.cwd(),
                    stdin=subprocess.DEVNULL,
                    stdout=self._log_file,
                    stderr=self._log_file,
                    start_new_session=True,
                )
            )

    def pids(self) -> list[int]:
        return [p.pid for p in self.popens]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every process is connected, the workers have run a warm-up job (n < 0, left out of every check)
        and gone idle again."""
        self._wait_connected(timeout)

        async def warm_up() -> None:
            async with self.target.client(self.dsn) as client:
                await client.enqueue(-1, 0.0)

        asyncio.run(warm_up())
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            if not wait_until(lambda: not conn.execute(self.target.sql_remaining).fetchone()[0], timeout, 0.05):
                self.check_alive()
                raise RuntimeError(f"{self.target.name} workers did not run a job within {timeout:.0f} s")
        self.check_alive()
        time.sleep(1.0)

    def _wait_connected(self, timeout: float) -> None:
        """Until the database has at least one client connection more per worker process than before they
        started, and their count has not changed for a second: every process has started and connected. One
        process running the warm-up job says nothing of the others, which may still be importing: Python's
        start-up is about half a second of CPU per process, and on a 2-core box seven of them starting would
        be measured as part of an 8-process drain."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            deadline = time.monotonic() + timeout
            seen, since = -1, time.monotonic()
            while time.monotonic() < deadline:
                count = _client_connections(conn)
                if count != seen:
                    seen, since = count, time.monotonic()
                elif count >= self._connections_before + self.processes and time.monotonic() - since >= 1.0:
                    return
                self.check_alive()
                time.sleep(0.05)
        raise RuntimeError(f"{self.target.name}: {self.processes} worker processes not connected in {timeout:.0f} s")

    def check_alive(self) -> None:
        for popen in self.popens:
            if popen.poll() is not None:
                raise RuntimeError(f"{self.target.name} worker exited with {popen.returncode}; see {self.log}")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (a graceful stop: buffered acks are written, results recorded), then wait."""
        for popen in self.popens:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for popen in self.popens:
            try:
                popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)  # its own session: only what we started
                popen.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Workers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _client_connections(conn: psycopg.Connection[tuple[int]]) -> int:
    """Client connections to the database, other than `conn` itself."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ).fetchone()
    return int(row[0]) if row else 0
