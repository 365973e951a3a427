"""pgqueue through its public API and its `pgqueue work` command."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from target_base import Target


class PgqueueClient:
    def __init__(self, queue: Any, api: str) -> None:
        self.queue = queue
        self.api = api

    async def enqueue(self, n: int, sent: float) -> None:
        if self.api == "async":
            await self.queue.enqueue_async("noop", {"n": n, "sent": sent})
        else:
            self.queue.enqueue("noop", {"n": n, "sent": sent})

    async def enqueue_many(self, ns: Sequence[int], sent: float = 0.0) -> None:
        jobs = [("noop", {"n": n, "sent": sent}) for n in ns]
        if self.api == "async":
            await self.queue.enqueue_many_async(jobs)
        else:
            self.queue.enqueue_many(jobs)


class Pgqueue(Target):
    name = "pgqueue"
    default_concurrency = 16
    sweep = (16, 64, 256)
    sql_remaining = (
        "SELECT EXISTS (SELECT FROM pgqueue.jobs WHERE status = 'pending') "
        "OR EXISTS (SELECT FROM pgqueue.jobs WHERE status = 'running')"
    )
    sql_done = "SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'"

    def __init__(self, api: str = "sync", task: str = "noop") -> None:
        import pgqueue

        self.api = api
        self.task = task
        self.version = getattr(pgqueue, "__version__", "dev")

    def install(self, dsn: str) -> None:
        from pgqueue.store.migrate import upgrade

        upgrade(dsn)

    def reset(self, conn: Any) -> None:
        conn.execute("TRUNCATE pgqueue.jobs CASCADE")

    @asynccontextmanager
    async def client(self, dsn: str) -> AsyncIterator[PgqueueClient]:
        from app_pgqueue import queue

        queue.dsn = dsn
        try:
            yield PgqueueClient(queue, self.api)
        finally:
            await queue.aclose()

    def worker_commands(self, dsn: str, processes: int, concurrency: int) -> list[list[str]]:
        command = [sys.executable, "-m", "pgqueue", "work", "--app", "app_pgqueue", "--dsn", dsn]
        command += ["--concurrency", str(concurrency)]
        if processes > 1:
            command += ["--workers", str(processes)]  # pgqueue's own supervisor: one command
        return [command]

    def preload_finished(self, conn: Any, count: int) -> None:
        conn.execute(
            "INSERT INTO pgqueue.jobs (task, args, status, attempts, started_at, finished_at) "
            "SELECT 'noop', jsonb_build_object('n', -i), 'completed', 1, now(), now() FROM generate_series(1, %s) i",
            (count,),
        )


class PgqueueBaseline(Pgqueue):
    """Another pgqueue checkout (`run.py --baseline PATH`), to compare two versions in one run.

    Its workers run `python -m pgqueue work` in PATH, with PATH first on PYTHONPATH. Its API runs in this process,
    so that enqueue figures are measured the same way as the checkout's: PATH's package is loaded a second time
    under the name `pgqueue_baseline` (a copy whose imports of pgqueue are renamed; nothing else is changed).
    """

    name = "pgqueue-baseline"

    def __init__(self, path: Path, api: str = "sync", task: str = "noop") -> None:
        super().__init__(api, task)
        self.path = path.resolve()
        self.version = str(self.path)

    def env(self, dsn: str) -> dict[str, str]:
        env = super().env(dsn)
        env["PYTHONPATH"] = os.pathsep.join([str(self.path), env["PYTHONPATH"]])
        return env

    def cwd(self) -> Path:
        # `python -m` puts its working directory first on sys.path: run in PATH, not in this checkout.
        return self.path

    @asynccontextmanager
    async def client(self, dsn: str) -> AsyncIterator[PgqueueClient]:
        baseline = _load_renamed(self.path)
        queue = baseline.Queue(dsn)

        @queue.task(name="noop")
        async def noop(n: int, sent: float = 0.0) -> None: ...

        try:
            yield PgqueueClient(queue, self.api)
        finally:
            await queue.aclose()


_RENAMED = "pgqueue_baseline"
_IMPORT = re.compile(r"^(\s*)(from|import) pgqueue(?=[.\s])", re.MULTILINE)


def _load_renamed(path: Path) -> Any:
    if _RENAMED in sys.modules:
        return sys.modules[_RENAMED]
    folder = Path(tempfile.mkdtemp(prefix="pgqueue-baseline-"))
    shutil.copytree(path / "pgqueue", folder / _RENAMED)
    if (path / "migrations").is_dir():
        shutil.copytree(path / "migrations", folder / "migrations")
    for source in (folder / _RENAMED).rglob("*.py"):
        source.write_text(_IMPORT.sub(rf"\1\2 {_RENAMED}", source.read_text()))
    sys.path.insert(0, str(folder))
    return importlib.import_module(_RENAMED)
