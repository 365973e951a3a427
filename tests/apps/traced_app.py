"""An app that sets up OpenTelemetry as an application would (a global tracer provider), exporting finished spans
as JSON lines to $PGQUEUE_TEST_SPANS: for `pgqueue work --tracing` run as a user runs it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from pgqueue import Queue


class FileExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(os.environ["PGQUEUE_TEST_SPANS"], "a") as out:
            for span in spans:
                record = {
                    "name": span.name,
                    "trace_id": format(span.context.trace_id, "032x"),
                    "parent": span.parent is not None,
                    "links": [format(link.context.trace_id, "032x") for link in span.links],
                    "job": span.attributes.get("messaging.message.id"),
                    "status": span.status.status_code.name,
                }
                out.write(json.dumps(record) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
trace.set_tracer_provider(provider)

queue = Queue()


@queue.task(name="ok")
def ok() -> None:
    pass


@queue.task(name="fails", max_attempts=1)
def fails() -> None:
    raise RuntimeError("fails")
