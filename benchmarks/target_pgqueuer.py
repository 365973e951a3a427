"""PgQueuer (asyncpg driver, `pgq run`, uvloop): an optional comparison target."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from target_base import HERE, Target


class PgqueuerClient:
    def __init__(self, queries: Any) -> None:
        self.queries = queries

    async def enqueue(self, n: int, sent: float) -> None:
        await self.queries.enqueue("noop", json.dumps({"n": n, "sent": sent}).encode())

    async def enqueue_many(self, ns: Sequence[int], sent: float = 0.0) -> None:
        payloads = [json.dumps({"n": n, "sent": sent}).encode() for n in ns]
        await self.queries.enqueue(["noop"] * len(payloads), payloads, [0] * len(payloads))


class Pgqueuer(Target):
    name = "PgQueuer"
    concurrency_label = "batch size"
    default_concurrency = 10  # `pgq run --batch-size`; running jobs are unbounded by default
    sweep = (10, 50, 100)
    # Finished jobs leave the hot table (moved to pgqueuer_log by the buffered status flush).
    sql_remaining = "SELECT EXISTS (SELECT FROM pgqueuer)"
    sql_done = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"

    def available(self) -> str | None:
        try:
            import asyncpg  # noqa: F401
            import pgqueuer  # noqa: F401
        except ImportError as exc:
            return f"not installed ({exc.name}); `pip install -e '.[bench]'`"
        self.version = metadata.version("pgqueuer")
        return None

    def install(self, dsn: str) -> None:
        import asyncio

        import asyncpg
        from pgqueuer import Queries
        from pgqueuer.db import AsyncpgDriver

        async def install() -> None:
            connection = await asyncpg.connect(dsn)
            try:
                await Queries(AsyncpgDriver(connection)).install()
            finally:
                await connection.close()

        asyncio.run(install())

    def reset(self, conn: Any) -> None:
        conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")

    @asynccontextmanager
    async def client(self, dsn: str) -> AsyncIterator[PgqueuerClient]:
        import asyncpg
        from pgqueuer import Queries
        from pgqueuer.db import AsyncpgDriver

        connection = await asyncpg.connect(dsn)
        try:
            yield PgqueuerClient(Queries(AsyncpgDriver(connection)))
        finally:
            await connection.close()

    def worker_commands(self, dsn: str, processes: int, concurrency: int) -> list[list[str]]:
        command = [sys.executable, str(HERE / "worker_pgqueuer.py"), str(concurrency)]
        return [list(command) for _ in range(processes)]

    def preload_finished(self, conn: Any, count: int) -> None:
        # PgQueuer deletes finished jobs from its hot table; their history lives in pgqueuer_log.
        conn.execute(
            "INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, aggregated) "
            "SELECT -i, 'successful', 0, 'noop', true FROM generate_series(1, %s) i",
            (count,),
        )
