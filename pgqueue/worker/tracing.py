"""OpenTelemetry spans for attempts (`pgqueue work --tracing`; the `tracing` extra).

Each attempt runs in a span of its own trace, LINKED to the span that enqueued the job rather than its child: a
retry an hour later, or a cron job, is not part of a request that ended long ago, yet the link leads from one
to the other. The span is current while the handler runs (sync handlers get a copy of the job's context), so
the handler's own spans are its children. Its trace id goes into the attempt's error history entry
(`jobs.errors[].trace_id`) when the attempt fails, so a failed attempt leads to its trace.

The SDK, its exporter and the tracer provider are the application's to set up (in the module `--app` names);
without one, OpenTelemetry's no-op tracer makes spans that record nothing and have no trace id.

The enqueuing context comes from the row, which anyone who can insert a job can write: it is read with the
W3C propagator from a bounded JSON object of strings, and anything else (garbage, a forged or oversized value)
means no link, never a failed job.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pgqueue.worker.events import AttemptScope, JobEvent, Observer

TRACER_NAME = "pgqueue"
CONTEXT_LIMIT = 4096  # characters of a stored trace context read at all; W3C's headers are far shorter
_PROPAGATOR = TraceContextTextMapPropagator()


def enqueued_link(text: str | None) -> trace.Link | None:
    """The link to the enqueuing span, from a row's trace_context; None when it is absent or not valid."""
    if not text or len(text) > CONTEXT_LIMIT:
        return None
    try:
        carrier = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(carrier, dict) or not all(isinstance(v, str) for v in carrier.values()):
        return None
    try:
        extracted = _PROPAGATOR.extract(carrier)
        span_context = trace.get_current_span(extracted).get_span_context()
    except Exception:  # the propagator's own parsing of a forged value: no link, the job runs
        return None
    return trace.Link(span_context) if span_context.is_valid else None


class Tracing(Observer):
    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._provider = tracer_provider

    def _tracer(self) -> trace.Tracer:
        # Looked up per attempt (a dictionary lookup): the application may set its provider after the worker
        # is built, as long as it does so before jobs run.
        return trace.get_tracer(TRACER_NAME, tracer_provider=self._provider)

    @contextlib.contextmanager
    def attempt(self, started: JobEvent, scope: AttemptScope) -> Iterator[None]:
        link = enqueued_link(started.trace_context)
        attributes: dict[str, Any] = {
            "messaging.system": "pgqueue",
            "messaging.operation.type": "process",
            "messaging.destination.name": started.queue,
            "messaging.message.id": str(started.id),
            "pgqueue.task": started.task,
            "pgqueue.attempt": started.attempt,
            "pgqueue.worker": started.worker,
        }
        span = self._tracer().start_span(
            f"pgqueue run {started.task[:100]}",
            context=otel_context.Context(),  # a root: the attempt starts a trace of its own
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            links=[link] if link is not None else None,
        )
        span_context = span.get_span_context()
        if span_context.is_valid:
            scope.trace_id = format(span_context.trace_id, "032x")
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                yield
        finally:
            if scope.error is not None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, scope.error[:500]))
            span.end()
