"""Schedules for the scheduler tests' worker processes (`pgqueue work --app tests.apps.cron_app`).

CRON_APP_VARIANT=v2 is the same app after a deploy that removed the `monthly_cleanup` schedule.
"""

from __future__ import annotations

import os

from pgqueue import Queue

queue = Queue()


# Every second, so a test sees several fires in a few seconds; backfill so a short outage leaves no gap.
@queue.periodic(cron="* * * * * *", name="every_second", missed="backfill", backfill_limit=30)
@queue.task(name="tick")
def tick(n: int = 0) -> None:
    pass


@queue.periodic(cron="0 9 * * 1-5", name="daily_report", timezone="Europe/Berlin", args={"kind": "sales"})
def daily_report(kind: str) -> None:
    pass


if os.environ.get("CRON_APP_VARIANT") != "v2":

    @queue.periodic(cron="@monthly", name="monthly_cleanup")
    def cleanup() -> None:
        pass
