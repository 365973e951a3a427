"""What the scenarios need from a queue library; one subclass per library."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


class Client(Protocol):
    async def enqueue(self, n: int, sent: float) -> None: ...
    async def enqueue_many(self, ns: Sequence[int], sent: float = 0.0) -> None: ...


class Target:
    name = "?"
    version = "?"
    default_concurrency = 1
    concurrency_label = "concurrency"
    sweep = (1,)  # settings of the concurrency knob tried in the drain sweep
    drain_jobs: int | None = None  # None: the scenario's size; a slow library gets fewer jobs, same rate
    sql_remaining = ""  # one boolean: are some jobs not finished yet?
    sql_done = ""  # how many jobs the library records as finished successfully

    def available(self) -> str | None:
        """None when the library can be benchmarked, else why not."""
        return None

    def install(self, dsn: str) -> None:
        raise NotImplementedError

    def reset(self, conn: Any) -> None:
        raise NotImplementedError

    def client(self, dsn: str) -> AbstractAsyncContextManager[Client]:
        raise NotImplementedError

    def worker_commands(self, dsn: str, processes: int, concurrency: int) -> list[list[str]]:
        raise NotImplementedError

    def preload_finished(self, conn: Any, count: int) -> None:
        raise NotImplementedError

    def cwd(self) -> Path | None:
        """Where its worker commands run (None: here)."""
        return None

    def env(self, dsn: str) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, "BENCH_TARGET_DSN": dsn, "BENCH_RESULTS_DSN": dsn}
