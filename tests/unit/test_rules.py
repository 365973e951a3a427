"""The worker's pure rules: claiming ahead, idle sleep, start reports, reconnect backoff, notification payloads."""

from __future__ import annotations

import random

import pytest

from pgqueue.settings import WorkerSettings
from pgqueue.worker.listener import parse_jobs_message
from pgqueue.worker.rules import (
    PREFETCH_AHEAD_SECONDS,
    average_job_seconds,
    idle_timeout,
    prefetch_room,
    reconnect_delays,
    starts_due_in,
)


@pytest.mark.parametrize(
    ("job_seconds", "room"),
    [
        (0.00001, 496),  # no-op jobs: the setting bounds it (a claim of 512 with the 16 slots)
        (0.005, int(16 * PREFETCH_AHEAD_SECONDS / 0.005)),  # 5 ms jobs: about 50 ms of work, 160 jobs
        (0.01, 0),  # 10 ms jobs or longer: none, they are better left for idle workers elsewhere
    ],
)
def test_claim_ahead_is_bounded_by_setting_and_by_work(job_seconds: float, room: int) -> None:
    settings = WorkerSettings(concurrency=16)
    assert settings.prefetch == 496
    rule = {"job_seconds": job_seconds, "concurrency": 16, "prefetch": settings.prefetch}
    assert prefetch_room(**rule, prefetched=0) == room
    assert prefetch_room(**rule, prefetched=10) == max(0, room - 10)  # those already held count against it


def test_no_claim_ahead_with_prefetch_zero() -> None:
    assert prefetch_room(job_seconds=0.00001, concurrency=16, prefetch=0, prefetched=0) == 0


def test_average_moves_a_fifth_of_the_way() -> None:
    assert average_job_seconds(0.01, 0.06) == pytest.approx(0.02)


def test_idle_timeout_until_poll_or_due_job() -> None:
    assert idle_timeout(now=100.0, next_poll=130.0, next_due=None) == 30.0
    assert idle_timeout(now=100.0, next_poll=130.0, next_due=105.0) == 5.0
    assert idle_timeout(now=100.0, next_poll=90.0, next_due=None) == 0.0  # overdue: no sleep, never negative


def test_starts_are_due_within_ack_delay() -> None:
    assert starts_due_in(oldest_start=None, now=10.0, ack_delay=0.02) is None
    assert starts_due_in(oldest_start=10.0, now=10.005, ack_delay=0.02) == pytest.approx(0.015)
    assert starts_due_in(oldest_start=10.0, now=11.0, ack_delay=0.02) == 0.0


def test_reconnect_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    delays = reconnect_delays(4.0, random.Random(1))
    got = [next(delays) for _ in range(6)]
    for delay, base in zip(got, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= delay <= 1.2 * base


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [
        ('{"queue": "emails", "run_at": 12.5}', ("emails", 12.5)),
        ('{"queue": "emails"}', ("emails", 0.0)),
        ('{"queue": "emails", "run_at": true}', None),  # bool is no time
        ('{"queue": 1, "run_at": 0}', None),
        ('{"queue": "q", "run_at": 1e999}', None),  # not finite
        ("[1, 2]", None),
        ("not json", None),
        ("[" * 100_000, None),  # nested too deeply to parse
    ],
)
def test_jobs_notification_payloads(payload: str, parsed: tuple[str, float] | None) -> None:
    assert parse_jobs_message(payload) == parsed
