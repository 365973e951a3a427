"""The limits benchmark's app: `pgqueue work --app app_limits` (benchmarks/ on PYTHONPATH). Two tasks that do
the same nothing, one limited to 50 running at once across all workers."""

from __future__ import annotations

import asyncio

from pgqueue import Queue

queue = Queue()
LIMIT = 50


@queue.task(name="limited", concurrency=LIMIT)
async def limited(n: int, seconds: float = 0.0) -> None:
    if seconds:
        await asyncio.sleep(seconds)


@queue.task(name="unlimited")
async def unlimited(n: int, seconds: float = 0.0) -> None:
    if seconds:
        await asyncio.sleep(seconds)
