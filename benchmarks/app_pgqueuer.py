"""PgQueuer's benchmark app: a factory for `pgqueuer.run("app_pgqueuer:create")` (benchmarks/ on PYTHONPATH).

asyncpg is PgQueuer's preferred driver, and `pgq run` uses uvloop when installed: its best setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.models import Job
from recorder import record


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["BENCH_TARGET_DSN"])
    app = PgQueuer.from_asyncpg_connection(connection)

    @app.entrypoint("noop")
    async def noop(job: Job) -> None:
        payload = json.loads(job.payload or b"{}")
        record(payload["n"], payload.get("sent", 0.0))

    try:
        yield app
    finally:
        await connection.close()
