"""pgqueue's benchmark app: `pgqueue work --app app_pgqueue` (benchmarks/ on PYTHONPATH)."""

from __future__ import annotations

from recorder import record

from pgqueue import Queue

queue = Queue()


@queue.task(name="noop")
async def noop(n: int, sent: float = 0.0) -> None:
    record(n, sent)


@queue.task(name="noop_sync")
def noop_sync(n: int, sent: float = 0.0) -> None:
    record(n, sent)
