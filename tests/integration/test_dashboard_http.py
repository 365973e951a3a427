"""The dashboard over real HTTP (uvicorn in a thread, httpx) against a real database: pages, actions, guards, and
hostile input (a bad query string is a 400 with one clear line, hostile rows render escaped and clipped)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed")
httpx = pytest.importorskip("httpx")

from pgqueue.dashboard import create_app  # noqa: E402
from pgqueue.store.queries import QUERIES  # noqa: E402
from tests.integration.dashboard_support import (  # noqa: E402
    failed_errors,
    insert_job,
    live_server,
    populate,
    register_worker,
)

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")


@pytest.fixture
def url(dsn: str) -> Iterator[str]:
    with live_server(create_app(dsn)) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as http:
        yield http


def csrf_token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def status_of(db: psycopg.Connection, job_id: int) -> str:
    return db.execute("SELECT status FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()[0]


# -- pages --------------------------------------------------------------------------------------------------


def test_pages_show_the_queue(client: httpx.Client, db: psycopg.Connection) -> None:
    ids = populate(db)
    overview = client.get("/")
    assert overview.status_code == 200
    text = overview.text
    for queue in ("emails", "default", "webhooks", "reports"):
        assert f">{queue}</a>" in text
    assert "paused" in text and "app-2" in text and ">dead<" in text and ">alive<" in text and ">stopped<" in text
    assert "<svg" in text and "bar-completed" in text
    fragment = client.get("/fragment/overview")
    assert fragment.status_code == 200 and "<html" not in fragment.text and "Queues" in fragment.text

    failed = client.get("/jobs", params={"status": "failed"})
    assert failed.status_code == 200 and f'href="/jobs/{ids["failed"]}"' in failed.text
    assert failed.text.count('class="job-link"') == 15

    job = client.get(f"/jobs/{ids['failed']}")
    assert job.status_code == 200
    assert "invoice-42" in job.text and "PDF service timed out (attempt 3)" in job.text
    assert "Traceback (most recent call last)" in job.text and "app-1:4242:9f3c1a" in job.text

    schedules = client.get("/schedules")
    assert schedules.status_code == 200
    assert "nightly_report" in schedules.text and "previous job 17 still running" in schedules.text


def test_overview_counts_are_exact_for_active_jobs(client: httpx.Client, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO pgqueue.jobs (queue, task) SELECT 'q', 't' FROM generate_series(1, 7)")
    db.execute("INSERT INTO pgqueue.jobs (queue, task, run_at) VALUES ('q', 't', now() + interval '1 hour')")
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, status, finished_at) "
        "SELECT 'q', 't', 'completed', now() - interval '30 seconds' FROM generate_series(1, 11)"
    )
    db.execute("INSERT INTO pgqueue.jobs (queue, task, status, finished_at) VALUES ('q', 't', 'failed', now())")
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, status, held_by) "
        "SELECT 'q', 't', 'held', 'task:t' FROM generate_series(1, 3)"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (queue, task, status, waiting_for) "
        "SELECT 'q', 't', 'waiting', 1 FROM generate_series(1, 2)"
    )
    from pgqueue.dashboard import data

    with psycopg.connect(db.info.dsn, autocommit=True) as conn:
        view = data.overview(conn)
    (queue,) = view.queues
    assert (queue.due, queue.scheduled, queue.failed, queue.completed_recent) == (7, 1, 1, 11)
    assert (queue.held, queue.waiting) == (3, 2)
    assert sum(m.completed for m in view.minutes) == 11 and not view.recent_capped
    with psycopg.connect(db.info.dsn, autocommit=True) as conn:
        capped = data.overview(conn, recent_cap=5)
    assert capped.recent_capped and capped.queues[0].completed_recent <= 5


def test_keyset_pages_cover_every_job_once(client: httpx.Client, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, run_at) "
        "SELECT 't', now() - make_interval(secs => g % 50) FROM generate_series(1, 130) g"
    )
    for params in ({"limit": "25"}, {"limit": "25", "status": "pending", "sort": "run_at"}):
        seen: list[int] = []
        query: dict[str, str] = dict(params)
        for _ in range(10):
            page = client.get("/jobs", params=query)
            assert page.status_code == 200
            seen += [int(i) for i in re.findall(r'class="job-link" href="/jobs/(\d+)"', page.text)]
            older = re.search(r'rel="next" href="([^"]+)"', page.text)
            if not older:
                break
            query = dict(httpx.QueryParams(older.group(1).split("?", 1)[1].replace("&amp;", "&")))
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 130, params
    assert "OFFSET" not in QUERIES["dashboard_jobs_newest"].upper()


def test_filters_by_queue_task_args_and_time(client: httpx.Client, db: psycopg.Connection) -> None:
    a = insert_job(db, queue="billing", task="invoice", args={"order_id": 42, "kind": "pdf"})
    b = insert_job(db, queue="billing", task="invoice", args={"order_id": 43})
    c = insert_job(db, queue="emails", task="send", args={"order_id": 42})
    db.execute("UPDATE pgqueue.jobs SET created_at = '2026-01-01T10:00:00Z' WHERE id = %s", (c,))

    def listed(**params: str) -> set[int]:
        page = client.get("/jobs", params=params)
        assert page.status_code == 200, page.text
        return {int(i) for i in re.findall(r'class="job-link" href="/jobs/(\d+)"', page.text)}

    assert listed(args='{"order_id": 42}') == {a, c}
    assert listed(args='{"order_id": 42}', queue="billing") == {a}
    assert listed(task="invoice") == {a, b}
    assert listed(**{"from": "2025-12-31T00:00", "to": "2026-01-02T00:00"}) == {c}
    assert listed(status="completed") == set()


# -- actions ------------------------------------------------------------------------------------------------


def test_retry_cancel_pause_resume(client: httpx.Client, db: psycopg.Connection) -> None:
    failed = insert_job(db, queue="q", status="failed", attempts=5, errors=failed_errors(5, "boom"), finished_at=None)
    pending = insert_job(db, queue="q")
    token = csrf_token(client.get(f"/jobs/{failed}").text)
    with psycopg.connect(db.info.dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_jobs")
        done = client.post("/actions/retry", data={"csrf": token, "id": str(failed)})
        assert done.status_code == 303 and done.headers["location"] == f"/jobs/{failed}?done=retried"
        notes = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert notes and '"queue" : "q"' in notes[0]
    assert db.execute("SELECT status, attempts FROM pgqueue.jobs WHERE id = %s", (failed,)).fetchone() == ("pending", 0)
    assert client.post("/actions/cancel", data={"csrf": token, "id": str(pending)}).status_code == 303
    assert status_of(db, pending) == "cancelled"
    assert client.post("/actions/pause", data={"csrf": token, "queue": "q"}).status_code == 303
    assert db.execute("SELECT paused FROM pgqueue.queues WHERE name = 'q'").fetchone() == (True,)
    with psycopg.connect(db.info.dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_jobs")
        assert client.post("/actions/resume", data={"csrf": token, "queue": "q"}).status_code == 303
        notes = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
    assert notes == ['{"queue" : "q", "run_at" : 0}']
    assert db.execute("SELECT paused FROM pgqueue.queues WHERE name = 'q'").fetchone() == (False,)


def test_retry_held_back_by_dedup_key_is_reported(client: httpx.Client, db: psycopg.Connection) -> None:
    old = insert_job(db, status="failed", dedup_key="invoice-42", finished_at=None)
    newer = insert_job(db, dedup_key="invoice-42")  # pending: holds the key
    token = csrf_token(client.get(f"/jobs/{old}").text)
    done = client.post("/actions/retry", data={"csrf": token, "id": str(old)}, follow_redirects=True)
    assert done.status_code == 200 and "dedup key is held" in done.text
    assert status_of(db, old) == "failed" and status_of(db, newer) == "pending"
    # Two failed jobs with one key and no holder: the newest goes back, the other is reported.
    db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now() WHERE id = %s", (newer,))
    twin = insert_job(db, status="failed", dedup_key="invoice-42", finished_at=None)
    confirm = client.get("/bulk", params={"op": "retry", "status": "failed"})
    assert 'data-count="failed">2<' in confirm.text
    max_id = re.search(r'name="max_id" value="(\d+)"', confirm.text).group(1)
    result = client.post(
        "/actions/bulk", data={"csrf": token, "op": "retry", "filter": "status=failed", "max_id": max_id}
    )
    assert result.status_code == 200 and 'data-done="1"' in result.text and "stayed failed" in result.text
    assert (status_of(db, twin), status_of(db, old)) == ("pending", "failed")


def test_bulk_cancel_touches_only_what_was_counted(client: httpx.Client, db: psycopg.Connection) -> None:
    for n in range(5):
        insert_job(db, queue="bulk", args={"n": n})
    insert_job(db, queue="other")
    running = insert_job(db, queue="bulk", status="running", attempts=1, worker_id="w")
    confirm = client.get("/bulk", params={"op": "cancel", "queue": "bulk"})
    assert 'data-count="pending">5<' in confirm.text and 'data-count="running">1<' in confirm.text
    max_id = re.search(r'name="max_id" value="(\d+)"', confirm.text).group(1)
    late = insert_job(db, queue="bulk")  # enqueued after the count: not touched
    with psycopg.connect(db.info.dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_cancel")
        result = client.post(
            "/actions/bulk",
            data={"csrf": csrf_token(confirm.text), "op": "cancel", "filter": "queue=bulk", "max_id": max_id},
        )
        notes = [n.payload for n in listener.notifies(timeout=2, stop_after=6)]
    assert result.status_code == 200 and 'data-done="6"' in result.text
    assert f'{{"id" : {running}}}' in notes
    counts = dict(db.execute("SELECT queue || ':' || status, count(*) FROM pgqueue.jobs GROUP BY 1").fetchall())
    assert counts == {"bulk:cancelled": 6, "bulk:pending": 1, "other:pending": 1}
    assert status_of(db, late) == "pending"


# -- guards -------------------------------------------------------------------------------------------------


def test_post_without_a_valid_csrf_token_is_refused(client: httpx.Client, db: psycopg.Connection) -> None:
    job = insert_job(db)
    page = client.get(f"/jobs/{job}")
    token = csrf_token(page.text)
    assert client.post("/actions/cancel", data={"id": str(job)}).status_code == 403
    assert client.post("/actions/cancel", data={"id": str(job), "csrf": token + "x"}).status_code == 403
    assert client.post("/actions/pause", data={"queue": "default"}).status_code == 403
    # A token is bound to its cookie: another client's cookie with this token fails.
    with httpx.Client(base_url=str(client.base_url)) as stranger:
        stranger.get("/")
        assert stranger.post("/actions/cancel", data={"id": str(job), "csrf": token}).status_code == 403
    # Cross-origin, even with a valid token and cookie.
    forged = client.post(
        "/actions/cancel", data={"id": str(job), "csrf": token}, headers={"Origin": "http://evil.example"}
    )
    assert forged.status_code == 403
    assert status_of(db, job) == "pending"
    assert db.execute("SELECT count(*) FROM pgqueue.queues").fetchone() == (0,)
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie


def test_read_only_hides_and_refuses_actions(dsn: str, db: psycopg.Connection) -> None:
    failed = insert_job(db, status="failed", finished_at=None)
    with live_server(create_app(dsn, read_only=True)) as base, httpx.Client(base_url=base) as http:
        page = http.get(f"/jobs/{failed}")
        assert page.status_code == 200 and "read-only" in page.text
        assert '<form method="post"' not in page.text and '<form method="post"' not in http.get("/").text
        assert "data-bulk" not in http.get("/jobs").text
        token = http.cookies.get("pgqueue_csrf")
        assert token
        assert http.post("/actions/retry", data={"id": str(failed), "csrf": "x"}).status_code == 403
        assert http.get("/bulk", params={"op": "retry"}).status_code == 403
    assert status_of(db, failed) == "failed"


def test_basic_auth_when_set(dsn: str) -> None:
    with live_server(create_app(dsn, auth="admin:s3cret")) as base:
        assert httpx.get(base + "/").status_code == 401
        assert httpx.get(base + "/", auth=("admin", "wrong")).status_code == 401
        assert httpx.get(base + "/", auth=("admin2", "s3cret")).status_code == 401
        assert httpx.get(base + "/static/style.css").status_code == 401
        refused = httpx.get(base + "/jobs")
        assert refused.headers["www-authenticate"].startswith("Basic ")
        assert httpx.get(base + "/", auth=("admin", "s3cret")).status_code == 200


def test_database_errors_never_show_the_dsn_password(server_dsn: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(server_dsn)
    dsn = f"postgresql://{params.get('user', 'postgres')}:hunter2-secret@127.0.0.1:1/nowhere?connect_timeout=2"
    with live_server(create_app(dsn)) as base:
        page = httpx.get(base + "/", timeout=30)
    assert page.status_code == 503 and "database unavailable" in page.text
    assert "hunter2" not in page.text


def test_security_headers_and_escaping(client: httpx.Client, db: psycopg.Connection) -> None:
    job = insert_job(
        db,
        queue="<b>q</b>",
        task="<img src=x onerror=alert(1)>",
        args={"html": "<script>alert('x')</script>"},
        status="failed",
        error="<script>alert(2)</script>",
        finished_at=None,
    )
    for path in ("/", f"/jobs/{job}", "/jobs?status=failed"):
        page = client.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>q</b>" not in page.text
        assert "&lt;script&gt;alert" in page.text or "&lt;b&gt;q&lt;/b&gt;" in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"


# -- hostile input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("/jobs/99999999999999999999999999", {}, "job id must be a whole number"),
        ("/jobs/9223372036854775808", {}, "job id must be between"),
        ("/jobs/-1", {}, "job id must be between"),
        ("/jobs/1e3", {}, "job id must be a whole number"),
        ("/jobs", {"cursor": "99999999999999999999999"}, "cursor must be a whole number"),
        ("/jobs", {"cursor": "0"}, "cursor must be between"),
        ("/jobs", {"cursor": "abc"}, "cursor must be a whole number"),
        ("/jobs", {"status": "pending", "sort": "run_at", "cursor": "12"}, "MICROSECONDS:ID"),
        ("/jobs", {"status": "pending", "sort": "run_at", "cursor": "9" * 19 + ":1"}, "cursor must be between"),
        ("/jobs", {"limit": "100000000"}, "limit must be between"),
        ("/jobs", {"status": "done"}, "status must be one of"),
        ("/jobs", {"sort": "run_at"}, "choose status pending or running"),
        ("/jobs", {"sort": "random"}, "sort must be newest or run_at"),
        ("/jobs", {"args": "{not json"}, "args filter is not valid JSON"),
        ("/jobs", {"args": "[1, 2]"}, "args filter must be a JSON object"),
        ("/jobs", {"args": "42"}, "args filter must be a JSON object"),
        ("/jobs", {"args": '{"a":' * 100 + "1" + "}" * 100}, "nested deeper than 64"),
        ("/jobs", {"args": "[" * 6_000 + "]" * 6_000}, "longer than 10000"),
        ("/jobs", {"args": '{"a": "\\u0000"}'}, "NUL"),
        ("/jobs", {"queue": "a\x00b"}, "NUL character"),
        ("/jobs", {"task": "t" * 5000}, "longer than 1000"),
        ("/jobs", {"from": "yesterday"}, "ISO 8601"),
        ("/jobs", {"from": "2026-01-02", "to": "2026-01-01"}, "the time range is empty"),
        ("/bulk", {"op": "delete"}, "op must be retry or cancel"),
    ],
)
def test_bad_query_strings_are_400_with_a_clear_message(
    client: httpx.Client, path: str, params: dict[str, str], expected: str
) -> None:
    page = client.get(path, params=params)
    assert page.status_code == 400, page.text[:500]
    message = re.search(r'<p class="message">(.*?)</p>', page.text, re.S).group(1)
    assert expected.replace("'", "&#39;").replace('"', "&#34;") in message
    assert "Traceback" not in page.text


def test_overlong_query_string_and_unknown_pages(client: httpx.Client) -> None:
    assert client.get("/jobs?" + "x=1&" * 13_000).status_code == 400
    assert client.get("/jobs/123456789").status_code == 404
    assert client.get("/nothing/here").status_code == 404
    assert client.post("/actions/explode", data={"a": "b"}).status_code == 403  # no token: refused before routing


def test_hostile_rows_render_escaped_and_clipped(client: httpx.Client, db: psycopg.Connection) -> None:
    huge = "E" * 5_000_000
    errors: list[Any] = [
        {"attempt": 1, "at": "not a time", "error": huge, "traceback": "T" * 5_000_000, "worker": "w\x1b[31m"},
        "a string entry",
        [1, 2, 3],
        {"attempt": "2\u202e", "error": None},
    ]
    job = insert_job(
        db,
        queue="q\x1b[2J\u202eevil",
        task="t\nline",
        args=["not", "an", "object"],
        status="failed",
        error=huge,
        errors=errors,
        finished_at=None,
    )
    started = time.perf_counter()
    page = client.get(f"/jobs/{job}")
    elapsed = time.perf_counter() - started
    assert page.status_code == 200
    assert len(page.content) < 200_000, len(page.content)
    assert "4,990,000 of 5,000,000 characters not shown" in page.text
    assert "4,980,000 of 5,000,000 characters not shown" in page.text  # traceback: its end is shown
    assert "\x1b" not in page.text and "\u202e" not in page.text
    assert "q\\x1b[2J\\u202eevil" in page.text and "t\\nline" in page.text
    assert "a string entry" in page.text and "(a JSON array, not an object)" in page.text
    assert elapsed < 5
    listing = client.get("/jobs")
    assert listing.status_code == 200 and len(listing.content) < 50_000 and "\x1b" not in listing.text

    deep = insert_job(db, args={"a": 1})
    db.execute(
        "UPDATE pgqueue.jobs SET args = %s::jsonb, errors = '{\"x\": 1}' WHERE id = %s", ("[" * 3000 + "]" * 3000, deep)
    )
    page = client.get(f"/jobs/{deep}")
    assert page.status_code == 200 and "[[[[" in page.text and "not a JSON array" in page.text


def test_forged_registry_rows_do_not_break_the_overview(client: httpx.Client, db: psycopg.Connection) -> None:
    """Anyone who can write pgqueue.workers can write anything there: the overview shows such rows, escaped,
    clipped and bounded, and keeps answering."""
    db.execute(
        """
        INSERT INTO pgqueue.workers
            (id, host, pid, queues, concurrency, running, started_at, heartbeat_at, stopped_at, heartbeat_interval)
        VALUES
            (repeat('<script>alert(1)</script>', 100) || E'\x1b[2J',
             repeat(E'<img src=x onerror=alert(2)>\u202e', 40000), -5,
             ARRAY[NULL, '<b>q</b>'], 0, 2147483647, now(), now(), NULL, NULL),
            ('infinite', 'h', 1, NULL, 1, 0, '-infinity', 'infinity', 'infinity', 15),
            ('many-queues', 'h', 2, (SELECT array_agg('queue-' || n) FROM generate_series(1, 10000) AS n), 1, 0,
             now(), now() + interval '1 year', NULL, 15),
            ('no-queues', 'h', 3, '{}', 1, 0, now(), now(), NULL, 15),
            ('two-dimensional', 'h', 4, '{{a,b},{c,d}}', 1, 0, now(), now(), NULL, 15)
        """
    )
    with pytest.raises(psycopg.errors.CheckViolation):  # migration 0007's check: no interval a reader cannot use
        db.execute(
            "INSERT INTO pgqueue.workers (id, host, pid, concurrency, heartbeat_interval) "
            "VALUES ('nan', 'h', 1, 1, 'NaN')"
        )
    for path in ("/", "/fragment/overview"):
        page = client.get(path)
        assert page.status_code == 200, page.text[:2000]
        text = page.text
        assert len(page.content) < 300_000, len(page.content)
        assert "<script>alert" not in text and "<img src=x" not in text and "<b>q</b>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;b&gt;q&lt;/b&gt;" in text
        assert "\x1b" not in text and "\u202e" not in text
        assert "+9,950 more" in text  # 50 of its 10,000 queue names shown
        assert ">none<" in text  # an empty list is not "all"
        assert "(null)" in text
        for name in ("a", "b", "c", "d"):
            assert f'<span class="chip">{name}</span>' in text
        row = text.split(">infinite<", 1)[1].split("</tr>", 1)[0]
        assert 'badge-dead"' in row  # a heartbeat no clock reaches is not a live worker


def test_stopped_workers_do_not_push_running_ones_off(client: httpx.Client, db: psycopg.Connection) -> None:
    # A burst worker run every few seconds leaves a stopped row each time, all newer than a busy worker's last beat.
    db.execute(
        "INSERT INTO pgqueue.workers (id, host, pid, concurrency, heartbeat_at, stopped_at, heartbeat_interval) "
        "SELECT 'burst-' || n, 'cron-host', n, 1, now() - make_interval(secs => n * 0.01), now(), 15 "
        "FROM generate_series(1, 300) AS n"
    )
    register_worker(db, "busy-one:77:abcdef", host="busy-host", pid=77, heartbeat_ago=20)
    text = client.get("/").text
    assert "busy-one:77:abcdef" in text
    assert text.count('class="worker-stopped"') == 199  # the list is bounded: 200 rows, the running one first


def test_non_form_posts_and_big_forms_are_refused(client: httpx.Client, db: psycopg.Connection) -> None:
    job = insert_job(db)
    token = csrf_token(client.get("/").text)
    assert client.post("/actions/cancel", json={"id": job, "csrf": token}).status_code == 415
    assert client.post("/actions/cancel", data={"id": str(job), "csrf": token, "pad": "x" * 100_000}).status_code == 413
    assert client.post("/actions/cancel", data={"id": "99999999999999999999", "csrf": token}).status_code == 400
    assert client.post("/actions/pause", data={"queue": "", "csrf": token}).status_code == 400
    assert status_of(db, job) == "pending"


# -- mounting, CLI, imports ---------------------------------------------------------------------------------


def test_mounted_under_a_prefix(dsn: str, db: psycopg.Connection) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    job = insert_job(db, status="failed", finished_at=None)
    host = Starlette(
        routes=[
            Route("/", lambda request: PlainTextResponse("host app")),
            Mount("/admin/queue", create_app(dsn)),
        ]
    )
    with live_server(host) as base, httpx.Client(base_url=base) as http:
        assert http.get("/").text == "host app"
        page = http.get("/admin/queue/")
        assert page.status_code == 200
        assert 'href="/admin/queue/static/style.css"' in page.text and 'href="/admin/queue/jobs"' in page.text
        assert "Path=/admin/queue" in page.headers["set-cookie"]
        job_page = http.get(f"/admin/queue/jobs/{job}")
        assert 'action="/admin/queue/actions/retry"' in job_page.text
        done = http.post("/admin/queue/actions/retry", data={"id": str(job), "csrf": csrf_token(job_page.text)})
        assert done.status_code == 303 and done.headers["location"] == f"/admin/queue/jobs/{job}?done=retried"
    assert status_of(db, job) == "pending"


def test_explain_overview_reads_indexes(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue, status, finished_at, args) "
        "SELECT 't', 'q' || (g % 3), 'completed', now() - make_interval(secs => g), jsonb_build_object('n', g) "
        "FROM generate_series(1, 50000) g"
    )
    db.execute("INSERT INTO pgqueue.jobs (task, queue) SELECT 't', 'q' || (g % 3) FROM generate_series(1, 200) g")
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue, status, finished_at) "
        "SELECT 't', 'q', 'failed', now() FROM generate_series(1, 20)"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue, status, held_by) "
        "SELECT 't', 'q', 'held', 'task:t' FROM generate_series(1, 5)"
    )
    db.execute("VACUUM ANALYZE pgqueue.jobs")
    cases = {
        "dashboard_queue_counts": (
            {},
            ["jobs_queue_claim_idx|jobs_claim_idx", "jobs_lease_idx", "jobs_failed_queue_idx", "jobs_parked_queue_idx"],
        ),
        "dashboard_recent_finished": ({"cap": 20000}, ["jobs_finished_idx"]),
        "dashboard_workers": ({"limit": 200}, ["workers_heartbeat_idx|workers_pkey|Seq Scan on workers"]),
    }
    for name, (params, indexes) in cases.items():
        plan = "\n".join(row[0] for row in db.execute("EXPLAIN " + QUERIES[name], params))
        for index in indexes:
            assert re.search(index, plan), f"{name}: {index} not in\n{plan}"
        assert "Seq Scan on jobs" not in plan, plan
    no_filter = {
        "status": None, "queue": None, "task": None, "args": None, "created_from": None, "created_to": None,
        "before_id": None, "limit": 51,
    }  # fmt: skip
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + QUERIES["dashboard_jobs_newest"], no_filter))
    assert "jobs_pkey" in plan and "Seq Scan" not in plan, plan
    plan = "\n".join(
        r[0] for r in db.execute("EXPLAIN " + QUERIES["dashboard_jobs_newest"], no_filter | {"args": '{"n": 4242}'})
    )
    assert "jobs_args_idx" in plan, plan
    plan = "\n".join(
        r[0] for r in db.execute("EXPLAIN " + QUERIES["dashboard_jobs_newest"], no_filter | {"status": "failed"})
    )
    assert "jobs_failed" in plan and "Seq Scan" not in plan, plan


def test_cli_refuses_non_loopback_without_auth(dsn: str) -> None:
    env = {**os.environ, "PGQUEUE_DSN": dsn}
    env.pop("PGQUEUE_DASHBOARD_AUTH", None)
    for args in (["--host", "0.0.0.0"], ["--host", "::"], ["--host", "10.1.2.3"], ["--auth", "nocolon"]):
        result = subprocess.run(
            [PGQUEUE, "dashboard", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
        )
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert result.stdout == ""


def test_cli_serves_with_auth(dsn: str) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_DASHBOARD_AUTH": "ops:pa55word"}
    proc = subprocess.Popen(
        [PGQUEUE, "dashboard", "--port", str(port), "--read-only"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "the dashboard did not start"
                time.sleep(0.1)
        assert response.status_code == 401
        page = httpx.get(f"http://127.0.0.1:{port}/", auth=("ops", "pa55word"))
        assert page.status_code == 200 and "read-only" in page.text
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "pa55word" not in output


def test_base_install_does_not_import_the_dashboard() -> None:
    code = (
        "import sys, pgqueue, pgqueue.cli, pgqueue.worker; "
        "bad = [m for m in ('starlette', 'jinja2', 'uvicorn', 'pgqueue.dashboard') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_job_page_shows_a_workflow(client: httpx.Client, db: psycopg.Connection, dsn: str) -> None:
    """A batch's callback lists its parents with their outcomes so far; a parent lists the job waiting for it;
    names from the rows are escaped."""
    from pgqueue import Queue

    queue = Queue(dsn)
    queue.task(name="thumbnail")(lambda photo: None)
    queue.task(name="build_album")(lambda album: None)
    batch = queue.batch([("thumbnail", {"photo": n}) for n in range(3)], on_complete=("build_album", {"album": 1}))
    queue.close()
    first, second, third = batch.ids
    db.execute("UPDATE pgqueue.jobs SET status = 'completed', finished_at = now() WHERE id = %s", (first,))
    db.execute("UPDATE pgqueue.jobs SET status = 'failed', finished_at = now() WHERE id = %s", (second,))
    db.execute("UPDATE pgqueue.jobs SET task = '<script>alert(1)</script>' WHERE id = %s", (third,))

    callback = client.get(f"/jobs/{batch.callback}")
    assert callback.status_code == 200
    progress = re.sub(r"\s+", " ", re.search(r'data-field="progress">(.*?)</p>', callback.text, re.S).group(1))
    assert progress == "Waits for 3 job(s): 1 completed, 1 failed or cancelled, 1 not finished."
    listed = re.findall(r'class="job-link" href="/jobs/(\d+)"', callback.text.split('data-field="parents"')[1])
    assert [int(i) for i in listed[:3]] == [first, second, third]
    assert "<script>alert(1)</script>" not in callback.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in callback.text

    parent = client.get(f"/jobs/{first}")
    children = parent.text.split('data-field="children"')[1]
    assert f'href="/jobs/{batch.callback}"' in children and "build_album" in children
    assert "Waits for" not in parent.text  # a batch job has no parents of its own

    plain = db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('noop') RETURNING id").fetchone()[0]
    assert 'data-section="workflow"' not in client.get(f"/jobs/{plain}").text
