"""Procrastinate's benchmark app: `procrastinate --app app_procrastinate.app worker` (benchmarks/ on PYTHONPATH)."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector
from recorder import record

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_TARGET_DSN", "")))


@app.task(name="noop")
async def noop(n: int, sent: float = 0.0) -> None:
    record(n, sent)
