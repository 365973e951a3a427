"""`pgqueue jobs`, `show`, `retry`, `prune` and the filters of `cancel` and `retry-failed`, as a user runs them:
a subprocess against real PostgreSQL. Hostile input gets one line on stderr and a non-zero exit, never a
traceback; text from job rows is shown escaped; bulk commands touch exactly what matches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
PASSWORD = "s3cretPW42"
ESC = "\x1b"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/tasks.py", line 12, in invoice\n'
    "    pdf = render(order)\n"
    '  File "/app/pdf.py", line 40, in render\n'
    '    raise TimeoutError("slow")\n'
    "TimeoutError: slow"
)


def run(*args: str, dsn: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    if dsn is not None:
        environment["PGQUEUE_DSN"] = dsn
    return subprocess.run(
        [PGQUEUE, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60, input=stdin or ""
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    return result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str, code: int = 1) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert text in lines[0], lines[0]
    assert len(lines[0]) < 2000


def add_job(db: psycopg.Connection, status: str = "pending", **columns: object) -> int:
    values: dict[str, object] = {"task": "invoice", "queue": "default", "status": status, **columns}
    if status in ("failed", "completed", "cancelled"):
        values.setdefault("finished_at", "now")
    if status == "failed":
        values.setdefault("attempts", 3)
        values.setdefault("error", "RuntimeError: boom")
    if status == "running":
        values.setdefault("attempts", 1)
        values.setdefault("worker_id", "w1")
        values.setdefault("lease_expires_at", "infinity")
    for name in ("args", "result", "errors"):
        if name in values and not isinstance(values[name], str):
            values[name] = json.dumps(values[name])
    names = ", ".join(values)
    placeholders = ", ".join(f"%({name})s" for name in values)
    row = db.execute(f"INSERT INTO pgqueue.jobs ({names}) VALUES ({placeholders}) RETURNING id", values).fetchone()
    assert row is not None
    return int(row[0])


def statuses(db: psycopg.Connection) -> dict[int, str]:
    return {int(i): s for i, s in db.execute("SELECT id, status FROM pgqueue.jobs")}


# -- pgqueue jobs ---------------------------------------------------------------------------------------------


def test_jobs_filters_combine_and_json_lists_exactly_the_matches(dsn: str, db: psycopg.Connection) -> None:
    match = add_job(db, "failed", queue="billing", args={"order_id": 42, "kind": "pdf"})
    add_job(db, "failed", queue="billing", args={"order_id": 43})  # other args
    add_job(db, "pending", queue="billing", args={"order_id": 42})  # other status
    add_job(db, "failed", queue="other", args={"order_id": 42})  # other queue
    add_job(db, "failed", task="email", queue="billing", args={"order_id": 42})  # other task
    too_old = add_job(db, "failed", queue="billing", args={"order_id": 42})
    db.execute("UPDATE pgqueue.jobs SET created_at = now() - interval '3 hours' WHERE id = %s", (too_old,))
    filters = ["--status", "failed", "--task", "invoice", "-q", "billing", "--since", "1h"]
    out = ok(run("jobs", *filters, "--args-contain", '{"order_id": 42}', "--json", dsn=dsn))
    listed = json.loads(out)
    assert [job["id"] for job in listed] == [match], listed
    assert listed[0]["args"] == {"order_id": 42, "kind": "pdf"} and listed[0]["status"] == "failed"
    everything = json.loads(ok(run("jobs", "--json", dsn=dsn)))
    assert [job["id"] for job in everything] == sorted(statuses(db), reverse=True)
    assert json.loads(ok(run("jobs", "--status", "completed", "--json", dsn=dsn))) == []
    assert ok(run("jobs", "--status", "completed", dsn=dsn)).strip() == "no jobs"


def test_jobs_since_excludes_older_jobs(dsn: str, db: psycopg.Connection) -> None:
    old = add_job(db)
    new = add_job(db)
    db.execute("UPDATE pgqueue.jobs SET created_at = now() - interval '2 days' WHERE id = %s", (old,))
    assert [j["id"] for j in json.loads(ok(run("jobs", "--since", "1d", "--json", dsn=dsn)))] == [new]
    assert [j["id"] for j in json.loads(ok(run("jobs", "--since", "3d", "--json", dsn=dsn)))] == [new, old]


def test_jobs_table_escapes_control_characters_and_clips_huge_args(dsn: str, db: psycopg.Connection) -> None:
    evil = add_job(
        db,
        "failed",
        task=f"in{ESC}[2Jvoice\u202e",
        args={"x": f"a{ESC}]0;pwned\x07", "pad": "y" * 1_000_000},
        error=f"line one{ESC}[31m\nline two",
    )
    result = run("jobs", dsn=dsn)
    out = ok(result)
    assert ESC not in out and "\x07" not in out and "\u202e" not in out
    assert "in\\x1b[2Jvoice\\u202e" in out and "line one\\x1b[31m" in out and "line two" not in out
    assert str(evil) in out and len(out) < 5_000  # a megabyte of args costs the table a cell
    (listed,) = json.loads(ok(run("jobs", "--json", dsn=dsn)))  # scripts get 10,000 characters, marked as cut
    assert len(listed["args"]) == 10_000 and listed["args_clipped"] > 990_000
    # The limit is honoured and said on stderr when reached.
    for _ in range(3):
        add_job(db)
    limited = run("jobs", "--limit", "2", dsn=dsn)
    assert "(2 rows)" in ok(limited)
    assert "showing the newest 2" in limited.stderr


# -- pgqueue show ---------------------------------------------------------------------------------------------


def test_show_prints_args_result_history_with_traceback_summary_and_timeline(dsn: str, db: psycopg.Connection) -> None:
    errors = [
        {
            "attempt": 1,
            "started_at": "2026-11-01T10:00:00+00:00",
            "at": "2026-11-01T10:00:02+00:00",
            "error": "TimeoutError: slow",
            "traceback": TRACEBACK,
            "worker": "host1:123",
            "counted": True,
        },
        {
            "attempt": 2,
            "started_at": None,
            "at": "2026-11-01T10:05:00+00:00",
            "error": f"worker lost{ESC}[31m",
            "traceback": None,
            "worker": "host2:9",
            "counted": False,
        },
        "hand-written garbage",
    ]
    job = add_job(
        db,
        "failed",
        args={"order_id": 42},
        errors=errors,
        error="TimeoutError: slow",
        created_at="2026-11-01T09:59:00Z",
    )
    out = ok(run("show", str(job), dsn=dsn))
    assert f"job {job}: invoice on queue default" in out
    assert "status      failed" in out and '{"order_id": 42}' in out
    assert 'at File "/app/pdf.py", line 40, in render' in out  # the frame that raised
    assert "attempt 1 (counted), worker host1:123" in out and "attempt 2 (not counted), worker host2:9" in out
    assert "worker lost\\x1b[31m" in out and ESC not in out
    assert '#3 (not an object) "hand-written garbage"' in out
    timeline = out[out.index("timeline (UTC)") : out.index("error history")].splitlines()
    assert [line.strip() for line in timeline[1:5]] == [
        "2026-11-01 09:59:00  created",
        "2026-11-01 10:00:00  attempt 1 started on host1:123",
        "2026-11-01 10:00:02  attempt 1 ended: TimeoutError: slow",
        "2026-11-01 10:05:00  attempt 2 ended: worker lost\\x1b[31m",
    ]
    assert timeline[5].endswith("  failed") and len(timeline) == 6

    report = json.loads(ok(run("show", str(job), "--json", dsn=dsn)))
    assert report["args"] == {"order_id": 42} and report["error_count"] == 3
    assert report["errors"][0]["traceback"] == TRACEBACK
    assert report["errors"][0]["traceback_summary"] == 'File "/app/pdf.py", line 40, in render'
    assert report["errors"][2] == {"raw": '"hand-written garbage"'}


def test_show_completed_job_with_result_and_a_history_that_is_not_an_array(dsn: str, db: psycopg.Connection) -> None:
    job = add_job(db, "completed", result={"pdf": "s3://x"}, errors={"not": "an array"}, started_at="now")
    out = ok(run("show", str(job), dsn=dsn))
    assert 'result      {"pdf": "s3://x"}' in out and "error history" not in out
    assert json.loads(ok(run("show", str(job), "--json", dsn=dsn)))["result"] == {"pdf": "s3://x"}


def test_show_clips_huge_values_for_people_and_keeps_them_for_scripts(dsn: str, db: psycopg.Connection) -> None:
    job = add_job(db, args={"pad": "z" * 500_000})
    out = ok(run("show", str(job), dsn=dsn))
    assert "characters cut]" in out and len(out) < 20_000
    assert len(json.loads(ok(run("show", str(job), "--json", dsn=dsn)))["args"]["pad"]) == 500_000


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["show", "424242"], "no job 424242", 1),
        (["show", "99999999999999999999"], "Invalid value", 2),
        (["show", "abc"], "Invalid value", 2),
        (["show", "--", "-5"], "no job -5", 1),
        (["show", "-5"], "No such option", 2),
    ],
)
def test_show_bad_ids(dsn: str, args: list[str], message: str, code: int) -> None:
    assert_one_line_error(run(*args, dsn=dsn), message, code)


# -- pgqueue retry --------------------------------------------------------------------------------------------


def test_retry_sends_failed_jobs_back_and_names_the_rest(dsn: str, db: psycopg.Connection) -> None:
    failed = [add_job(db, "failed"), add_job(db, "failed")]
    pending = add_job(db)
    done = run("retry", str(failed[0]), str(failed[1]), dsn=dsn)
    assert done.returncode == 0 and done.stdout.strip() == f"retried 2 job(s): {failed[0]}, {failed[1]}", done
    assert statuses(db) == {failed[0]: "pending", failed[1]: "pending", pending: "pending"}
    assert db.execute("SELECT sum(attempts) FROM pgqueue.jobs").fetchone() == (0,)
    again = run("retry", str(failed[0]), str(pending), "424242", dsn=dsn)
    assert again.returncode == 1 and again.stdout.strip() == "retried 0 job(s)"
    assert f"not retried (unknown or not failed): {failed[0]}, {pending}, 424242" in again.stderr
    assert "Traceback" not in again.stderr
    held = add_job(db, "failed", dedup_key="k")
    add_job(db, "pending", dedup_key="k")
    refused = run("retry", str(held), "--json", dsn=dsn)
    assert refused.returncode == 1 and json.loads(refused.stdout)["refused"][0]["id"] == held
    assert_one_line_error(run("retry", "x1", dsn=dsn), "Invalid value", 2)


# -- retry-failed and cancel by filter ------------------------------------------------------------------------


def test_retry_failed_by_since_and_args(dsn: str, db: psycopg.Connection) -> None:
    wanted = add_job(db, "failed", args={"order_id": 42})
    other_args = add_job(db, "failed", args={"order_id": 7})
    too_old = add_job(db, "failed", args={"order_id": 42})
    db.execute("UPDATE pgqueue.jobs SET created_at = now() - interval '2 hours' WHERE id = %s", (too_old,))
    done = run("retry-failed", "--since", "1h", "--args-contain", '{"order_id": 42}', dsn=dsn)
    assert done.returncode == 0 and done.stdout.strip() == f"1 failed job(s) retried: {wanted}", done
    assert statuses(db) == {wanted: "pending", other_args: "failed", too_old: "failed"}


def test_cancel_by_filter_touches_only_matching_pending_and_running_jobs(dsn: str, db: psycopg.Connection) -> None:
    pending = add_job(db, queue="bulk", args={"tenant": 1})
    running = add_job(db, "running", queue="bulk", args={"tenant": 1})
    other_tenant = add_job(db, queue="bulk", args={"tenant": 2})
    other_queue = add_job(db, queue="main", args={"tenant": 1})
    done_job = add_job(db, "completed", queue="bulk", args={"tenant": 1})
    before = statuses(db)

    refused = run("cancel", "--queue", "bulk", dsn=dsn)  # stdin is not a terminal: no silent bulk cancel
    assert_one_line_error(refused, "pass --yes")
    assert statuses(db) == before

    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_cancel")
        done = run("cancel", "--queue", "bulk", "--args-contain", '{"tenant": 1}', "--yes", "--json", dsn=dsn)
        notified = {json.loads(n.payload)["id"] for n in listener.notifies(timeout=2, stop_after=2)}
    assert json.loads(ok(done)) == {"cancelled": [pending, running], "not_cancelled": []}
    assert notified == {pending, running}  # the running job's worker is told to stop
    after = statuses(db)
    assert after[pending] == after[running] == "cancelled"
    assert [after[i] for i in (other_tenant, other_queue, done_job)] == ["pending", "pending", "completed"]

    only_running = run("cancel", "--status", "running", "--queue", "main", "--yes", dsn=dsn)
    assert ok(only_running).strip() == "cancelled 0 job(s)" and statuses(db)[other_queue] == "pending"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cancel"], "give the ids of the jobs to cancel, or filters"),
        (["cancel", "1", "--queue", "x"], "not both"),
        (["cancel", "--status", "failed", "--yes"], "--status must be one of pending, running"),
    ],
)
def test_cancel_refuses_unclear_requests(dsn: str, db: psycopg.Connection, args: list[str], message: str) -> None:
    job = add_job(db)
    assert_one_line_error(run(*args, dsn=dsn), message)
    assert statuses(db) == {job: "pending"}


# -- pgqueue prune --------------------------------------------------------------------------------------------


def test_prune_asks_then_deletes_only_old_finished_jobs_in_batches(dsn: str, db: psycopg.Connection) -> None:
    for _ in range(5):
        add_job(db, "completed")
    db.execute("UPDATE pgqueue.jobs SET finished_at = now() - interval '8 days'")
    old_cancelled = add_job(db, "cancelled")
    old_failed = add_job(db, "failed")
    db.execute(
        "UPDATE pgqueue.jobs SET finished_at = now() - interval '8 days' WHERE id = ANY(%s)",
        ([old_cancelled, old_failed],),
    )
    recent = add_job(db, "completed")
    pending = add_job(db)
    running = add_job(db, "running")
    before = statuses(db)

    asked = run("prune", "--older-than", "7d", dsn=dsn)
    assert_one_line_error(asked, "would delete 6 job(s) (5 completed, 1 cancelled); pass --yes")
    assert statuses(db) == before

    done = run("prune", "--older-than", "7d", "--yes", "--batch", "2", dsn=dsn)
    assert ok(done).strip() == "deleted 6 job(s): 5 completed, 1 cancelled"
    assert set(statuses(db)) == {old_failed, recent, pending, running}  # failed kept unless asked for

    failed_too = run("prune", "--older-than", "7d", "--status", "failed", "--yes", "--json", dsn=dsn)
    assert json.loads(ok(failed_too)) == {"deleted": {"failed": 1}}
    assert set(statuses(db)) == {recent, pending, running}
    assert ok(run("prune", "--older-than", "7d", "--yes", dsn=dsn)).strip() == "deleted 0 job(s)"


def test_prune_filters_by_task(dsn: str, db: psycopg.Connection) -> None:
    mine = add_job(db, "completed", task="report")
    theirs = add_job(db, "completed", task="invoice")
    db.execute("UPDATE pgqueue.jobs SET finished_at = now() - interval '2 days'")
    assert ok(run("prune", "--older-than", "1d", "--task", "report", "-y", dsn=dsn)).strip() == (
        "deleted 1 job(s): 1 completed"
    )
    assert set(statuses(db)) == {theirs} and mine not in statuses(db)


def test_prune_skips_a_locked_row_instead_of_waiting(dsn: str, db: psycopg.Connection) -> None:
    """A row locked by another transaction (a retry under way, say) is left for next time: prune never waits."""
    locked = add_job(db, "completed")
    free = add_job(db, "completed")
    db.execute("UPDATE pgqueue.jobs SET finished_at = now() - interval '2 days'")
    with psycopg.connect(dsn) as holder:  # not autocommit: the lock is held until the block ends
        holder.execute("SELECT 1 FROM pgqueue.jobs WHERE id = %s FOR UPDATE", (locked,))
        finished = threading.Event()
        outcome: list[subprocess.CompletedProcess[str]] = []

        def prune() -> None:
            outcome.append(run("prune", "--older-than", "1d", "--yes", dsn=dsn))
            finished.set()

        worker = threading.Thread(target=prune)
        worker.start()
        worker.join(timeout=60)  # a prune that waited for the lock would still be running when this returns
        assert finished.is_set(), "prune waited for a locked row"
        holder.rollback()
    assert ok(outcome[0]).strip() == "deleted 1 job(s): 1 completed"
    assert set(statuses(db)) == {locked} and free not in statuses(db)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["prune"], "Missing option '--older-than'", 2),
        (["prune", "--older-than", "soon"], "invalid duration 'soon'", 1),
        (["prune", "--older-than", "0s", "--yes"], "must be longer than zero", 1),
        (["prune", "--older-than", "99999999d", "--yes"], "is too long (at most 36500d)", 1),
        (["prune", "--older-than", "1" * 400, "--yes"], "--older-than", 1),
        (["prune", "--older-than", "7d", "--status", "running", "--yes"], "--status must be one of completed", 1),
        (["prune", "--older-than", "7d", "--batch", "0", "--yes"], "Invalid value", 2),
    ],
)
def test_prune_bad_input_deletes_nothing(
    dsn: str, db: psycopg.Connection, args: list[str], message: str, code: int
) -> None:
    job = add_job(db, "completed")
    db.execute("UPDATE pgqueue.jobs SET finished_at = now() - interval '30 days'")
    assert_one_line_error(run(*args, dsn=dsn), message, code)
    assert statuses(db) == {job: "completed"}


# -- hostile filters, every command that takes them -----------------------------------------------------------

BAD_FILTERS = [
    (["--args-contain", "{not json"], "--args-contain is not valid JSON", 1),
    (["--args-contain", "[1, 2]"], "must be a JSON object", 1),
    (["--args-contain", '{"a": "\\u0000"}'], "NUL character", 1),
    (["--args-contain", "[" * 100_000], "--args-contain is too long", 1),
    (["--args-contain", '{"a": ' + "[" * 4_000 + "]" * 4_000 + "}"], "nested too deeply", 1),
    (["--args-contain", '{"a": NaN}'], "NaN or Infinity", 1),
    (["--since", "yesterday"], "invalid duration 'yesterday'", 1),
    (["--since", "-5m"], "invalid duration '-5m'", 1),
    (["--since", "9" * 400 + "d"], "too long", 1),
    (["--task", "t" * 5_000], "--task is too long", 1),
]
COMMANDS = [["jobs"], ["retry-failed"], ["cancel", "--yes"], ["prune", "--older-than", "1d", "--yes"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(("options", "message", "code"), BAD_FILTERS, ids=[str(i) for i in range(len(BAD_FILTERS))])
def test_bad_filters_are_one_line_errors_and_change_nothing(
    dsn: str, db: psycopg.Connection, command: list[str], options: list[str], message: str, code: int
) -> None:
    jobs = [add_job(db, "failed"), add_job(db), add_job(db, "completed")]
    db.execute("UPDATE pgqueue.jobs SET finished_at = now() - interval '3 days' WHERE finished_at IS NOT NULL")
    before = statuses(db)
    assert_one_line_error(run(*command, *options, dsn=dsn), message, code)
    assert statuses(db) == before and len(before) == len(jobs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["jobs", "--limit", "10001"], "Invalid value for '--limit'"),
        (["jobs", "--limit", "99999999999999999999999"], "Invalid value for '--limit'"),
        (["jobs", "--limit", "0"], "Invalid value for '--limit'"),
        (["jobs", "--status", "dead"], None),
    ],
)
def test_jobs_bad_limits_and_statuses(dsn: str, args: list[str], message: str | None) -> None:
    if message is None:
        assert_one_line_error(run(*args, dsn=dsn), "--status must be one of pending, running, completed", 1)
    else:
        assert_one_line_error(run(*args, dsn=dsn), message, 2)


@pytest.mark.parametrize("command", [["jobs"], ["show", "1"], ["retry", "1"], ["prune", "--older-than", "1d", "-y"]])
def test_unreachable_database_never_shows_the_password(command: list[str]) -> None:
    result = run(*command, "--dsn", f"postgresql://user:{PASSWORD}@127.0.0.1:1/db")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout and result.stderr.startswith("error: ")


def _at_a_terminal(args: list[str], dsn: str, answer: bytes) -> str:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal, type `answer`, return all it wrote."""
    import pty
    import select
    import time

    environment = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}
    environment |= {"PGQUEUE_DSN": dsn, "COLUMNS": "100", "TERM": "xterm"}
    leader, follower = pty.openpty()
    process = subprocess.Popen([PGQUEUE, *args], cwd=ROOT, env=environment, stdin=follower, stdout=follower,
                               stderr=follower, close_fds=True)  # fmt: skip
    os.close(follower)
    written, answered, deadline = b"", False, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the other end closed: the process is gone
                    break
                if not chunk:
                    break
                written += chunk
            if not answered and b"[y/N]" in written:
                os.write(leader, answer)
                answered = True
            if process.poll() is not None and not ready:
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        os.close(leader)
    assert answered, written
    return written.decode(errors="replace")


def test_prune_at_a_terminal_asks_and_shows_progress(dsn: str, db: psycopg.Connection) -> None:
    for _ in range(5):
        add_job(db, "completed")
    db.execute("UPDATE pgqueue.jobs SET finished_at = now() - interval '2 days'")
    declined = _at_a_terminal(["prune", "--older-than", "1d", "--batch", "2"], dsn, b"n\r")
    assert "delete 5 job(s) (5 completed) for good? [y/N]" in declined and "error: aborted" in declined
    assert len(statuses(db)) == 5
    accepted = _at_a_terminal(["prune", "--older-than", "1d", "--batch", "2"], dsn, b"y\r")
    assert "pruning" in accepted and "100%" in accepted, accepted  # the bar: more than one batch, at a terminal
    assert "deleted 5 job(s): 5 completed" in accepted and "Traceback" not in accepted
    assert statuses(db) == {}


def test_show_prints_the_newest_100_of_a_long_history(dsn: str, db: psycopg.Connection) -> None:
    history = [{"attempt": n, "at": "2026-11-01T10:00:00+00:00", "error": f"E{n}", "counted": True} for n in range(150)]
    job = add_job(db, "failed", errors=history)
    out = ok(run("show", str(job), dsn=dsn))
    assert "error history (newest 100 of 150)" in out
    assert "attempt 50 (counted)" in out and "attempt 49 (counted)" not in out and "attempt 149 (counted)" in out
    assert len(json.loads(ok(run("show", str(job), "--json", dsn=dsn)))["errors"]) == 100
