"""The dashboard's pure parts: query-string parsing, the chart's geometry, the guards. No database, no server."""

from __future__ import annotations

import ast
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the dashboard extra is not installed")

from pgqueue.dashboard import chart
from pgqueue.dashboard.data import (
    DEAD_AFTER,
    Clipped,
    Minute,
    WorkerRow,
)
from pgqueue.dashboard.filters import BadRequest, Cursor, JobFilter, parse_cursor, parse_filter
from pgqueue.dashboard.render import pretty_json, visible
from pgqueue.dashboard.security import BasicAuth, CsrfTokens, UsageError, check_bind, is_loopback, parse_auth


def test_filter_round_trips_through_its_query_string() -> None:
    flt = parse_filter(
        {"status": "pending", "queue": "a&b=c", "task": "t\nx", "args": '{"order_id":42}', "from": "2026-12-01T09:30",
         "sort": "run_at", "limit": "100"}
    )  # fmt: skip
    assert flt.args == '{"order_id": 42}' and flt.created_from == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    from urllib.parse import parse_qsl

    assert parse_filter(dict(parse_qsl(flt.query_string()))) == flt
    assert parse_filter({}) == JobFilter() and JobFilter().is_empty


def test_cursors() -> None:
    when = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)
    cursor = Cursor(id=7, run_at=when)
    assert parse_cursor(cursor.encode(), "run_at") == cursor
    assert parse_cursor("12", "newest") == Cursor(id=12)
    for bad in ("", "x", "1.5", "-3", "9" * 30):
        if bad:
            with pytest.raises(BadRequest):
                parse_cursor(bad, "newest")


def test_chart_geometry() -> None:
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    minutes = [Minute(start + timedelta(minutes=n), completed=n, failed=n % 2, complete=n > 5) for n in range(60)]
    drawn = chart.build(minutes)
    assert len(drawn.bars) == 60 and drawn.peak == 60 and drawn.total_completed == sum(range(60))
    assert all(0 <= b.failed_y <= b.completed_y <= drawn.plot_bottom for b in drawn.bars)
    assert [b.complete for b in drawn.bars[:7]] == [False] * 6 + [True]
    assert [chart.nice_ceiling(v) for v in (0, 7, 10, 11, 60, 999, 1001)] == [5, 10, 10, 20, 100, 1000, 2000]


def test_guards() -> None:
    assert parse_auth("u:p:q") == ("u", "p:q") and parse_auth(None) is None
    for bad in ("nocolon", ":p", "u:"):
        with pytest.raises(UsageError):
            parse_auth(bad)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))
    with pytest.raises(UsageError, match="without authentication"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", ("u", "p"))
    auth = BasicAuth("admin", "s3cret")
    assert auth.allows("Basic " + base64.b64encode(b"admin:s3cret").decode())
    assert not auth.allows("Basic " + base64.b64encode(b"admin:s3cre").decode())
    assert not auth.allows("Basic !!!") and not auth.allows("Bearer x") and not auth.allows(None)
    tokens = CsrfTokens(b"k" * 32)
    cookie = tokens.new_cookie_value()
    assert tokens.valid(cookie, tokens.token_for(cookie))
    assert not tokens.valid(cookie, tokens.token_for(cookie + "x")) and not tokens.valid(None, "x")
    assert not CsrfTokens(b"other" * 8).valid(cookie, tokens.token_for(cookie))


def test_rendering_helpers_escape_and_survive_deep_json() -> None:
    assert visible("a\x1b[31m\nb\u202e") == "a\\x1b[31m\nb\\u202e"
    deep = "[" * 5000 + "]" * 5000
    assert pretty_json(Clipped(deep, len(deep))) == deep
    assert pretty_json(Clipped('{"a":1}', 7)) == '{\n  "a": 1\n}'


def test_the_dashboard_runs_no_sql_itself() -> None:
    """Every statement goes through pgqueue/store/dashboard.py: no module of the dashboard imports the driver, the
    pool or SQLAlchemy, or calls execute()."""
    folder = Path(chart.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert len(modules) >= 6
    for path in modules:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            for name in names:
                assert name.split(".")[0] not in ("psycopg", "psycopg_pool", "sqlalchemy"), (path.name, name)
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("execute", "executemany", "cursor"), (path.name, node.attr)


def _worker(**fields: object) -> WorkerRow:
    values: dict[str, object] = {
        "id": "h:1:abc",
        "host": "h",
        "pid": 1,
        "queues": None,
        "queues_total": 0,
        "concurrency": 4,
        "running": 0,
        "started_at": datetime.now(UTC),
        "heartbeat_at": datetime.now(UTC),
        "stopped_at": None,
        "silent_seconds": 0.0,
        "heartbeat_interval": 15.0,
    }
    return WorkerRow(**(values | fields))  # type: ignore[arg-type]


def test_worker_state_follows_its_own_heartbeat_interval() -> None:
    assert _worker(silent_seconds=44.0).state == "alive"  # under three 15 s beats
    assert _worker(silent_seconds=46.0).state == "dead"
    assert _worker(silent_seconds=2.0, heartbeat_interval=0.5).state == "dead"
    assert _worker(silent_seconds=100.0, heartbeat_interval=60.0).state == "alive"
    # A row that does not say its interval (written before migration 0007): the fixed threshold.
    assert _worker(silent_seconds=DEAD_AFTER - 1, heartbeat_interval=None).state == "alive"
    assert _worker(silent_seconds=DEAD_AFTER + 1, heartbeat_interval=None).state == "dead"
    # Stopped wins over silence; a heartbeat no clock reaches (infinite in the row) is dead, not alive.
    assert _worker(silent_seconds=10_000.0, stopped_at=datetime.now(UTC) - timedelta(hours=1)).state == "stopped"
    assert _worker(silent_seconds=None, heartbeat_at=None).state == "dead"
