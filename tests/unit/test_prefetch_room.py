"""How far a worker claims ahead of its free slots: bounded by its setting and by about 50 ms of work."""

from __future__ import annotations

import pytest

from pgqueue import Queue
from pgqueue.worker import PREFETCH_AHEAD_SECONDS, Worker, WorkerSettings


@pytest.mark.parametrize(
    ("job_seconds", "room"),
    [
        (0.00001, 496),  # no-op jobs: the setting bounds it (a claim of 512 with the 16 slots)
        (0.005, int(16 * PREFETCH_AHEAD_SECONDS / 0.005)),  # 5 ms jobs: about 50 ms of work, 160 jobs
        (0.01, 0),  # 10 ms jobs or longer: none, they are better left for idle workers elsewhere
    ],
)
def test_claim_ahead_is_bounded_by_setting_and_by_work(job_seconds: float, room: int) -> None:
    worker = Worker(Queue("postgresql://unused"), WorkerSettings(concurrency=16))
    worker._job_seconds = job_seconds
    assert worker._prefetch_room() == room
    worker.prefetched.extend([(n,) for n in range(10)])  # those already held count against it
    assert worker._prefetch_room() == max(0, room - 10)
