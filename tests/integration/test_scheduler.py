"""The scheduler on real PostgreSQL: several schedulers, real worker processes, SIGKILL, the CLI.

Schedulers in one process get a settable clock and are driven pass by pass (`tick`); the worker
processes run on the real clock with a once-a-second schedule.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from pgqueue import Queue
from pgqueue.cron.scheduler import Scheduler
from pgqueue.store.run import OnConnection

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.cron_app"
T0 = datetime(2026, 5, 4, 8, 0, 0, 500000, tzinfo=UTC)  # a Monday


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def connection_execute(conn: psycopg.AsyncConnection) -> OnConnection:
    return OnConnection(conn)


def app_queue(dsn: str, **declarations: dict[str, Any]) -> Queue:
    """A Queue with one no-op task per schedule name, declared with the given periodic options."""
    queue = Queue(dsn)
    for name, options in declarations.items():

        def handler(n: int = 0) -> None:
            pass

        queue.periodic(name=name, **options)(queue.task(name=f"{name}_task")(handler))
    return queue


def rows(db: psycopg.Connection, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return db.execute(query, params).fetchall()


def assert_one_job_per_fire(db: psycopg.Connection, schedule: str) -> int:
    """Every fire of `schedule` with a job has exactly one, with run_at = fire time; returns the fire count."""
    fires = rows(db, "SELECT fire_at, job_id FROM pgqueue.schedule_fires WHERE schedule = %s", schedule)
    jobs = rows(db, "SELECT id, run_at FROM pgqueue.jobs WHERE schedule = %s", schedule)
    assert len(jobs) == len({run_at for _, run_at in jobs})  # no fire time twice
    assert sorted((job_id, fire_at) for fire_at, job_id in fires if job_id is not None) == sorted(jobs)
    return len(fires)


def test_many_schedulers_fire_each_time_exactly_once(dsn: str, db: psycopg.Connection) -> None:
    queue = app_queue(
        dsn,
        every_10s={"cron": "*/10 * * * * *", "args": {"n": 7}},
        hourly={"cron": "0 * * * *", "queue": "reports", "priority": 5},
    )
    clock = Clock()
    db.execute("LISTEN pgqueue_jobs")

    async def scenario() -> None:
        conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(6)]
        try:
            schedulers = [Scheduler(queue.schedules, await connection_execute(c), now=clock) for c in conns]
            await asyncio.gather(*(s.sync() for s in schedulers))
            for _ in range(40):  # 40 passes of all six at once, 2.5 s apart: 100 s in all
                clock.advance(seconds=2.5)
                await asyncio.gather(*(s.tick() for s in schedulers))
        finally:
            for conn in conns:
                await conn.close()

    asyncio.run(scenario())
    # 08:00:00.5 + 100 s: every ten seconds from 08:00:10 to 08:01:40, and the hourly one not yet.
    assert assert_one_job_per_fire(db, "every_10s") == 10
    fire_times = [t for (t,) in rows(db, "SELECT fire_at FROM pgqueue.schedule_fires ORDER BY fire_at")]
    assert fire_times == [datetime(2026, 5, 4, 8, 0, 10, tzinfo=UTC) + timedelta(seconds=10 * i) for i in range(10)]
    assert rows(db, "SELECT DISTINCT task, args, queue, status FROM pgqueue.jobs") == [
        ("every_10s_task", {"n": 7}, "default", "pending")
    ]
    assert rows(db, "SELECT name, last_fire_at, next_fire_at FROM pgqueue.schedules ORDER BY name") == [
        ("every_10s", datetime(2026, 5, 4, 8, 1, 40, tzinfo=UTC), datetime(2026, 5, 4, 8, 1, 50, tzinfo=UTC)),
        ("hourly", None, datetime(2026, 5, 4, 9, 0, tzinfo=UTC)),
    ]
    # The jobs went through the jobs table's trigger: workers are woken by NOTIFY.
    notices = list(db.notifies(timeout=2, stop_after=1))
    assert notices and json.loads(notices[0].payload)["queue"] == "default"


def test_missed_fires_latest_and_bounded_backfill(dsn: str, db: psycopg.Connection) -> None:
    queue = app_queue(
        dsn,
        latest={"cron": "*/5 * * * *"},
        backfill={"cron": "0 * * * *", "missed": "backfill", "backfill_limit": 4},
        catch_up={"cron": "30 * * * *", "missed": "backfill", "backfill_limit": 10},
    )
    clock = Clock()

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            scheduler = Scheduler(queue.schedules, await connection_execute(conn), now=clock)
            await scheduler.sync()
            clock.advance(hours=10, minutes=1)  # every worker was down from 08:00 to 18:01
            await scheduler.tick()
            await scheduler.tick()  # a second pass at the same instant owes nothing
            # A late process (slow clock, stale pass) cannot fire a time the policy passed over.
            latest = next(s for s in queue.schedules if s.name == "latest")
            assert await scheduler.fire(latest, datetime(2026, 5, 4, 17, 55, tzinfo=UTC)) is None

    asyncio.run(scenario())
    jobs = rows(db, "SELECT schedule, run_at FROM pgqueue.jobs ORDER BY id")

    def hour(**delta: float) -> datetime:
        return datetime(2026, 5, 4, tzinfo=UTC) + timedelta(**delta)

    def of(name: str) -> list[datetime]:
        return [run_at for schedule, run_at in jobs if schedule == name]

    assert of("latest") == [hour(hours=18)]  # 120 missed times: one fire, the latest
    assert of("backfill") == [hour(hours=h) for h in (15, 16, 17, 18)]  # 10 missed, newest 4, oldest first
    assert of("catch_up") == [hour(hours=h, minutes=30) for h in range(8, 18)]  # 10 missed, all fired
    for name in ("latest", "backfill", "catch_up"):
        assert_one_job_per_fire(db, name)
    assert rows(db, "SELECT next_fire_at FROM pgqueue.schedules WHERE name = 'latest'") == [
        (hour(hours=18, minutes=5),)
    ]


def test_skip_if_running(dsn: str, db: psycopg.Connection) -> None:
    queue = app_queue(dsn, guarded={"cron": "* * * * *", "skip_if_running": True}, free={"cron": "* * * * *"})
    clock = Clock()

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            scheduler = Scheduler(queue.schedules, await connection_execute(conn), now=clock)
            await scheduler.sync()
            for status in ("pending", "running", "failed"):
                clock.advance(minutes=1)
                await scheduler.tick()
                # The first job is still pending at the second fire, running at the third.
                db.execute("UPDATE pgqueue.jobs SET status = %s WHERE schedule = 'guarded'", (status,))
            clock.advance(minutes=1)
            await scheduler.tick()

    asyncio.run(scenario())
    fires = rows(
        db,
        "SELECT job_id, skipped_reason FROM pgqueue.schedule_fires WHERE schedule = 'guarded' ORDER BY job_id, fire_at",
    )
    first_job = fires[0][0]
    assert [reason for _, reason in fires] == [
        None,
        None,
        f"previous job {first_job} still pending",
        f"previous job {first_job} still running",
    ]
    assert len([job for job, _ in fires if job is not None]) == 2
    assert assert_one_job_per_fire(db, "guarded") == 4
    # Without the flag, every fire makes a job.
    assert rows(db, "SELECT count(*) FROM pgqueue.jobs WHERE schedule = 'free'") == [(4,)]


def test_removed_schedule_is_disabled_and_rolling_deploy(dsn: str, db: psycopg.Connection) -> None:
    old_code = app_queue(dsn, kept={"cron": "* * * * *"}, removed={"cron": "* * * * *"})
    new_code = app_queue(dsn, kept={"cron": "* * * * *"}, added={"cron": "*/2 * * * *"})
    clock = Clock()

    def state() -> dict[str, tuple[bool, bool]]:
        found = rows(db, "SELECT name, enabled, next_fire_at IS NOT NULL FROM pgqueue.schedules")
        return {name: (enabled, has_next) for name, enabled, has_next in found}

    async def scenario() -> None:
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as old_conn,
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as new_conn,
        ):
            old = Scheduler(old_code.schedules, await connection_execute(old_conn), now=clock)
            new = Scheduler(new_code.schedules, await connection_execute(new_conn), now=clock)
            await old.sync()
            clock.advance(minutes=1)
            await old.tick()
            # Deploy: a new process starts while the old one still runs.
            await new.sync()
            assert state() == {"kept": (True, True), "removed": (False, False), "added": (True, True)}
            for _ in range(3):
                clock.advance(minutes=1)
                await asyncio.gather(old.tick(), new.tick())
            # An old process restarting mid-deploy brings its set back until the next new process starts.
            await old.sync()
            assert state()["removed"] == (True, True) and state()["added"] == (False, False)
            await new.sync()
            assert state()["removed"] == (False, False) and state()["added"] == (True, True)

    asyncio.run(scenario())
    counts = dict(rows(db, "SELECT schedule, count(*) FROM pgqueue.jobs GROUP BY schedule"))
    # 'removed' fired once before the deploy and never after; 'kept' fired by whichever process came first.
    assert counts == {"removed": 1, "kept": 4, "added": 2}
    for name in counts:
        assert_one_job_per_fire(db, name)


def test_changed_expression_starts_afresh(dsn: str, db: psycopg.Connection) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            execute = await connection_execute(conn)
            await Scheduler(app_queue(dsn, report={"cron": "0 9 * * *"}).schedules, execute, now=clock).sync()
            clock.advance(days=3)  # down for three days: 09:00 is owed once (missed="latest")
            same = Scheduler(app_queue(dsn, report={"cron": "0 9 * * *"}).schedules, execute, now=clock)
            await same.sync()
            assert rows(db, "SELECT next_fire_at FROM pgqueue.schedules") == [(datetime(2026, 5, 4, 9, tzinfo=UTC),)]
            changed = app_queue(dsn, report={"cron": "0 7 * * *", "timezone": "Asia/Tokyo"})
            await Scheduler(changed.schedules, execute, now=clock).sync()

    asyncio.run(scenario())
    assert rows(db, "SELECT cron, timezone, next_fire_at FROM pgqueue.schedules") == [
        ("0 7 * * *", "Asia/Tokyo", datetime(2026, 5, 7, 22, tzinfo=UTC))  # 07:00 JST on the 8th
    ]


def test_old_fires_are_pruned_but_the_latest_job_fire_stays(dsn: str, db: psycopg.Connection) -> None:
    queue = app_queue(dsn, a={"cron": "@hourly"}, b={"cron": "@hourly"})
    db.execute(
        "INSERT INTO pgqueue.schedules (name, cron, task) VALUES ('a', '@hourly', 'a_task'), ('b', '@hourly', 'b_task')"
    )
    db.execute(
        "INSERT INTO pgqueue.schedule_fires (schedule, fire_at, job_id, skipped_reason, created_at)"
        " SELECT 'a', t, 1, NULL, t FROM generate_series("
        "  timestamptz '2026-01-01 00:00+00', '2026-01-01 09:00+00', interval '1 hour') AS t"
        " UNION ALL SELECT 'b', '2026-01-01 00:00+00', 2, NULL, '2026-01-01 00:00+00'"
        " UNION ALL SELECT 'a', now(), 3, NULL, now()"
    )

    async def scenario() -> int:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            execute = await connection_execute(conn)
            return await Scheduler(queue.schedules, execute, retention=timedelta(days=7)).prune()

    assert asyncio.run(scenario()) == 10  # a's ten old fires; b's only fire and a's recent one stay
    assert rows(db, "SELECT schedule, job_id FROM pgqueue.schedule_fires ORDER BY schedule") == [("a", 3), ("b", 2)]


def test_idle_scheduler_sleeps_until_the_next_fire(dsn: str, db: psycopg.Connection) -> None:
    queue = app_queue(dsn, yearly={"cron": "@yearly"})
    statements: list[str] = []

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

            class Counting(OnConnection):
                async def fetch(self, query: Any) -> list[Any]:
                    statements.append(query.sql.split()[0])
                    return await super().fetch(query)

                async def count(self, command: Any) -> int:
                    statements.append(command.sql.split()[0])
                    return await super().count(command)

            runner = asyncio.create_task(Scheduler(queue.schedules, Counting(conn)).run())
            await asyncio.sleep(1.5)
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    assert statements == ["WITH", "SELECT"]  # register, one pass, then asleep (at most 60 s at a time)
    assert rows(db, "SELECT name, enabled FROM pgqueue.schedules") == [("yearly", True)]


# -- real worker processes ------------------------------------------------------------------------------


def start_worker(dsn: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PGQUEUE, "work", "--app", APP, "--concurrency", "2"],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_fire_after(db: psycopg.Connection, instant: datetime, timeout: float = 40.0) -> None:
    """Wait until `every_second` has fired for a time at or after `instant`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (fired,) = db.execute(
            "SELECT count(*) FROM pgqueue.schedule_fires WHERE schedule = 'every_second' AND fire_at >= %s", (instant,)
        ).fetchone()
        if fired:
            return
        time.sleep(0.1)
    raise AssertionError(f"no fire for {instant} or later within {timeout} s")


def test_worker_processes_fire_once_through_sigkill_and_restart(dsn: str, db: psycopg.Connection) -> None:
    workers = [start_worker(dsn) for _ in range(3)]
    try:
        wait_for_fire_after(db, T0)
        (started_at,) = db.execute("SELECT now()").fetchone()
        wait_for_fire_after(db, started_at + timedelta(seconds=3))  # three processes fire side by side
        for worker in workers:
            worker.kill()  # SIGKILL: perhaps in the middle of a fire
        for worker in workers:
            worker.wait(10)
        time.sleep(2.0)  # nobody fires for a while
        (restarted_at,) = db.execute("SELECT now()").fetchone()
        workers = [start_worker(dsn) for _ in range(2)]
        wait_for_fire_after(db, restarted_at + timedelta(seconds=3))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    fires = assert_one_job_per_fire(db, "every_second")
    first, last = db.execute(
        "SELECT min(fire_at), max(fire_at) FROM pgqueue.schedule_fires WHERE schedule = 'every_second'"
    ).fetchone()
    assert fires == (last - first).total_seconds() + 1  # every second exactly once, the outage included
    # The seconds nobody fired while all workers were down were backfilled after the restart.
    (backfilled,) = db.execute(
        "SELECT count(*) FROM pgqueue.schedule_fires WHERE fire_at < %s AND created_at >= %s",
        (restarted_at, restarted_at),
    ).fetchone()
    assert backfilled >= 2
    assert rows(db, "SELECT name, enabled FROM pgqueue.schedules ORDER BY name") == [
        ("daily_report", True),
        ("every_second", True),
        ("monthly_cleanup", True),
    ]
    assert "schedule(s) registered" in outputs[0]


# -- the CLI --------------------------------------------------------------------------------------------


def run(*args: str, dsn: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    if dsn is not None:
        environment["PGQUEUE_DSN"] = dsn
    environment.update(env or {})
    return subprocess.run([PGQUEUE, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)


def test_cli_cron_next() -> None:
    result = run("cron", "next", "30 2 * * *", "--tz", "Europe/Berlin", "--after", "2026-03-27T12:00", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night: fired at the jump
        "2026-03-30T02:30:00+02:00",
    ]
    vixie = run("cron", "next", "0 0 13 * FRI", "--after", "2026-02-01T00:00:00+00:00", "-n", "3")
    assert vixie.stdout.splitlines() == [
        "2026-02-06T00:00:00+00:00",
        "2026-02-13T00:00:00+00:00",
        "2026-02-20T00:00:00+00:00",
    ]
    default = run("cron", "next", "*/15 * * * * *")
    assert default.returncode == 0 and len(default.stdout.splitlines()) == 5
    for line in default.stdout.splitlines():
        assert datetime.fromisoformat(line).second in (0, 15, 30, 45)


def test_cli_cron_next_bad_input() -> None:
    for args, message in [
        (["61 * * * *"], "minute field '61': value 61 out of range 0-59"),
        (["*/0 * * * *"], "step must be at least 1"),
        (["0 0 30 2 *"], "can never fire"),
        (["@daily", "--tz", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["@daily", "--after", "noon"], "--after 'noon' is not an ISO 8601 time"),
        (["@yearly", "--after", "9999-06-01T00:00:00+00:00"], "before the year 10000"),
    ]:
        result = run("cron", "next", *args)
        assert result.returncode == 1, result
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
        assert result.stdout == ""
    assert run("cron", "next", "@daily", "--count", "0").returncode == 2


def test_cli_cron_list(dsn: str, db: psycopg.Connection) -> None:
    before = json.loads(run("cron", "list", "--app", APP, "--json", dsn=dsn).stdout)
    assert [(s["name"], s["state"], s["last_fire_at"]) for s in before] == [
        ("every_second", "not registered", None),
        ("daily_report", "not registered", None),
        ("monthly_cleanup", "not registered", None),
    ]
    db.execute(
        "INSERT INTO pgqueue.schedules (name, cron, task, last_fire_at, next_fire_at)"
        " VALUES ('daily_report', '0 9 * * 1-5', 'daily_report', '2026-05-04 07:00+00', '2026-05-05 07:00+00'),"
        " ('monthly_cleanup', '@monthly', 'cleanup', NULL, NULL)"
    )
    db.execute("UPDATE pgqueue.schedules SET enabled = false WHERE name = 'monthly_cleanup'")
    listed = {s["name"]: s for s in json.loads(run("cron", "list", "--app", APP, "--json", dsn=dsn).stdout)}
    assert listed["daily_report"] == {
        "name": "daily_report",
        "cron": "0 9 * * 1-5",
        "timezone": "Europe/Berlin",
        "task": "daily_report",
        "state": "enabled",
        "last_fire_at": "2026-05-04T09:00:00+02:00",
        "next_fire_at": "2026-05-05T09:00:00+02:00",
    }
    assert (listed["monthly_cleanup"]["state"], listed["monthly_cleanup"]["next_fire_at"]) == ("disabled", None)
    table = run("cron", "list", "--app", APP, dsn=dsn)
    assert table.returncode == 0, table.stderr
    assert " daily_report    | 0 9 * * 1-5 | Europe/Berlin |" in table.stdout
    assert "2026-05-04T09:00:00+02:00 | 2026-05-05T09:00:00+02:00" in table.stdout

    offline = run("cron", "list", "--app", APP, "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert offline.returncode == 0 and "note: database unavailable" in offline.stderr
    assert "Traceback" not in offline.stderr and "| unknown |" in offline.stdout
    missing = run("cron", "list", "--app", "no_such_module")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "no_such_module" in missing.stderr
