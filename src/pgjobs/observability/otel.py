"""OpenTelemetry traces from enqueue to perform (``pip install "pgjobs[otel]"``).

pgjobs depends on ``opentelemetry-api`` only: the SDK, its span processors, exporters and
propagators are the application's.  Tracing is per process; turn it on in every process that
enqueues or performs jobs:

- in the module you pass to ``pgjobs start --app myapp.jobs``: every process ``pgjobs start``
  runs (the supervisor and its workers, dispatchers and scheduler, which are new processes that
  import that module again) then traces;
- in your web process (or whatever calls ``perform_later``), once, at start-up::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    import pgjobs.observability.otel

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    pgjobs.observability.otel.instrument()

Spans follow the OpenTelemetry messaging semantic conventions (``messaging.system = "pgjobs"``):

- ``send {queue}`` (PRODUCER) around ``perform_later`` / ``perform_later_async`` and the
  scheduler's enqueue of a recurring task, a child of the span active there (none: a new trace);
- ``send {queue}`` (or ``send`` when the jobs go to several queues) around ``perform_all_later``,
  with one ``create {queue}`` span (PRODUCER) per job as its children;
- ``process {queue}`` (CONSUMER) around a worker's perform of the job, its callbacks and the
  judging of its error, a child of the job's ``send`` (or ``create``) span: the same trace.  A
  retry is another ``process`` span in that trace.

The producer's context (W3C ``traceparent`` / ``tracestate``, through the globally configured
propagator) travels in the job's stored arguments, under ``"trace"``, and only while tracing is on.
A job that ends as retry, discard or fail sets ``error.type`` and an ERROR status on its process
span and records the exception; a rescued job is OK.  ``perform_now`` and the test adapter of
:mod:`pgjobs.testing` make no spans (they write no job).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

try:
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError as exc:  # the extra is not installed
    missing = f"pgjobs.observability.otel needs the OpenTelemetry API ({exc})"
    raise ImportError(f'{missing}: pip install "pgjobs[otel]"') from exc

from pgjobs import __version__, hooks
from pgjobs.observability import tracing
from pgjobs.processes.executor import FINISHED, error_name

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job
    from pgjobs.processes.executor import Claimed, Outcome

__all__ = ["flush", "instrument", "uninstrument"]

SYSTEM = "pgjobs"


_provider: trace.TracerProvider | None = None  # the one instrument() was given, if any
FLUSH_TIMEOUT_MS = 5000


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace pgjobs' enqueues and performs in this process, on ``tracer_provider`` (by default
    the global one, which may be set before or after this call).  Calling it again replaces
    the provider.

    pgjobs' own processes flush the provider's span processors when they stop (they exit
    without running ``atexit`` handlers, where the SDK would): a ``BatchSpanProcessor`` loses
    nothing at a clean stop.
    """
    global _provider
    _provider = tracer_provider
    tracer = trace.get_tracer("pgjobs", __version__, tracer_provider)
    tracing.install(_Hooks(tracer))
    for register in (
        hooks.on_worker_stop,
        hooks.on_dispatcher_stop,
        hooks.on_scheduler_stop,
        hooks.on_stop,
    ):
        if not hooks.registered(register, flush):
            register(flush)


def flush(process: object = None) -> None:
    """Export the spans the provider's processors still hold (at most 5 s).  Called by pgjobs'
    processes as they stop; a provider without ``force_flush`` (the API's default) is skipped."""
    provider = _provider if _provider is not None else trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None and tracing.tracer is not None:
        force_flush(FLUSH_TIMEOUT_MS)


def uninstrument() -> None:
    """Stop tracing pgjobs in this process."""
    tracing.install(None)


class _Hooks:
    """The :class:`pgjobs.observability.tracing.Tracing` hook on one OpenTelemetry tracer."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    @contextmanager
    def send(self, job: Job) -> Iterator[None]:
        queue = job.queue_name
        attributes = _attributes("send", queue, type(job).job_name, str(job.job_id))
        with self._span(f"send {queue}", SpanKind.PRODUCER, attributes), _carrying(job):
            yield

    @contextmanager
    def send_bulk(self, jobs: Sequence[Job]) -> Iterator[tracing.Create]:
        queues = {job.queue_name for job in jobs}
        classes = {type(job).job_name for job in jobs}
        queue = next(iter(queues)) if len(queues) == 1 else None
        attributes = _attributes(
            "send", queue, next(iter(classes)) if len(classes) == 1 else None, None
        )
        attributes["messaging.batch.message_count"] = len(jobs)
        name = "send" if queue is None else f"send {queue}"
        with self._span(name, SpanKind.PRODUCER, attributes):
            yield self._create

    @contextmanager
    def _create(self, job: Job) -> Iterator[None]:
        queue = job.queue_name
        attributes = _attributes("create", queue, type(job).job_name, str(job.job_id))
        with self._span(f"create {queue}", SpanKind.PRODUCER, attributes), _carrying(job):
            yield

    @contextmanager
    def process(
        self, claimed: Claimed, carrier: tracing.Carrier | None
    ) -> Iterator[tracing.Processed]:
        # The parent is the job's own context only, never whatever is current in this thread.
        parent = Context()
        if carrier:
            parent = propagate.extract(
                {k: v for k, v in carrier.items() if isinstance(v, str)}, context=parent
            )
        queue = claimed.queue_name
        attributes = _attributes("process", queue, claimed.class_name, str(claimed.job_id))
        attributes["pgjobs.job.attempt"] = claimed.executions + 1
        with self._span(f"process {queue}", SpanKind.CONSUMER, attributes, parent) as span:
            yield lambda outcome: _processed(span, outcome)

    @contextmanager
    def _span(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, str | int],
        context: Context | None = None,
    ) -> Iterator[Span]:
        """A current span that records an error raised in it (with ``error.type``)."""
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as error:
                _error(span, error)
                raise


def _attributes(
    operation: str, queue: str | None, class_name: str | None, message_id: str | None
) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    if queue is not None:
        attributes["messaging.destination.name"] = queue
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    if class_name is not None:
        attributes["pgjobs.job.class"] = class_name
    return attributes


@contextmanager
def _carrying(job: Job) -> Iterator[None]:
    """Give ``job`` the current context to store, for as long as its row is being built."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    job._trace_carrier = carrier or None  # nothing when the propagator injects nothing
    try:
        yield
    finally:
        job._trace_carrier = None


def _processed(span: Span, outcome: Outcome) -> None:
    if outcome.kind == FINISHED:  # finished or rescued
        return
    if outcome.kind in ("cancel", "snooze", "interrupt"):  # job control: not an error
        span.set_attribute("pgjobs.outcome", outcome.kind)
        return
    if outcome.error is not None:
        _error(span, outcome.error)
    else:
        span.set_attribute("error.type", "_OTHER")
        span.set_status(Status(StatusCode.ERROR, outcome.kind))


def _error(span: Span, error: BaseException) -> None:
    span.set_attribute("error.type", error_name(error))
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
