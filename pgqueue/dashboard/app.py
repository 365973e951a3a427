"""The dashboard as an ASGI (Starlette) application: server-rendered pages, POST actions behind a CSRF token.

Pages read through pgqueue.dashboard.data on a small pool of the dashboard's own connections (autocommit, UTC, a
statement timeout, never prepared on the server); each request holds one connection for its few statements.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgqueue.dashboard import chart, data, render
from pgqueue.dashboard.filters import BadRequest, JobFilter, parse_cursor, parse_filter, parse_job_id, parse_name
from pgqueue.dashboard.security import CSRF_COOKIE, CSRF_FIELD, SECURITY_HEADERS, BasicAuth, CsrfTokens
from pgqueue.settings import normalize_dsn, resolve_dsn
from pgqueue.store import dashboard as store
from pgqueue.store.schema import JOB_STATUSES

log = logging.getLogger("pgqueue.dashboard")

STATIC = Path(__file__).parent / "static"
STATEMENT_TIMEOUT_MS = 5_000
MAX_FORM_BYTES = 64 * 1024
REFRESH_SECONDS = 5


class Dashboard:
    """State shared by the requests of one app: the connection pool, the templates, the CSRF secret."""

    def __init__(self, dsn: str | None, *, read_only: bool, secret: bytes | None) -> None:
        self._dsn = normalize_dsn(dsn) if dsn else None
        self._pool: store.Pool | None = None
        self._lock = threading.Lock()
        self.read_only = read_only
        self.csrf = CsrfTokens(secret)
        self.templates = render.environment()

    # -- database -------------------------------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[store.Connection]:
        with self._get_pool().connection() as conn:
            yield conn

    def _get_pool(self) -> store.Pool:
        with self._lock:
            if self._pool is None:
                self._pool = store.open_pool(resolve_dsn(self._dsn), statement_timeout_ms=STATEMENT_TIMEOUT_MS)
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # -- rendering ------------------------------------------------------------------------------------------

    def page(self, request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        cookie = request.scope.get("state", {}).get("csrf_cookie", "")
        html = self.templates.get_template(template).render(
            base=base,
            read_only=self.read_only,
            csrf_field=CSRF_FIELD,
            csrf_token=self.csrf.token_for(cookie) if cookie else "",
            here=_here(request),
            refresh_seconds=REFRESH_SECONDS,
            **values,
        )
        return HTMLResponse(html, status_code=status_code)

    def error(self, request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
        return self.page(request, "error.html", status_code=status_code, title=title, message=message)


def _here(request: Request) -> str:
    """The current page's path within the app, with its query: where an action sends the browser back to."""
    path = request.scope.get("path", "/")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    query = request.scope.get("query_string", b"").decode("latin-1")
    return path + (f"?{query}" if query else "")


def _query(request: Request) -> dict[str, str]:
    """The query string, one value per name (the last wins), capped in size."""
    raw = request.scope.get("query_string", b"")
    if len(raw) > 48 * 1024:
        raise BadRequest("the query string is too long")
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the query string is not valid (UTF-8, at most 50 fields)") from None


def _guarded(dashboard: Dashboard, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Expected failures as pages with one clear line: 400 for bad input, 503 when the database cannot answer.
    Database messages are redacted (no password of a DSN reaches a page)."""

    def endpoint(request: Request) -> Response:
        try:
            return handler(request)
        except BadRequest as exc:
            return dashboard.error(request, 400, "Bad request", str(exc))
        except Exception as exc:
            found = store.failure(exc)
            if found is None:
                raise
            return _failure_page(dashboard, request, found)

    return endpoint


def _failure_page(dashboard: Dashboard, request: Request, found: store.Failure) -> HTMLResponse:
    if found.kind == "too_slow":
        return dashboard.error(
            request,
            503,
            "Too slow",
            f"The database did not answer within {STATEMENT_TIMEOUT_MS // 1000} s. "
            "Narrow the filter (a status, queue, task or recent time range) and try again.",
        )
    if found.kind == "not_migrated":
        return dashboard.error(
            request, 503, "Not migrated", "The pgqueue tables do not exist in this database: run `pgqueue migrate`."
        )
    if found.kind == "unavailable":
        return dashboard.error(request, 503, "Database unavailable", f"database unavailable: {found.detail}")
    log.warning("dashboard: database error: %s", found.detail)
    return dashboard.error(request, 500, "Database error", f"database error: {found.detail}")


# -- pages --------------------------------------------------------------------------------------------------


def _overview_values(dashboard: Dashboard) -> dict[str, Any]:
    with dashboard.connection() as conn:
        view = data.overview(conn)
    return {
        "view": view,
        "chart": chart.build(view.minutes),
        "recent_cap": data.RECENT_CAP,
        "dead_after": data.DEAD_AFTER,
        "dead_after_beats": data.DEAD_AFTER_BEATS,
    }


def overview_page(dashboard: Dashboard) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        return dashboard.page(request, "overview.html", **_overview_values(dashboard))

    return handler


def overview_fragment(dashboard: Dashboard) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        return dashboard.page(request, "_overview_body.html", **_overview_values(dashboard))

    return handler


def jobs_page(dashboard: Dashboard) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        params = _query(request)
        flt = parse_filter(params)
        cursor = parse_cursor(params.get("cursor"), flt.sort)
        with dashboard.connection() as conn:
            page = data.jobs(conn, flt, cursor)
        return dashboard.page(
            request, "jobs.html", flt=flt, page=page, paged=cursor is not None, statuses=_STATUSES, now=_now()
        )

    return handler


def job_page(dashboard: Dashboard) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        job_id = parse_job_id(request.path_params["job_id"])
        notice = _notice(_query(request))
        with dashboard.connection() as conn:
            detail = data.job(conn, job_id)
        if detail is None:
            return dashboard.error(request, 404, "No such job", f"There is no job {job_id} (pruned, or never existed).")
        return dashboard.page(request, "job.html", job=detail, notice=notice, timeline=_timeline(detail))

    return handler


def schedules_page(dashboard: Dashboard) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        with dashboard.connection() as conn:
            rows = data.schedules(conn)
        return dashboard.page(request, "schedules.html", schedules=rows, now=_now())

    return handler


def bulk_page(dashboard: Dashboard) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        if dashboard.read_only:
            return dashboard.error(request, 403, "Read-only", "This dashboard is read-only: actions are disabled.")
        params = _query(request)
        op = params.get("op")
        if op not in ("retry", "cancel"):
            raise BadRequest("op must be retry or cancel")
        flt = parse_filter(params)
        statuses = _bulk_statuses(op, flt)
        with dashboard.connection() as conn:
            counts = data.count_matching(conn, flt, statuses)
        total = sum(c.jobs for c in counts)
        max_id = max((c.max_id for c in counts if c.max_id is not None), default=None)
        return dashboard.page(
            request, "confirm.html", op=op, flt=flt, counts=counts, total=total, max_id=max_id, bulk_max=data.BULK_MAX
        )

    return handler


# Every status, those of limits (held) and workflows (waiting) too: the filter offers what a job can be.
_STATUSES = JOB_STATUSES


def _bulk_statuses(op: str, flt: JobFilter) -> list[str]:
    allowed = ["failed"] if op == "retry" else ["pending", "running"]
    return [s for s in allowed if flt.status in (None, s)]


def _now() -> datetime:
    return datetime.now(UTC)


def _timeline(job: data.JobDetail) -> list[dict[str, Any]]:
    """The job's story, oldest first: created, each recorded attempt, the current or last run, what comes next."""
    events: list[dict[str, Any]] = [{"at": job.created_at, "what": "created", "kind": "created", "detail": ""}]
    for attempt in job.attempts_list:
        if attempt.kind != "object":
            events.append({"at": None, "what": "history entry (not an object)", "kind": "failed", "detail": ""})
            continue
        label = f"attempt {attempt.attempt or '?'}"
        counted = "" if attempt.counted in (None, "true") else " (not counted)"
        events.append({"at_text": attempt.started_at, "what": f"{label} started", "kind": "started", "detail": ""})
        events.append(
            {
                "at_text": attempt.at,
                "what": f"{label} ended: {'interrupted' if counted else 'failed'}{counted}",
                "kind": "failed",
                "detail": attempt.error.text[:200] if attempt.error else "",
                "worker": attempt.worker,
            }
        )
    if job.status == "running":
        events.append(
            {"at": job.started_at, "what": f"attempt {job.attempts} running", "kind": "running", "detail": ""}
        )
    elif job.status in ("completed", "failed", "cancelled"):
        if job.status == "completed" and job.started_at is not None:
            events.append(
                {"at": job.started_at, "what": f"attempt {job.attempts} started", "kind": "started", "detail": ""}
            )
        events.append({"at": job.finished_at, "what": job.status, "kind": job.status, "detail": ""})
    elif job.status == "pending":
        what = "retry due" if job.attempts > 0 else ("due (scheduled)" if job.run_at > job.now else "due")
        events.append({"at": job.run_at, "what": what, "kind": "pending", "detail": ""})
    for event in events:
        event.setdefault("at", None)
        event.setdefault("at_text", None)
        event.setdefault("worker", None)
    return events


_NOTICES = {
    "retried": "Job sent back to pending: it runs again now.",
    "not_retried": "Nothing retried: only failed jobs can be retried.",
    "held": "Not retried: its dedup key is held by a pending or running job (the unique index allows one).",
    "cancelled": "Job cancelled.",
    "not_cancelled": "Nothing cancelled: the job had already finished.",
    "paused": "Queue paused: workers claim nothing from it until it is resumed.",
    "resumed": "Queue resumed: idle workers were woken.",
}


def _notice(params: Mapping[str, str]) -> str | None:
    return _NOTICES.get(params.get("done", ""))


# -- actions ------------------------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status_code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.title, self.message = status_code, title, message


async def _read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _Refused(415, "Unsupported form", "Actions take an application/x-www-form-urlencoded form.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _Refused(413, "Form too large", f"An action's form is at most {MAX_FORM_BYTES // 1024} KiB.")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50))
    except (UnicodeDecodeError, ValueError):
        raise _Refused(400, "Bad request", "The form is not valid (UTF-8, at most 50 fields).") from None


def action_endpoint(dashboard: Dashboard) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            if dashboard.read_only:
                raise _Refused(403, "Read-only", "This dashboard is read-only: actions are disabled.")
            if not _same_origin(request):
                raise _Refused(403, "Refused", "Cross-origin form: actions come from the dashboard's own pages only.")
            form = await _read_form(request)
            if not dashboard.csrf.valid(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
                raise _Refused(
                    403,
                    "Refused",
                    "The form's security token is missing or does not match: reload the page and try again.",
                )
        except _Refused as refused:
            return dashboard.error(request, refused.status_code, refused.title, refused.message)
        action = request.path_params["action"]
        handler = _ACTIONS.get(action)
        if handler is None:
            return dashboard.error(request, 404, "No such action", "Unknown action.")
        guarded = _guarded(dashboard, lambda req: handler(dashboard, req, form))
        return await run_in_threadpool(guarded, request)

    return endpoint


def _same_origin(request: Request) -> bool:
    """A browser's Origin header, when sent, must name this host (a second line behind the CSRF token)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host


def _redirect(request: Request, target: str, **params: str) -> Response:
    base = request.scope.get("root_path", "").rstrip("/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    path, _, query = target.partition("?")
    fields = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "done"] + list(params.items())
    return RedirectResponse(base + path + (f"?{urlencode(fields)}" if fields else ""), status_code=303)


def _form_job_id(form: Mapping[str, str]) -> int:
    return parse_job_id(form.get("id", ""))


def _do_retry(dashboard: Dashboard, request: Request, form: Mapping[str, str]) -> Response:
    job_id = _form_job_id(form)
    with dashboard.connection() as conn:
        outcome = data.retry(conn, [job_id])
    done = "retried" if outcome.retried else ("held" if outcome.held_back else "not_retried")
    return _redirect(request, f"/jobs/{job_id}", done=done)


def _do_cancel(dashboard: Dashboard, request: Request, form: Mapping[str, str]) -> Response:
    job_id = _form_job_id(form)
    with dashboard.connection() as conn:
        outcome = data.cancel(conn, [job_id])
    return _redirect(request, f"/jobs/{job_id}", done="cancelled" if outcome.cancelled else "not_cancelled")


def _do_pause(dashboard: Dashboard, request: Request, form: Mapping[str, str], paused: bool) -> Response:
    queue = parse_name(unquote(form.get("queue", "")), "queue")  # percent-encoded in the form: CR/LF survive
    with dashboard.connection() as conn:
        data.set_paused(conn, queue, paused)
    return _redirect(request, form.get("next", "/"), done="paused" if paused else "resumed")


def _do_bulk(dashboard: Dashboard, request: Request, form: Mapping[str, str]) -> Response:
    op = form.get("op")
    if op not in ("retry", "cancel"):
        raise BadRequest("op must be retry or cancel")
    flt = parse_filter(dict(parse_qsl(form.get("filter", ""), keep_blank_values=True, max_num_fields=50)))
    max_id = parse_job_id(form.get("max_id", ""))
    with dashboard.connection() as conn:
        if op == "retry":
            retried = data.bulk_retry(conn, flt, max_id)
            done, held, remaining = retried.retried, retried.held_back, retried.remaining
        else:
            cancelled = data.bulk_cancel(conn, flt, max_id)
            done, held, remaining = cancelled.cancelled, [], cancelled.remaining
    return dashboard.page(request, "bulk_done.html", op=op, flt=flt, done=done, held=held, remaining=remaining)


_ACTIONS: dict[str, Callable[[Dashboard, Request, Mapping[str, str]], Response]] = {
    "retry": _do_retry,
    "cancel": _do_cancel,
    "pause": lambda d, r, f: _do_pause(d, r, f, True),
    "resume": lambda d, r, f: _do_pause(d, r, f, False),
    "bulk": _do_bulk,
}


# -- middleware ---------------------------------------------------------------------------------------------


class _Guard:
    """Every response gets the security headers; with `auth` every request needs HTTP Basic credentials; every
    client gets a CSRF cookie (path: the app's mount point) the first time it loads a page."""

    def __init__(self, app: ASGIApp, auth: BasicAuth | None) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        if self.auth is not None and not self.auth.allows(headers.get(b"authorization", b"").decode("latin-1")):
            await _unauthorized(scope, receive, send)
            return
        cookie = _cookie(headers.get(b"cookie", b"").decode("latin-1"), CSRF_COOKIE)
        fresh = None
        if cookie is None or len(cookie) > 200:
            cookie = fresh = CsrfTokens.new_cookie_value()
        scope.setdefault("state", {})["csrf_cookie"] = cookie
        root = scope.get("root_path", "").rstrip("/") or "/"
        secure = "; Secure" if scope.get("scheme") == "https" else ""

        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                # The server's own time for this response (browsers' dev tools and benchmarks/dashboard.py read it).
                extra.append((b"server-timing", f"app;dur={(time.perf_counter() - started) * 1000:.2f}".encode()))
                if fresh is not None:
                    extra.append(
                        (
                            b"set-cookie",
                            f"{CSRF_COOKIE}={fresh}; Path={root}; HttpOnly; SameSite=Strict{secure}".encode("latin-1"),
                        )
                    )
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
    response = Response(
        "authentication required\n",
        status_code=401,
        media_type="text/plain",
        headers={"WWW-Authenticate": 'Basic realm="pgqueue dashboard", charset="UTF-8"'},
    )
    await response(scope, receive, send)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


# -- the app ------------------------------------------------------------------------------------------------


def build_app(
    dsn: str | None = None,
    *,
    read_only: bool = False,
    auth: tuple[str, str] | None = None,
    secret: bytes | None = None,
) -> Starlette:
    dashboard = Dashboard(dsn, read_only=read_only, secret=secret)

    def guarded(factory: Callable[[Dashboard], Callable[[Request], Response]]) -> Callable[[Request], Response]:
        return _guarded(dashboard, factory(dashboard))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(dashboard.close)

    routes = [
        Route("/", guarded(overview_page), name="overview"),
        Route("/fragment/overview", guarded(overview_fragment), name="overview_fragment"),
        Route("/jobs", guarded(jobs_page), name="jobs"),
        Route("/jobs/{job_id}", guarded(job_page), name="job"),
        Route("/schedules", guarded(schedules_page), name="schedules"),
        Route("/bulk", guarded(bulk_page), name="bulk"),
        Route("/actions/{action}", action_endpoint(dashboard), methods=["POST"], name="action"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = dashboard

    async def not_found(request: Request, exc: Exception) -> Response:
        return dashboard.error(request, 404, "Not found", "There is no such page.")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("dashboard: unexpected error", exc_info=exc)
        return dashboard.error(request, 500, "Internal error", "Something went wrong; the server log has details.")

    app.add_exception_handler(404, not_found)
    app.add_exception_handler(500, server_error)
    app.add_middleware(_Guard, auth=BasicAuth(*auth) if auth else None)
    return app
