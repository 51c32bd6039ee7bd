"""Model instances as job arguments (the integrations' building blocks): references stored,
rows loaded afresh when the job runs, and the per-job wrappers integrations set up around it."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

import pgjobs
from pgjobs import events, hooks, serialization
from pgjobs.errors import DeserializationError, SerializationError
from pgjobs.processes.executor import Claimed, EventLoopThread, perform
from pgjobs.serialization import deserialize_arguments, register_records, serialize_arguments


class Row:
    """A toy model: instances of its subclasses are rows of TABLE, by primary key."""

    def __init__(self, pk: int | None, name: str) -> None:
        self.pk, self.name = pk, name


class Customer(Row):
    pass


TABLE: dict[int, tuple[str, str]] = {}
SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("session", default=None)
LOADED_IN: list[str | None] = []


def reference(row: Row) -> list[Any]:
    if row.pk is None:
        raise ValueError(f"an unsaved {type(row).__name__} has no row to refer to: save it first")
    return [type(row).__name__, row.pk]


def load(ref: list[Any]) -> Row:
    LOADED_IN.append(SESSION.get())  # which job wrapper's session it was loaded through
    model, pk = ref
    if pk == 666:
        raise ConnectionError("the database is down")
    if pk not in TABLE:
        raise DeserializationError(f"{model} {pk} no longer exists")
    return Customer(pk, TABLE[pk][1])


@pytest.fixture(autouse=True)
def toy_records() -> Iterator[None]:
    register_records("toy", match=lambda cls: issubclass(cls, Row), reference=reference, load=load)
    yield
    serialization._RECORDS.pop("toy", None)
    serialization._RECORDS_BY_CLASS.clear()
    TABLE.clear()
    LOADED_IN.clear()


def test_an_instance_is_stored_as_a_reference_and_loaded_afresh() -> None:
    TABLE[7] = ("Customer", "Ada")
    stale = Customer(7, "old name")
    stored = serialize_arguments((stale,), {"also": [stale]})
    assert stored["args"] == [{"__pgjobs__": "record", "v": ["Customer", 7], "kind": "toy"}]
    TABLE[7] = ("Customer", "Ada Lovelace")  # changed after the enqueue
    (fresh,), kwargs = deserialize_arguments(json.dumps(stored))
    assert isinstance(fresh, Customer) and fresh is not stale
    assert (fresh.pk, fresh.name) == (7, "Ada Lovelace")
    assert kwargs["also"][0].name == "Ada Lovelace"


def test_an_unsaved_instance_is_refused_at_enqueue_naming_the_argument() -> None:
    with pytest.raises(SerializationError) as raised:
        serialize_arguments((1, Customer(None, "new")), {}, context="Welcome.perform_later")
    message = str(raised.value)
    assert "Welcome.perform_later" in message and "argument 1" in message
    assert "unsaved Customer has no row to refer to: save it first" in message


def test_a_deleted_row_raises_deserialization_error() -> None:
    stored = serialize_arguments((Customer(3, "gone"),), {})
    with pytest.raises(DeserializationError, match="Customer 3 no longer exists"):
        deserialize_arguments(json.dumps(stored))


def test_an_unregistered_kind_says_which_integration_to_import() -> None:
    stored = {"args": [{"__pgjobs__": "record", "v": ["User", 1], "kind": "django"}], "kwargs": {}}
    with pytest.raises(DeserializationError, match=r"pgjobs\.contrib\.django"):
        deserialize_arguments(json.dumps(stored))


def test_a_kind_named_like_a_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="record kind 'uuid'"):
        register_records("uuid", match=lambda cls: False, reference=reference, load=load)


# -- a worker performing jobs with records, inside the integrations' job wrappers -----------------


class Greets(pgjobs.Job):
    discard_on = [DeserializationError]  # as in the seeds: the record was deleted meanwhile

    def perform(self, customer: Customer) -> str:
        return f"hello {customer.name} in {SESSION.get()}"


@contextmanager
def session(claimed: Claimed) -> Iterator[None]:
    token = SESSION.set(f"session of {claimed.job_id}")
    try:
        yield
    finally:
        SESSION.reset(token)


def claimed_with(*args: Any) -> Claimed:
    import uuid

    return Claimed(
        id=1,
        job_id=uuid.uuid4(),
        class_name=Greets.job_name,
        arguments=json.dumps(serialize_arguments(args, {})),
        queue_name="default",
        priority=0,
        executions=0,
        created_at=datetime.now(UTC),
        scheduled_at=None,
    )


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.stop()


@pytest.fixture
def wrapped() -> Iterator[None]:
    hooks.wrap_jobs(session)
    hooks.wrap_jobs(session)  # twice: registered once
    assert hooks.job_wrappers.count(session) == 1
    yield
    hooks.unwrap_jobs(session)
    assert hooks.job_wrappers == ()


def test_records_load_inside_the_job_wrappers(wrapped: None, loop: EventLoopThread) -> None:
    TABLE[1] = ("Customer", "Grace")
    job = claimed_with(Customer(1, "Grace"))
    outcome = perform(job, loop)
    assert outcome.kind == "finished" and outcome.error is None
    assert [f"session of {job.job_id}"] == LOADED_IN  # the wrapper was entered before decoding
    assert SESSION.get() is None  # and left afterwards


def test_a_deleted_record_discards_the_job(wrapped: None, loop: EventLoopThread) -> None:
    outcome = perform(claimed_with(Customer(2, "deleted")), loop)
    assert outcome.kind == "discard"
    assert isinstance(outcome.error, DeserializationError)


def test_a_wrapper_that_fails_to_enter_fails_the_job(loop: EventLoopThread) -> None:
    @contextmanager
    def broken(claimed: Claimed) -> Iterator[None]:
        raise ConnectionError("the framework's database is down")
        yield

    hooks.wrap_jobs(broken)
    try:
        outcome = perform(claimed_with(), loop)
    finally:
        hooks.unwrap_jobs(broken)
    assert outcome.kind == "fail" and isinstance(outcome.error, ConnectionError)


def test_a_wrapper_that_fails_to_leave_is_reported_and_the_outcome_stands(
    loop: EventLoopThread,
) -> None:
    reported: list[str] = []

    @contextmanager
    def leaky(claimed: Claimed) -> Iterator[None]:
        yield
        raise RuntimeError("could not close the session")

    def report(error: BaseException, where: str) -> None:
        reported.append(f"{where}: {error}")

    events.on_thread_error(report)
    hooks.wrap_jobs(leaky)
    try:
        TABLE[4] = ("Customer", "Linus")
        outcome = perform(claimed_with(Customer(4, "Linus")), loop)
    finally:
        hooks.unwrap_jobs(leaky)
        events.remove_thread_error_handler(report)
    assert outcome.kind == "finished"
    assert reported == ["a job wrapper (pgjobs.hooks.wrap_jobs): could not close the session"]


def test_a_loader_that_cannot_reach_its_database_is_not_a_deleted_row(
    wrapped: None, loop: EventLoopThread
) -> None:
    stored = serialize_arguments((Customer(666, "unreachable"),), {})
    with pytest.raises(ConnectionError, match="the database is down"):
        deserialize_arguments(json.dumps(stored))
    outcome = perform(claimed_with(Customer(666, "unreachable")), loop)
    assert outcome.kind == "fail"  # not discarded by discard_on = [DeserializationError]
    assert isinstance(outcome.error, ConnectionError)
