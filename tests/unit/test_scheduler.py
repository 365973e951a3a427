"""The scheduler's pure parts: declaring schedules, the missed-fire policy, the listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgqueue import InvalidJobError, Queue, Task
from pgqueue.cron.expression import CronError
from pgqueue.cron.schedule import Schedule, describe, fire_params, plan, sync_params


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def schedule(cron: str, **options) -> Schedule:
    queue = Queue("postgresql://unused")

    @queue.periodic(cron=cron, name="s", **options)
    def handler() -> None:
        pass

    return queue.schedules[0]


# -- declaring ----------------------------------------------------------------------------------------


def test_periodic_registers_a_plain_function_and_stacks_on_task() -> None:
    queue = Queue("postgresql://unused")

    @queue.periodic(cron="0 9 * * 1-5", name="daily_report", timezone="Europe/Berlin", args={"kind": "sales"})
    def report(kind: str) -> None:
        pass

    @queue.periodic(cron="*/5 * * * *", name="mail_a", args={"to": "a"})
    @queue.periodic(cron="@hourly", name="mail_b", args={"to": "b"}, queue="mail", priority=7)
    @queue.task(queue="outbox", priority=3, max_attempts=2)
    def send(to: str) -> None:
        pass

    assert isinstance(report, Task) and isinstance(send, Task)
    assert set(queue.tasks) == {"report", "send"}
    by_name = {s.name: s for s in queue.schedules}
    assert set(by_name) == {"daily_report", "mail_a", "mail_b"}
    daily = by_name["daily_report"]
    assert (daily.task, daily.args, daily.timezone, daily.queue, daily.missed) == (
        "report",
        {"kind": "sales"},
        "Europe/Berlin",
        "default",
        "latest",
    )
    # Queue and priority default to the task's; max_attempts is the task's.
    assert (by_name["mail_a"].queue, by_name["mail_a"].priority, by_name["mail_a"].max_attempts) == ("outbox", 3, 2)
    assert (by_name["mail_b"].queue, by_name["mail_b"].priority) == ("mail", 7)


def test_schedule_name_defaults_to_the_task_name() -> None:
    queue = Queue("postgresql://unused")

    @queue.periodic(cron="@daily")
    def nightly() -> None:
        pass

    assert [s.name for s in queue.schedules] == ["nightly"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"cron": "61 * * * *"}, CronError, "schedule 'bad': minute field '61': value 61 out of range 0-59"),
        ({"cron": "0 0 30 2 *"}, CronError, "can never fire"),
        ({"cron": "* * * *"}, CronError, "expected 5 fields"),
        ({"cron": "@daily", "timezone": "Europe/Atlantis"}, CronError, "unknown time zone 'Europe/Atlantis'"),
        ({"cron": "@daily", "missed": "all"}, ValueError, "missed must be 'latest' or 'backfill'"),
        ({"cron": "@daily", "backfill_limit": 0}, ValueError, "backfill_limit must be an int from 1 to 1000"),
        ({"cron": "@daily", "backfill_limit": 5000}, ValueError, "backfill_limit"),
        ({"cron": "@daily", "args": {"nope": 1}}, InvalidJobError, "do not fit task 'bad'"),
        ({"cron": "@daily", "args": {"x": object()}}, InvalidJobError, "not JSON-serialisable"),
        ({"cron": "@daily", "name": " "}, ValueError, "non-empty"),
    ],
)
def test_bad_declarations_fail_at_once_and_register_nothing(options, error, message) -> None:
    queue = Queue("postgresql://unused")
    options = {"name": "bad", **options}
    with pytest.raises(error, match=None) as caught:

        @queue.periodic(**options)
        def bad(x: int = 0) -> None:
            pass

    assert message in str(caught.value)
    assert queue.tasks == {} and queue.schedules == []


def test_duplicate_schedule_name_is_rejected() -> None:
    queue = Queue("postgresql://unused")

    @queue.periodic(cron="@daily", name="same")
    def first() -> None:
        pass

    with pytest.raises(ValueError, match="schedule 'same' is already declared"):

        @queue.periodic(cron="@hourly", name="same")
        def second() -> None:
            pass

    assert set(queue.tasks) == {"first"} and len(queue.schedules) == 1


# -- the missed-fire policy ---------------------------------------------------------------------------


def test_nothing_due_before_the_next_fire() -> None:
    hourly = schedule("0 * * * *")
    step = plan(hourly, at("2026-05-01T10:00:00+00:00"), at("2026-05-01T09:59:59.999+00:00"))
    assert step.fires == [] and step.next_fire_at == at("2026-05-01T10:00:00+00:00") and step.dropped == 0


def test_on_time_fire() -> None:
    hourly = schedule("0 * * * *")
    step = plan(hourly, at("2026-05-01T10:00:00+00:00"), at("2026-05-01T10:00:00.004+00:00"))
    assert step.fires == [at("2026-05-01T10:00:00+00:00")]
    assert step.next_fire_at == at("2026-05-01T11:00:00+00:00") and step.dropped == 0


def test_latest_fires_once_for_the_latest_missed_time() -> None:
    hourly = schedule("0 * * * *")
    step = plan(hourly, at("2026-05-01T10:00:00+00:00"), at("2026-05-01T15:20:00+00:00"))
    assert step.fires == [at("2026-05-01T15:00:00+00:00")]
    assert step.dropped == 5  # 10:00 ... 14:00
    assert step.next_fire_at == at("2026-05-01T16:00:00+00:00")


def test_backfill_fires_every_missed_time_oldest_first_within_the_limit() -> None:
    hourly = schedule("0 * * * *", missed="backfill", backfill_limit=10)
    step = plan(hourly, at("2026-05-01T10:00:00+00:00"), at("2026-05-01T13:30:00+00:00"))
    assert step.fires == [at(f"2026-05-01T{h}:00:00+00:00") for h in (10, 11, 12, 13)]
    assert step.dropped == 0


def test_backfill_keeps_only_the_newest_limit_fires() -> None:
    hourly = schedule("0 * * * *", missed="backfill", backfill_limit=3)
    step = plan(hourly, at("2026-05-01T00:00:00+00:00"), at("2026-05-03T00:10:00+00:00"))
    assert step.fires == [
        at("2026-05-02T22:00:00+00:00"),
        at("2026-05-02T23:00:00+00:00"),
        at("2026-05-03T00:00+00:00"),
    ]
    assert step.dropped == 46  # 49 hourly times in the window, 3 fired


def test_a_long_outage_never_bursts() -> None:
    every_second = schedule("* * * * * *", missed="backfill", backfill_limit=1000)
    step = plan(every_second, at("2026-01-01T00:00:00+00:00"), at("2026-01-08T00:00:00+00:00"))
    assert len(step.fires) == 1000
    assert step.fires[-1] == at("2026-01-08T00:00:00+00:00")
    assert step.fires[0] == at("2026-01-07T23:43:21+00:00")
    assert step.dropped == 1000  # counting stops at the cap; the log line says "1000+"


def test_unknown_next_fire_waits_for_the_next_time() -> None:
    hourly = schedule("0 * * * *")
    step = plan(hourly, None, at("2026-05-01T10:20:00+00:00"))
    assert step.fires == [] and step.next_fire_at == at("2026-05-01T11:00:00+00:00")


def test_fires_follow_the_zone_across_dst() -> None:
    berlin = schedule("30 2 * * *", timezone="Europe/Berlin", missed="backfill")
    # 02:30 does not exist on 2026-03-29 (spring forward): it fires once at the jump, 03:00+02:00.
    step = plan(berlin, at("2026-03-28T02:30:00+01:00"), at("2026-03-30T12:00:00+02:00"))
    assert [f.astimezone(UTC) for f in step.fires] == [
        at("2026-03-28T01:30:00+00:00"),
        at("2026-03-29T01:00:00+00:00"),
        at("2026-03-30T00:30:00+00:00"),
    ]
    # 02:30 happens twice on 2026-10-25 (fall back): one fire, the first.
    step = plan(berlin, at("2026-10-24T02:30:00+02:00"), at("2026-10-25T12:00:00+01:00"))
    assert [f.astimezone(UTC) for f in step.fires] == [at("2026-10-24T00:30:00+00:00"), at("2026-10-25T00:30:00+00:00")]


def test_fire_and_sync_parameters() -> None:
    queue = Queue("postgresql://unused")

    @queue.periodic(cron="0 9 * * *", name="zeta", timezone="Asia/Tokyo", args={"n": 1})
    @queue.periodic(cron="0 9 * * *", name="alpha", skip_if_running=True)
    @queue.task
    def job(n: int = 0) -> None:
        pass

    zeta = queue.schedules[1]
    params = fire_params(zeta, at("2026-05-01T09:00:00+09:00"))
    assert params["next_fire_at"] == at("2026-05-02T09:00:00+09:00")
    assert (params["args"], params["task"], params["skip_if_running"]) == ('{"n": 1}', "job", False)
    synced = sync_params(queue.schedules, at("2026-05-01T10:00:00+00:00"))
    assert synced["names"] == ["alpha", "zeta"]  # one lock order in every process
    assert synced["next_fire_ats"] == [at("2026-05-02T09:00:00+00:00"), at("2026-05-02T09:00:00+09:00")]
    assert synced["skip_if_running"] == [True, False]


def test_describe_reports_state_last_and_next_fire() -> None:
    daily = schedule("0 9 * * *", timezone="Europe/Berlin")
    now = at("2026-05-01T10:00:00+00:00")
    unknown = describe([daily], None, now)[0]
    assert (unknown["state"], unknown["last_fire_at"], unknown["next_fire_at"]) == (
        "unknown",
        None,
        "2026-05-02T09:00:00+02:00",
    )
    assert describe([daily], [], now)[0]["state"] == "not registered"
    last = at("2026-05-01T07:00:00+00:00")
    stored = describe([daily], [("s", True, last, last + timedelta(days=1))], now)[0]
    assert (stored["state"], stored["last_fire_at"], stored["next_fire_at"]) == (
        "enabled",
        "2026-05-01T09:00:00+02:00",
        "2026-05-02T09:00:00+02:00",
    )
    disabled = describe([daily], [("s", False, last, None)], now)[0]
    assert (disabled["state"], disabled["next_fire_at"]) == ("disabled", None)
