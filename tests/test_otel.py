"""OpenTelemetry traces (``pgjobs.observability.otel``) with the real SDK on a real database:
the send and create spans of an enqueue, the context stored with the job, the process span of
its perform in the producer's trace, and nothing at all when tracing is off."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

import pgjobs
from pgjobs.config.queue import WorkerConfig
from pgjobs.db.database import Database
from pgjobs.enqueue.core import enqueue_on
from pgjobs.observability import otel, tracing
from pgjobs.processes.executor import Claimed, EventLoopThread, perform
from pgjobs.processes.worker import Worker
from tests.engine_helpers import run_once
from tests.test_rules import CONFIG

CURRENT: list[SpanContext] = []  # the span current inside perform, as the jobs saw it


class Greet(pgjobs.Job):
    queue_as = "mailers"

    def perform(self, name: str) -> None:
        CURRENT.append(trace.get_current_span().get_span_context())


class AsyncGreet(pgjobs.Job):
    queue_as = "mailers"

    async def perform(self, name: str) -> None:
        await asyncio.sleep(0)
        CURRENT.append(trace.get_current_span().get_span_context())


class Report(pgjobs.Job):
    queue_as = "reports"

    def perform(self, n: int) -> None:
        pass


class Once(Exception):
    pass


class FailsOnce(pgjobs.Job):
    retry_on = [pgjobs.retry_on(Once, wait=0, attempts=3)]

    def perform(self) -> None:
        if self.executions == 1:
            raise Once("first time")


class Broken(pgjobs.Job):
    def perform(self) -> None:
        raise ValueError("bad input")


class Rescued(pgjobs.Job):
    def perform(self) -> None:
        raise KeyError("gone")

    @pgjobs.rescue_from(KeyError)
    def handle(self, error: KeyError) -> None:
        pass


class OnePerName(pgjobs.Job):
    unique = pgjobs.unique()

    def perform(self, name: str) -> None:
        pass


@dataclass(frozen=True)
class Traced:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def span(self, name: str) -> Any:  # the test's own span, on the same provider
        return self.provider.get_tracer("tests").start_as_current_span(name)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.spans(name)
        return span


@contextmanager
def instrumented() -> Iterator[Traced]:
    """pgjobs instrumented on a provider of its own (the global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(tracer_provider=provider)
    try:
        yield Traced(provider, exporter)
    finally:
        otel.uninstrument()
        provider.shutdown()
        CURRENT.clear()


@pytest.fixture
def traced() -> Iterator[Traced]:
    with instrumented() as found:
        yield found


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.stop()


def stored(conn: psycopg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute("SELECT arguments FROM pgjobs_jobs WHERE job_id = %s", [job_id]).fetchone()
    assert row is not None
    arguments: dict[str, Any] = row[0]
    return arguments


def claimed_row(conn: psycopg.Connection, job_id: uuid.UUID) -> Claimed:
    """The job as a worker's claim returns it (arguments as text)."""
    row = conn.execute(
        "SELECT id, job_id, class_name, arguments::text, queue_name, priority, executions, "
        "created_at, scheduled_at FROM pgjobs_jobs WHERE job_id = %s",
        [job_id],
    ).fetchone()
    assert row is not None
    return Claimed(*row)


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def parent_of(span: ReadableSpan) -> tuple[int, int] | None:
    return None if span.parent is None else (span.parent.trace_id, span.parent.span_id)


def messaging(
    operation: str, queue: str, job_class: type[pgjobs.Job], job_id: Any
) -> dict[str, Any]:
    return {
        "messaging.system": "pgjobs",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": queue,
        "messaging.message.id": str(job_id),
        "pgjobs.job.class": job_class.job_name,
    }


# -- the extra ----------------------------------------------------------------------------------


def test_the_core_never_imports_opentelemetry() -> None:
    code = (
        "import sys, pgjobs, pgjobs.enqueue.core, pgjobs.processes.worker, pgjobs.cli.main\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_the_extra_the_import_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "pgjobs.observability.otel")
    with pytest.raises(ImportError, match=r'pip install "pgjobs\[otel\]"'):
        importlib.import_module("pgjobs.observability.otel")


# -- enqueue ----------------------------------------------------------------------------------


def test_perform_later_in_a_span_sends_a_producer_span_whose_context_is_stored_with_the_job(
    traced: Traced, conn: psycopg.Connection
) -> None:
    with traced.span("request"):
        job = Greet.set(connection=conn).perform_later("ada")
    request, send = traced.one("request"), traced.one("send mailers")
    assert send.kind is SpanKind.PRODUCER
    assert parent_of(send) == ids(request)
    assert dict(send.attributes or {}) == messaging("send", "mailers", Greet, job.job_id)
    assert send.status.status_code is StatusCode.UNSET
    assert stored(conn, job.job_id) == {
        "args": ["ada"],
        "kwargs": {},
        "trace": {"traceparent": traceparent(send)},
    }


def test_the_async_enqueues_send_the_same_spans(traced: Traced, test_database_url: str) -> None:
    async def scenario() -> tuple[pgjobs.EnqueuedJob, list[pgjobs.EnqueuedJob]]:
        async with await psycopg.AsyncConnection.connect(test_database_url) as app:
            with traced.span("request"):
                one = await Greet.set(connection=app).perform_later_async("ada")
                many = await pgjobs.perform_all_later_async([Report(1), Report(2)], connection=app)
            await app.rollback()
        return one, many

    one, many = asyncio.run(scenario())
    request = ids(traced.one("request"))
    send = traced.one("send mailers")
    assert parent_of(send) == request
    assert send.attributes and send.attributes["messaging.message.id"] == str(one.job_id)
    bulk = traced.one("send reports")
    assert parent_of(bulk) == request
    creates = traced.spans("create reports")
    assert [parent_of(c) for c in creates] == [ids(bulk)] * 2
    assert [c.attributes and c.attributes["messaging.message.id"] for c in creates] == [
        str(j.job_id) for j in many
    ]


def test_a_bulk_enqueue_sends_one_span_with_a_create_span_per_job(
    traced: Traced, conn: psycopg.Connection
) -> None:
    jobs = [Greet("ada"), Report(1), OnePerName("bob")]  # two queues; one goes the keyed way
    with traced.span("request"):
        results = pgjobs.perform_all_later(jobs, connection=conn)
    send = traced.one("send")
    assert send.kind is SpanKind.PRODUCER and parent_of(send) == ids(traced.one("request"))
    assert dict(send.attributes or {}) == {
        "messaging.system": "pgjobs",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.batch.message_count": 3,
    }
    creates = {
        str(s.attributes and s.attributes["messaging.message.id"]): s
        for s in traced.spans()
        if s.name.startswith("create ")
    }
    assert set(creates) == {str(r.job_id) for r in results}
    for job, result in zip(jobs, results, strict=True):
        create = creates[str(result.job_id)]
        assert create.name == f"create {job.queue_name}" and create.kind is SpanKind.PRODUCER
        assert parent_of(create) == ids(send)
        assert dict(create.attributes or {}) == messaging(
            "create", job.queue_name, type(job), result.job_id
        )
        assert stored(conn, result.job_id)["trace"] == {"traceparent": traceparent(create)}
        assert job._trace_carrier is None  # nothing left on the job once its row is built


def test_a_bulk_enqueue_to_one_queue_names_it(traced: Traced, conn: psycopg.Connection) -> None:
    pgjobs.perform_all_later([Report(1), Report(2)], connection=conn)
    send = traced.one("send reports")
    assert send.attributes and send.attributes["messaging.destination.name"] == "reports"
    assert send.attributes["pgjobs.job.class"] == Report.job_name
    assert send.parent is None  # no active span: a new trace
    assert len(traced.spans("create reports")) == 2


def test_unique_keys_ignore_the_stored_context(traced: Traced, conn: psycopg.Connection) -> None:
    with traced.span("first request"):
        first = OnePerName.set(connection=conn).perform_later("ada")
    with traced.span("second request"):
        second = OnePerName.set(connection=conn).perform_later("ada")
    assert (first.state, second.state, second.duplicate_of) == ("ready", "duplicate", first.job_id)
    sends = traced.spans(f"send {OnePerName.queue_as}")
    assert len(sends) == 2 and {ids(s)[0] for s in sends} == {
        ids(traced.one("first request"))[0],
        ids(traced.one("second request"))[0],
    }
    assert stored(conn, first.job_id)["trace"] == {"traceparent": traceparent(sends[0])}


def test_an_enqueue_that_raises_records_the_error_on_its_spans(
    traced: Traced, conn: psycopg.Connection
) -> None:
    with pytest.raises(pgjobs.SerializationError):
        Greet.set(connection=conn).perform_later(object())
    with pytest.raises(pgjobs.SerializationError):
        pgjobs.perform_all_later([Report(1), Report(object())], connection=conn)
    single, bulk = traced.spans("send mailers") + traced.spans("send reports")
    create_ok, create_failed = traced.spans("create reports")
    for span in (single, bulk, create_failed):
        assert span.status.status_code is StatusCode.ERROR
        attributes = dict(span.attributes or {})
        assert attributes["error.type"] == "pgjobs.errors.SerializationError"
        (event,) = span.events
        assert event.name == "exception"
        assert str(dict(event.attributes or {})["exception.type"]).endswith("SerializationError")
    assert create_ok.status.status_code is StatusCode.UNSET


def test_an_enqueue_without_an_active_span_starts_a_new_trace(
    traced: Traced, conn: psycopg.Connection
) -> None:
    enqueued = enqueue_on(conn, Greet("tick"), schema=None)  # as the scheduler does
    assert enqueued is not None
    send = traced.one("send mailers")
    assert send.parent is None
    assert stored(conn, enqueued.job_id)["trace"] == {"traceparent": traceparent(send)}


def test_without_instrument_nothing_is_traced_and_the_row_is_unchanged(
    conn: psycopg.Connection, loop: EventLoopThread
) -> None:
    assert tracing.tracer is None
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("tests").start_as_current_span("request"):
        one = Greet.set(connection=conn).perform_later("ada")
        (many,) = pgjobs.perform_all_later([Report(1)], connection=conn)
    assert stored(conn, one.job_id) == {"args": ["ada"], "kwargs": {}}
    assert stored(conn, many.job_id) == {"args": [1], "kwargs": {}}
    assert perform(claimed_row(conn, one.job_id), loop).kind == "finished"
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]
    provider.shutdown()


def test_perform_now_makes_no_span(traced: Traced) -> None:
    Greet.perform_now("inline")
    assert traced.spans() == []


# -- perform ----------------------------------------------------------------------------------


@pytest.mark.parametrize("job_class", [Greet, AsyncGreet])
def test_perform_runs_in_a_consumer_span_in_the_producers_trace(
    traced: Traced, conn: psycopg.Connection, loop: EventLoopThread, job_class: type[pgjobs.Job]
) -> None:
    with traced.span("request"):
        job = job_class.set(connection=conn).perform_later("ada")
    assert perform(claimed_row(conn, job.job_id), loop).kind == "finished"
    send, process = traced.one("send mailers"), traced.one("process mailers")
    assert process.kind is SpanKind.CONSUMER
    assert parent_of(process) == ids(send)  # the same trace as the request
    assert dict(process.attributes or {}) == {
        **messaging("process", "mailers", job_class, job.job_id),
        "pgjobs.job.attempt": 1,
    }
    assert process.status.status_code is StatusCode.UNSET
    # The job ran inside it: its own spans (a query, an HTTP call) are the process span's children.
    assert [(c.trace_id, c.span_id) for c in CURRENT] == [ids(process)]


def test_a_job_without_a_stored_context_starts_a_trace_of_its_own(
    traced: Traced, conn: psycopg.Connection, loop: EventLoopThread
) -> None:
    otel.uninstrument()
    job = Greet.set(connection=conn).perform_later("ada")  # enqueued before tracing was on
    otel.instrument(tracer_provider=traced.provider)
    with traced.span("unrelated"):  # whatever is current in the worker's thread is no parent
        perform(claimed_row(conn, job.job_id), loop)
    assert traced.one("process mailers").parent is None


def _claimed(class_name: str, arguments: str) -> Claimed:
    return Claimed(
        id=1,
        job_id=uuid.uuid4(),
        class_name=class_name,
        arguments=arguments,
        queue_name="default",
        priority=0,
        executions=0,
        created_at=datetime.now(UTC),
        scheduled_at=None,
    )


@pytest.mark.parametrize(
    ("class_name", "arguments", "error_type"),
    [
        (Broken.job_name, '{"args": [], "kwargs": {}}', "builtins.ValueError"),
        ("tests.nowhere:Missing", '{"args": [], "kwargs": {}}', "pgjobs.errors.UnknownJobError"),
        (Broken.job_name, '{"args": [{"__pgjobs__": "no"}]}', "pgjobs.errors.DeserializationError"),
        (Broken.job_name, "not json", "pgjobs.errors.DeserializationError"),
    ],
)  # fmt: skip
def test_a_failed_job_sets_error_type_and_an_error_status(
    traced: Traced, loop: EventLoopThread, class_name: str, arguments: str, error_type: str
) -> None:
    outcome = perform(_claimed(class_name, arguments), loop)
    assert outcome.kind == "fail"
    process = traced.one("process default")
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes and process.attributes["error.type"] == error_type
    assert [e.name for e in process.events] == ["exception"]


def test_a_rescued_job_is_no_error(traced: Traced, loop: EventLoopThread) -> None:
    assert (
        perform(_claimed(Rescued.job_name, '{"args": [], "kwargs": {}}'), loop).kind == "finished"
    )
    process = traced.one("process default")
    assert process.status.status_code is StatusCode.UNSET
    assert "error.type" not in (process.attributes or {}) and not process.events


@pytest.fixture
def worker(db: Database) -> Iterator[Worker]:
    made = Worker(Database(db.url), CONFIG, WorkerConfig(queues=("*",), threads=2))
    made.register()
    yield made
    made.stop()
    made.close()


@pytest.mark.committed
def test_a_retry_is_a_second_process_span_in_the_same_trace(traced: Traced, worker: Worker) -> None:
    with traced.span("request"):
        job = FailsOnce.perform_later()
    assert len(run_once(worker)) == 1  # fails with Once: retried at once
    assert len(run_once(worker)) == 1  # succeeds
    send = traced.one("send default")
    first, second = traced.spans("process default")
    assert parent_of(first) == parent_of(second) == ids(send)
    assert [s.attributes and s.attributes["pgjobs.job.attempt"] for s in (first, second)] == [1, 2]
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes and first.attributes["error.type"] == "tests.test_otel.Once"
    assert second.status.status_code is StatusCode.UNSET
    assert first.attributes["messaging.message.id"] == str(job.job_id)


def test_instrument_flushes_the_provider_when_pgjobs_processes_stop(traced: Traced) -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from pgjobs import hooks

    batched = InMemorySpanExporter()
    traced.provider.add_span_processor(BatchSpanProcessor(batched, schedule_delay_millis=3_600_000))
    otel.instrument(tracer_provider=traced.provider)  # again: the hooks are not doubled
    for event in ("worker_stop", "dispatcher_stop", "scheduler_stop", "supervisor_stop"):
        assert hooks._hooks[event].count(otel.flush) == 1
    with traced.span("request"):
        pass
    assert batched.get_finished_spans() == ()  # held by the batch processor
    hooks.run("worker_stop", object())
    assert [s.name for s in batched.get_finished_spans()] == ["request"]
