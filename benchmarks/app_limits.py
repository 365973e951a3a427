"""The limits benchmark's app: `pgqueue work --app app_limits` (benchmarks/ on PYTHONPATH). Tasks that do the
same nothing: one limited to 50 running at once across all workers (it binds), one to ROOMY (it never binds,
not even on the jobs the workers claim ahead, which take slots too: what the bookkeeping of a limit costs), one to
RATE starts a second (it binds: the workers could start more), one
to KEY_RATE starts a second per value of `group` (it does not bind), one unlimited."""

from __future__ import annotations

import asyncio

from pgqueue import Queue

queue = Queue()
LIMIT = 50
ROOMY = 2000  # two workers hold at most 2 x 512 jobs (running and claimed ahead)
RATE = 2000
KEY_RATE = 1000


@queue.task(name="limited", concurrency=LIMIT)
async def limited(n: int, seconds: float = 0.0) -> None:
    if seconds:
        await asyncio.sleep(seconds)


@queue.task(name="unlimited")
async def unlimited(n: int, seconds: float = 0.0) -> None:
    if seconds:
        await asyncio.sleep(seconds)


@queue.task(name="rated", rate_limit=f"{RATE}/s")
async def rated(n: int, seconds: float = 0.0, group: int = 0) -> None:
    if seconds:
        await asyncio.sleep(seconds)


@queue.task(name="rated_per_group", rate_limit=f"{KEY_RATE}/s", rate_key="group")
async def rated_per_group(n: int, seconds: float = 0.0, group: int = 0) -> None:
    if seconds:
        await asyncio.sleep(seconds)


@queue.task(name="roomy", concurrency=ROOMY)
async def roomy(n: int, seconds: float = 0.0) -> None:
    if seconds:
        await asyncio.sleep(seconds)
