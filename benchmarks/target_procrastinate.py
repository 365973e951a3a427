"""Procrastinate (psycopg connector, `procrastinate worker`): an optional comparison target."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from target_base import BIN, Target


class ProcrastinateClient:
    def __init__(self, task: Any) -> None:
        self.task = task

    async def enqueue(self, n: int, sent: float) -> None:
        await self.task.defer_async(n=n, sent=sent)

    async def enqueue_many(self, ns: Sequence[int], sent: float = 0.0) -> None:
        await self.task.batch_defer_async(*({"n": n, "sent": sent} for n in ns))


class Procrastinate(Target):
    name = "Procrastinate"
    default_concurrency = 1  # `procrastinate worker --concurrency`
    sweep = (1, 10, 50)
    drain_jobs = 10_000  # about 20 s per drain at its rate: the rate, not the size, is compared
    sql_remaining = "SELECT EXISTS (SELECT FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
    sql_done = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"

    def available(self) -> str | None:
        try:
            import procrastinate  # noqa: F401
        except ImportError as exc:
            return f"not installed ({exc.name}); `pip install -e '.[bench]'`"
        self.version = metadata.version("procrastinate")
        return None

    def install(self, dsn: str) -> None:
        import psycopg
        from procrastinate.schema import SchemaManager

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SchemaManager.get_schema())

    def reset(self, conn: Any) -> None:
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")

    @asynccontextmanager
    async def client(self, dsn: str) -> AsyncIterator[ProcrastinateClient]:
        import app_procrastinate
        from procrastinate import PsycopgConnector

        with app_procrastinate.app.replace_connector(PsycopgConnector(conninfo=dsn)) as app:
            async with app.open_async():
                yield ProcrastinateClient(app.tasks["noop"])

    def worker_commands(self, dsn: str, processes: int, concurrency: int) -> list[list[str]]:
        # Warnings only: at its default level it logs two lines per job, which would be measured too.
        command = [str(BIN / "procrastinate"), "--log-level", "warning", "--app", "app_procrastinate.app", "worker"]
        return [[*command, "--concurrency", str(concurrency)] for _ in range(processes)]

    def preload_finished(self, conn: Any, count: int) -> None:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts) "
            "SELECT 'default', 'noop', jsonb_build_object('n', -i), 'succeeded', 1 FROM generate_series(1, %s) i",
            (count,),
        )
