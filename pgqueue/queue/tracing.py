"""The enqueuing code's trace context, recorded in the job (jobs.trace_context) so that a worker's span for each
attempt can link to it. OpenTelemetry is optional (the `tracing` extra) and never imported here: a process that
has not imported it itself is not tracing, and pays one dictionary lookup per enqueue."""

from __future__ import annotations

import json
import sys


def current_context() -> str | None:
    """The current span's context as W3C Trace Context headers in JSON (`{"traceparent": ...}`), or None."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    # The W3C propagator alone, not the global one: baggage is the application's data, of any size, and the
    # link needs only the span's identity.
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return json.dumps(carrier) if carrier else None
