"""The CLI against hostile input, as a user runs it: a subprocess against real PostgreSQL.

Every failure is one line on stderr (exit 1, or 2 for a usage error), never a traceback; no password of a DSN is
ever printed; text from the database is shown escaped; retry-failed retries what it can and says why not the rest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from pgqueue import InvalidJobError, Queue

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.jobs_app"
CRON_APP = "tests.apps.cron_app"
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"
PASSWORD = "s3cretPW42"
# DSNs a driver error would echo whole, each with a password in it.
BAD_DSNS = [
    f"postgresql//user:{PASSWORD}@host/db",  # missing ':' after the scheme: libpq quotes the whole string back
    f"host=x password={PASSWORD} port=notanumber",
    f"host=127.0.0.1 password='{PASSWORD} x' bogus=1",
    f"postgresql://user:{PASSWORD}@[::1/db",
    f"postgresql://user:{PASSWORD}@127.0.0.1:1/db?bogus=1",
    f"postgresql://user:{PASSWORD}@127.0.0.1:1/db",
]
BIG = "99999999999999999999"  # beyond bigint


def run(
    *args: str, dsn: str | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    if dsn is not None:
        environment["PGQUEUE_DSN"] = dsn
    environment.update(env or {})
    return subprocess.run([PGQUEUE, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str = "", code: int = 1) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert text in lines[0], lines[0]
    assert len(lines[0]) < 2000, len(lines[0])
    return lines[0]


def add_job(db: psycopg.Connection, status: str, dedup_key: str | None = None, **columns: object) -> int:
    values = {"task": "invoice", "queue": "default", "status": status, "dedup_key": dedup_key, **columns}
    if status == "failed":
        values.setdefault("attempts", 3)
        values.setdefault("finished_at", "now")
        values.setdefault("error", "RuntimeError: boom")
    if status == "running":
        values.setdefault("attempts", 1)
        values.setdefault("worker_id", "w1")
        values.setdefault("lease_expires_at", "infinity")
    names = ", ".join(values)
    placeholders = ", ".join(f"%({name})s" for name in values)
    row = db.execute(f"INSERT INTO pgqueue.jobs ({names}) VALUES ({placeholders}) RETURNING id", values).fetchone()
    assert row is not None
    return int(row[0])


def states(db: psycopg.Connection) -> dict[int, tuple[str, int]]:
    return {int(i): (s, int(a)) for i, s, a in db.execute("SELECT id, status, attempts FROM pgqueue.jobs")}


# -- 7. retry-failed retries what it can ------------------------------------------------------------------


def test_retry_failed_skips_a_job_whose_dedup_key_is_held(dsn: str, db: psycopg.Connection) -> None:
    held = add_job(db, "failed", "invoice-42")
    plain = add_job(db, "failed")
    other = add_job(db, "failed", "invoice-43")
    holder = add_job(db, "pending", "invoice-42")
    running_key = add_job(db, "failed", "invoice-44")
    runner = add_job(db, "running", "invoice-44")
    before = states(db)

    dry = run("retry-failed", "--dry-run", dsn=dsn)
    assert "Traceback" not in dry.stderr
    assert dry.returncode == 1, dry.stderr
    assert dry.stdout.strip() == f"2 failed job(s) would be retried: {plain}, {other}"
    assert f"job {held}: dedup key 'invoice-42' is held by pending job {holder}" in dry.stderr
    assert f"job {running_key}: dedup key 'invoice-44' is held by running job {runner}" in dry.stderr
    assert states(db) == before

    done = run("retry-failed", dsn=dsn)
    assert "Traceback" not in done.stderr
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == f"2 failed job(s) retried: {plain}, {other}"
    refused = stderr_lines(done)
    assert len(refused) == 2, done.stderr
    assert f"job {held}: dedup key 'invoice-42' is held by pending job {holder}" in refused[0]
    assert f"job {running_key}: dedup key 'invoice-44' is held by running job {runner}" in refused[1]
    after = states(db)
    assert after[plain] == ("pending", 0) and after[other] == ("pending", 0)
    assert after[held] == before[held] and after[running_key] == before[running_key]
    assert after[holder] == before[holder] and after[runner] == before[runner]

    # Nothing left that can go back: exit 1 again, the same refusals, nothing changed.
    again = run("retry-failed", dsn=dsn)
    assert again.returncode == 1 and again.stdout.strip() == "0 failed job(s) retried", again
    assert len(stderr_lines(again)) == 2
    assert states(db) == after


def test_retry_failed_of_two_failed_jobs_sharing_a_key_retries_one(dsn: str, db: psycopg.Connection) -> None:
    older = add_job(db, "failed", "report-7")
    newer = add_job(db, "failed", "report-7")
    unrelated = add_job(db, "failed")

    done = run("retry-failed", dsn=dsn)
    assert "Traceback" not in done.stderr
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == f"2 failed job(s) retried: {newer}, {unrelated}"
    lines = stderr_lines(done)
    assert len(lines) == 1 and f"job {older}: dedup key 'report-7'" in lines[0] and f"job {newer}" in lines[0]
    after = states(db)
    assert after[newer] == ("pending", 0) and after[unrelated] == ("pending", 0)
    assert after[older][0] == "failed"
    # The newer one now holds the key.
    held = run("retry-failed", "--id", str(older), dsn=dsn)
    assert held.returncode == 1 and held.stdout.strip() == "0 failed job(s) retried"
    assert f"job {older}: dedup key 'report-7' is held by pending job {newer}" in held.stderr


def test_retry_failed_when_an_enqueue_takes_the_key_meanwhile(dsn: str, db: psycopg.Connection) -> None:
    """A job with the key inserted but not yet committed when retry-failed runs: the update waits on the unique
    index, gets a unique violation when the insert commits, and the statement run again refuses the job."""
    failed = add_job(db, "failed", "race-1")
    plain = add_job(db, "failed")
    with psycopg.connect(dsn) as enqueuer:  # not autocommit: the insert stays uncommitted
        row = enqueuer.execute(
            "INSERT INTO pgqueue.jobs (task, dedup_key) VALUES ('invoice', 'race-1') RETURNING id"
        ).fetchone()
        assert row is not None
        retry = subprocess.Popen(
            [PGQUEUE, "retry-failed", "--dsn", dsn], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            for _ in range(300):  # until the update waits for the enqueuer's transaction
                waiting = db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = "
                    "'Lock' AND query LIKE '%%matching%%'"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                assert retry.poll() is None, retry.communicate()
                time.sleep(0.05)
            else:
                pytest.fail("retry-failed never waited for the uncommitted enqueue")
            enqueuer.commit()
            out, err = retry.communicate(timeout=60)
        finally:
            if retry.poll() is None:
                retry.kill()
    assert "Traceback" not in err and retry.returncode == 1, err
    assert out.strip() == f"1 failed job(s) retried: {plain}"
    assert f"job {failed}: dedup key 'race-1' is held by pending job {row[0]}" in err
    after = states(db)
    assert after[failed][0] == "failed" and after[plain] == ("pending", 0)


def test_retry_failed_all_back_exits_0(dsn: str, db: psycopg.Connection) -> None:
    first = add_job(db, "failed", "k-1")
    second = add_job(db, "failed")
    done = run("retry-failed", dsn=dsn)
    assert done.returncode == 0 and not done.stderr.strip()
    assert done.stdout.strip() == f"2 failed job(s) retried: {first}, {second}"
    assert states(db) == {first: ("pending", 0), second: ("pending", 0)}


def test_api_retry_failed_gives_the_cli_answer(dsn: str, db: psycopg.Connection) -> None:
    held = add_job(db, "failed", "invoice-42")
    plain = add_job(db, "failed")
    holder = add_job(db, "pending", "invoice-42")
    cli = run("retry-failed", "--dry-run", dsn=dsn)
    queue = Queue(dsn)
    try:
        planned = queue.retry_failed(dry_run=True)
        assert planned.retried == [plain] and [r.job_id for r in planned.refused] == [held]
        assert states(db)[plain] == ("failed", 3)
        result = queue.retry_failed()
    finally:
        queue.close()
    assert result.retried == [plain]
    [refusal] = result.refused
    assert (refusal.job_id, refusal.dedup_key, refusal.holder_id, refusal.holder_status) == (
        held,
        "invoice-42",
        holder,
        "pending",
    )
    assert refusal.reason == f"job {held}: dedup key 'invoice-42' is held by pending job {holder}"
    assert refusal.reason in cli.stderr
    assert states(db)[plain] == ("pending", 0)


# -- 9. one line, never a traceback ------------------------------------------------------------------------


def test_migrate_unreachable_is_one_line() -> None:
    result = run("migrate", "--dsn", UNREACHABLE, timeout=30)
    assert_one_line_error(result, "database unavailable")


def deep_args(levels: int) -> str:
    return '{"a": ' + "[" * levels + "]" * levels + "}"


HOSTILE = [
    (["migrate"], UNREACHABLE, "database unavailable"),
    (["demo"], UNREACHABLE, "database unavailable"),
    (["enqueue", "x", "--args", deep_args(50_000)], None, "nested too deeply"),
    (["enqueue", "x", "--args", deep_args(300)], None, "nested too deeply"),
    (["enqueue", "x", "--delay", "1e400"], None, "--delay"),
    (["enqueue", "x", "--delay", "1000000000d"], None, "--delay"),
    (["enqueue", "x", "--delay", "1" + "0" * 400], None, "--delay"),
    (["enqueue", "x", "--delay", "99999999999999999999999h"], None, "--delay"),
    (["enqueue", "x", "--delay", "999999999d"], None, "--delay"),
    (["enqueue", "x", "--priority", BIG], None, ""),
    (["cancel", BIG], None, ""),
    (["cancel", "1", "--", "-" + BIG], None, ""),
    (["retry-failed", "--id", BIG], None, ""),
    (["cron", "next", "0 0 1 1 *", "--after", "0001-01-01T00:00:00+01:00"], None, "--after"),
    (["cron", "next", "0 0 1 1 *", "--after", "9999-12-31T23:00:00-05:00"], None, "--after"),
    (["cron", "next", "0 0 1 1 *", "--after", "9999-12-31T23:00:00+00:00"], None, "year 10000"),
    (["cron", "next", "0 0 1 1 *", "--after", "0001-01-01T00:00:00", "--tz", "Asia/Tokyo"], None, "--after"),
    (["cron", "next", BIG + " * * * *"], None, "out of range"),
    (["cron", "next", "*/" + BIG + " * * * *", "--count", BIG], None, ""),
    (["cron", "next", "0 0 1 1 *", "--tz", "../../etc/passwd"], None, "time zone"),
    (["work", "--app", ".relative", "--burst"], None, "--app"),
    (["work", "--app", APP, "--burst", "--listen-dsn", f"postgresql//u:{PASSWORD}@h/d"], None, "--listen-dsn"),
    (["status", "--dsn", "x" * 100_000], None, ""),
    (["cron", "list", "--app", "boom_app"], None, "ZeroDivisionError"),
    (["work", "--app", "boom_app", "--burst"], None, "ZeroDivisionError"),
    (["work", "--app", "dependency_app", "--burst"], None, "no_such_dependency_xyz"),
    (["work", "--app", "syntax_app", "--burst"], None, "SyntaxError"),
    (["cancel", "abc"], None, "job_ids"),
    (["status", "--bogus"], None, "--bogus"),
]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """Apps that fail to import, found through PYTHONPATH."""
    (tmp_path / "boom_app.py").write_text("from pgqueue import Queue\nqueue = Queue()\nx = 1 / 0\n")
    (tmp_path / "dependency_app.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "syntax_app.py").write_text("def f(:\n")
    return tmp_path


@pytest.mark.parametrize(("args", "bad_dsn", "text"), HOSTILE, ids=[" ".join(h[0])[:60] for h in HOSTILE])
def test_hostile_input_is_one_line_never_a_traceback(
    dsn: str, db: psycopg.Connection, app_dir: Path, args: list[str], bad_dsn: str | None, text: str
) -> None:
    result = run(*args, dsn=bad_dsn or dsn, env={"PYTHONPATH": str(app_dir)}, timeout=60)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode in (1, 2), (result.returncode, result.stdout[-500:], result.stderr[-3000:])
    line = assert_one_line_error(result, text, code=result.returncode)
    assert PASSWORD not in result.stdout + result.stderr, line
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_cancel_out_of_range_id_is_a_usage_error(dsn: str) -> None:
    assert_one_line_error(run("cancel", BIG, dsn=dsn), "job_ids", code=2)


def test_an_unexpected_exception_is_one_line_with_its_type(tmp_path: Path, dsn: str) -> None:
    (tmp_path / "odd_app.py").write_text(
        "from pgqueue import Queue\n"
        "class OddQueue(Queue):\n"
        "    def enqueue(self, *args, **kwargs):\n"
        "        raise KeyError('no such \\x1b[31mthing')\n"
        "queue = OddQueue()\n"
        "@queue.task(name='x')\n"
        "def x() -> None:\n"
        "    pass\n"
    )
    result = run("enqueue", "x", "--app", "odd_app", dsn=dsn, env={"PYTHONPATH": str(tmp_path)})
    line = assert_one_line_error(result, "unexpected KeyError: ")
    assert "\x1b" not in line and "\\x1b[31mthing" in line


def test_api_refuses_a_delay_beyond_the_year_9999() -> None:
    queue = Queue("postgresql://unused")
    queue.task(name="x")(lambda: None)
    for delay in (timedelta(days=999_999_999), float("inf"), 1e300, float("nan")):
        with pytest.raises(InvalidJobError, match="delay"):
            queue.job_params("x", delay=delay)
    assert queue.job_params("x", delay=timedelta(days=365 * 100))["delay"] == timedelta(days=365 * 100)


# -- 10. secrets and terminal safety -------------------------------------------------------------------


COMMANDS = [
    ["status"],
    ["migrate"],
    ["enqueue", "x"],
    ["retry-failed"],
    ["cancel", "1"],
    ["demo"],
    ["work", "--app", APP, "--burst"],
]


@pytest.mark.parametrize("index", range(len(BAD_DSNS)))
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_password_in_a_bad_dsn_is_never_printed(command: list[str], index: int) -> None:
    bad_dsn = BAD_DSNS[index]
    # Given as --dsn or in $PGQUEUE_DSN, in turn.
    result = run(*command, "--dsn", bad_dsn, timeout=30) if index % 2 else run(*command, dsn=bad_dsn, timeout=30)
    assert PASSWORD not in result.stdout + result.stderr, result.stderr[-3000:]
    assert_one_line_error(result)


def test_cron_list_with_a_bad_dsn_notes_it_without_the_password() -> None:
    result = run("cron", "list", "--app", CRON_APP, "--dsn", BAD_DSNS[0])
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "every_second" in result.stdout
    [note] = stderr_lines(result)
    assert note.startswith("note: database unavailable")


EVIL_QUEUE = "\x1b[2J\x1b[31mevil\n fake | 0 | 0 |"
EVIL_TASK = "t\x1b]0;pwned\x07\u202eask"


def test_status_escapes_control_characters_and_json_stays_valid(dsn: str, db: psycopg.Connection) -> None:
    add_job(db, "pending", queue=EVIL_QUEUE, task=EVIL_TASK)
    add_job(db, "failed", queue="plain", error="line one\nline \x1b[31mtwo")
    result = run("status", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\x1b[2J\\x1b[31mevil\\n fake | 0 | 0 |" in result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) == 2 + 2 + 1  # header, rule, two queues, footer: the newline made no extra row
    assert lines[-1] == "(2 rows)"
    assert lines[2].startswith(" \\x1b[2J") and lines[3].index("|") == lines[0].index("|")  # columns line up

    as_json = run("status", "--json", dsn=dsn)
    assert as_json.returncode == 0, as_json.stderr
    assert "\x1b" not in as_json.stdout
    report = json.loads(as_json.stdout)
    assert report["queues"][EVIL_QUEUE]["jobs"] == {"pending": 1}
    assert report["queues"]["plain"]["jobs"] == {"failed": 1}


def test_retry_failed_refusal_escapes_the_dedup_key(dsn: str, db: psycopg.Connection) -> None:
    key = "k\x1b[2J\nfake"
    failed = add_job(db, "failed", key)
    holder = add_job(db, "pending", key)
    result = run("retry-failed", dsn=dsn)
    assert result.returncode == 1
    assert "\x1b" not in result.stderr
    [line] = stderr_lines(result)
    assert f"job {failed}: dedup key " in line and f"is held by pending job {holder}" in line


def test_cron_list_escapes_control_characters(tmp_path: Path, dsn: str) -> None:
    (tmp_path / "evil_cron_app.py").write_text(
        "from pgqueue import Queue\n"
        "queue = Queue()\n"
        f"@queue.periodic(cron='0 9 * * *', name={'nightly' + EVIL_QUEUE!r})\n"
        f"@queue.task(name={EVIL_TASK!r})\n"
        "def job() -> None:\n"
        "    pass\n"
    )
    result = run("cron", "list", "--app", "evil_cron_app", dsn=dsn, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr and "\u202e" not in result.stdout
    assert "nightly\\x1b[2J" in result.stdout and "t\\x1b]0;pwned\\x07\\u202eask" in result.stdout
    assert result.stdout.splitlines()[-1] == "(1 row)" and len(result.stdout.splitlines()) == 4
    as_json = run("cron", "list", "--app", "evil_cron_app", "--json", dsn=dsn, env={"PYTHONPATH": str(tmp_path)})
    assert json.loads(as_json.stdout)[0]["task"] == EVIL_TASK
