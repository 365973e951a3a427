"""OpenTelemetry: enqueue records the trace context; each attempt runs in a span of its own trace LINKED to the
enqueuing span; a failed attempt's trace id is in its error history; forged contexts in rows cost nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pgqueue import Fixed, JobSpec, Queue, Worker, WorkerSettings
from pgqueue.worker.tracing import Tracing


@pytest.fixture
def traced(dsn: str):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    queue = Queue(dsn)
    tracer = provider.get_tracer("test")

    @queue.task(name="ok")
    def ok(n: int = 0) -> None:
        with tracer.start_as_current_span("inside the handler"):
            pass

    @queue.task(name="ok_async")
    async def ok_async() -> None:
        with tracer.start_as_current_span("inside the async handler"):
            await asyncio.sleep(0)

    @queue.task(name="boom", max_attempts=2, retry=Fixed(0))
    def boom() -> None:
        raise ValueError("always fails")

    yield queue, provider, exporter, tracer
    queue.close()


def run_burst(queue: Queue, provider: TracerProvider, db: psycopg.Connection) -> None:
    """Burst workers until no job is pending: one may exit just before a retry it wrote becomes due."""
    for _ in range(5):
        worker = Worker(queue, WorkerSettings(burst=True), observers=[Tracing(provider)])
        asyncio.run(worker.run_async())
        if not db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'pending'").fetchone()[0]:
            return
    raise AssertionError("jobs left pending")


def attempt_spans(exporter: InMemorySpanExporter) -> dict[int, list]:
    spans: dict[int, list] = {}
    for span in exporter.get_finished_spans():
        if span.name.startswith("pgqueue run"):
            spans.setdefault(int(span.attributes["messaging.message.id"]), []).append(span)
    return spans


def test_attempts_are_linked_to_the_enqueuing_span(traced, db: psycopg.Connection) -> None:
    queue, provider, exporter, tracer = traced
    with tracer.start_as_current_span("POST /orders") as request:
        ok = queue.enqueue("ok", {"n": 1})
        ok_async = queue.enqueue("ok_async")
        boom = queue.enqueue("boom")
        batch = queue.enqueue_many([JobSpec("ok"), JobSpec("ok", {"n": 2})])
        copied = queue.enqueue_many([JobSpec("ok", {"n": n}) for n in range(500)])  # the COPY path
    untraced = queue.enqueue("ok")
    request_context = request.get_span_context()
    stored = dict(db.execute("SELECT id, trace_context FROM pgqueue.jobs WHERE id = ANY(%s)", ([ok, untraced],)))
    assert stored[untraced] is None  # no current span: nothing recorded
    assert stored[ok]["traceparent"].split("-")[1] == format(request_context.trace_id, "032x")

    run_burst(queue, provider, db)

    spans = attempt_spans(exporter)
    for job_id in [ok, ok_async, boom, *batch, copied[0], copied[-1]]:
        for span in spans[job_id]:
            assert span.parent is None  # not a child of the finished request...
            assert span.context.trace_id != request_context.trace_id  # ...but a trace of its own
            assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [
                (request_context.trace_id, request_context.span_id)
            ]
    assert len(spans) == 2 + 1 + 2 + 500 + 1  # the untraced job's attempt has a span too, without a link
    assert [len(span.links) for span in spans[untraced]] == [0]
    assert len(spans[boom]) == 2

    # The handler's spans are children of the attempt's, sync and async alike.
    attempts = {span.context.span_id: span for job_spans in spans.values() for span in job_spans}
    inner = [s for s in exporter.get_finished_spans() if s.name.startswith("inside")]
    assert len(inner) == 1 + 2 + 500 + 1 + 1  # one per ok job, one for the async job
    for span in inner:
        parent = attempts[span.parent.span_id]
        assert span.context.trace_id == parent.context.trace_id
        expected = "ok_async" if span.name == "inside the async handler" else "ok"
        assert parent.attributes["pgqueue.task"] == expected

    # Each failed attempt's trace id is in its error history entry; its span says it failed.
    errors = db.execute("SELECT errors FROM pgqueue.jobs WHERE id = %s", (boom,)).fetchone()[0]
    by_attempt = {span.attributes["pgqueue.attempt"]: span for span in spans[boom]}
    assert [entry["trace_id"] for entry in errors] == [
        format(by_attempt[entry["attempt"]].context.trace_id, "032x") for entry in errors
    ]
    assert len(errors) == 2
    assert all(span.status.status_code is StatusCode.ERROR for span in spans[boom])
    assert spans[ok][0].status.status_code is StatusCode.UNSET


FORGED = [
    '"not an object"',
    "[1, 2, 3]",
    '{"traceparent": 5}',
    '{"traceparent": "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-0000000000000000-01"}',
    '{"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"}',  # all zero: invalid
    '{"traceparent": "' + "0" * 20000 + '"}',
    '{"traceparent": {"nested": [[[[]]]]}, "tracestate": null}',
    '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\\n\\u001b[2J"}',
]


def test_a_forged_trace_context_does_not_fail_the_job(traced, db: psycopg.Connection) -> None:
    queue, provider, exporter, _tracer = traced
    ids = [
        db.execute(
            "INSERT INTO pgqueue.jobs (task, trace_context) VALUES ('ok', %s::jsonb) RETURNING id", (forged,)
        ).fetchone()[0]
        for forged in FORGED
    ]
    run_burst(queue, provider, db)
    statuses = db.execute("SELECT status, error FROM pgqueue.jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    assert statuses == [("completed", None)] * len(FORGED)
    spans = attempt_spans(exporter)
    assert sorted(spans) == sorted(ids)
    assert all(not span.links for job_spans in spans.values() for span in job_spans)


def test_without_tracing_nothing_is_stored_and_no_trace_id_is_kept(traced, db: psycopg.Connection) -> None:
    queue, _provider, exporter, tracer = traced
    with tracer.start_as_current_span("request"):
        boom = queue.enqueue("boom")
    worker = Worker(queue, WorkerSettings(burst=True))  # no --tracing
    asyncio.run(worker.run_async())
    errors = db.execute("SELECT errors FROM pgqueue.jobs WHERE id = %s", (boom,)).fetchone()[0]
    assert errors and all("trace_id" not in entry for entry in errors)
    assert not attempt_spans(exporter)
    assert json.dumps(errors[0])  # the entry keeps its usual shape


def test_pgqueue_work_tracing_as_a_user_runs_it(traced, db: psycopg.Connection, tmp_path) -> None:
    """The app module sets up its SDK; `pgqueue work --tracing` runs each attempt in a linked span."""
    queue, _provider, _exporter, tracer = traced
    with tracer.start_as_current_span("request") as request:
        ok = queue.enqueue("ok")
        failing = queue.enqueue("boom", max_attempts=1)
    db.execute("UPDATE pgqueue.jobs SET task = 'fails' WHERE id = %s", (failing,))  # the app's failing task
    spans_file = tmp_path / "spans.jsonl"
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "pgqueue"),
            "work",
            "--app",
            "tests.apps.traced_app",
            "--tracing",
            "--burst",
        ],
        cwd=root,
        env={**os.environ, "PGQUEUE_DSN": queue.dsn, "PGQUEUE_TEST_SPANS": str(spans_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    spans = {int(s["job"]): s for s in map(json.loads, spans_file.read_text().splitlines())}
    request_trace = format(request.get_span_context().trace_id, "032x")
    assert spans[ok]["links"] == [request_trace] and not spans[ok]["parent"]
    assert spans[ok]["trace_id"] != request_trace
    assert spans[failing]["status"] == "ERROR"
    errors = db.execute("SELECT errors FROM pgqueue.jobs WHERE id = %s", (failing,)).fetchone()[0]
    assert [entry["trace_id"] for entry in errors] == [spans[failing]["trace_id"]]
