"""The application module of tests/test_otel_e2e.py (``pgjobs start --app tests.otel_app``).

It sets up the OpenTelemetry SDK as an application would — with an exporter that appends every
finished span, as a JSON line, to the file named by ``$PGJOBS_TEST_SPANS`` — and instruments
pgjobs.  Without that variable (the test process imports this module for its job class) it only
defines the job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import pgjobs
from pgjobs.observability import otel


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON line (one ``write`` per span: the processes share the file)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as out:
            for span in spans:
                out.write(json.dumps(as_json(span)) + "\n")
        return SpanExportResult.SUCCESS


def as_json(span: ReadableSpan) -> dict[str, object]:
    context, parent = span.get_span_context(), span.parent
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


class TracedWork(pgjobs.Job):
    queue_as = "traced"

    def perform(self, name: str) -> None:
        # The application's own span inside the job: a child of pgjobs' process span.
        with trace.get_tracer("tests.otel_app").start_as_current_span(f"work {name}"):
            pass


if "PGJOBS_TEST_SPANS" in os.environ:
    provider = TracerProvider()
    # Batched, exported only when full or flushed: the spans reach the file because pgjobs'
    # processes flush the provider as they stop.
    exporter = JsonLinesExporter(os.environ["PGJOBS_TEST_SPANS"])
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))
    trace.set_tracer_provider(provider)
    otel.instrument()
