"""Several worker processes on one host: start them, forward signals, restart one that crashes."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

log = logging.getLogger("pgqueue.supervisor")

PARENT_ENV = "PGQUEUE_SUPERVISOR_PID"
RESTART_DELAY = 1.0


def supervise(
    count: int, worker_args: list[str], dsn: str, *, per_child: Callable[[int], list[str]] | None = None
) -> int:
    """Run `count` single-process workers until SIGINT/SIGTERM; returns the exit status.

    `per_child(slot)` gives the options of the child in that slot alone (its metrics port), kept on a restart.

    Children get the resolved DSN (so an embedded server is shared, kept alive by this process)
    and die with this process if it is killed outright.
    """
    env = {**os.environ, "PGQUEUE_DSN": dsn, PARENT_ENV: str(os.getpid())}
    command = [sys.executable, "-m", "pgqueue", "work", *worker_args]
    burst = "--burst" in worker_args
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(slot: int) -> None:
        children[slot] = subprocess.Popen(command + (per_child(slot) if per_child else []), env=env)

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    for slot in range(count):
        start(slot)
    log.info("supervisor %d: %d worker processes", os.getpid(), count)
    status = 0
    while children:
        time.sleep(0.2)
        for slot, child in list(children.items()):
            code = child.poll()
            if code is None:
                continue
            del children[slot]
            if code != 0:
                status = 1
            if not stopping and not burst:
                log.warning("worker process %d exited with %s; restarting it", child.pid, code)
                time.sleep(RESTART_DELAY)
                if not stopping:  # a stop asked for during the pause would never reach a child started after it
                    start(slot)
    return status


def exit_with_parent() -> None:
    """In a supervised worker: get SIGTERM when the supervisor dies, however it dies (Linux)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)
