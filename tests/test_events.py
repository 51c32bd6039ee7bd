"""Events: subscribing, the cost of an event nobody listens to, log lines, and the events a worker
and the operators' API emit with their documented fields."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

import pgjobs
from pgjobs import events
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.observability.logs import JsonFormatter
from pgjobs.processes.worker import Worker
from tests.engine_helpers import run_once, states

CONFIG = Config(heartbeat_interval=30)


class Works(pgjobs.Job):
    def perform(self) -> None:
        pass


class Retries(pgjobs.Job):
    retry_on = [pgjobs.retry_on(LookupError, wait=60, jitter=0, queue="later", priority=3)]

    def perform(self) -> None:
        raise LookupError("not yet")


class Discards(pgjobs.Job):
    discard_on = [PermissionError]

    def perform(self) -> None:
        raise PermissionError("forbidden")


class Fails(pgjobs.Job):
    def perform(self) -> None:
        raise ZeroDivisionError("oops")


class Rescues(pgjobs.Job):
    @pgjobs.rescue_from(ValueError)
    def handle(self, error: ValueError) -> None:
        pass

    def perform(self) -> None:
        raise ValueError("handled")


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    """Leave the subscriptions as they were (the worker installs the log subscriber)."""
    saved = {name: list(subs) for name, subs in events._by_name.items()}
    handlers = list(events._thread_error_handlers)
    subscriber = events._log_subscriber
    yield
    with events._lock:
        events._by_name.clear()
        events._by_name.update(saved)
        events._thread_error_handlers[:] = handlers
        events._log_subscriber = subscriber
        events._rebuild()


@pytest.fixture
def got() -> Iterator[list[pgjobs.Event]]:
    received: list[pgjobs.Event] = []
    pgjobs.subscribe("*", received.append)
    yield received
    pgjobs.unsubscribe("*", received.append)


def named(received: list[pgjobs.Event], name: str) -> list[dict[str, Any]]:
    return [e.fields for e in received if e.name == name]


# -- subscribing ----------------------------------------------------------------------------------


def test_subscribe_delivers_and_unsubscribe_stops() -> None:
    events.stop_logging_events()
    seen: list[pgjobs.Event] = []
    assert "fail" not in events.active
    pgjobs.subscribe("fail", seen.append)
    assert "fail" in events.active and "retry" not in events.active
    events.emit("fail", job_id=1)
    events.emit("retry", job_id=2)
    pgjobs.unsubscribe("fail", seen.append)
    events.emit("fail", job_id=3)
    assert [(e.name, e["job_id"]) for e in seen] == [("fail", 1)]
    assert "fail" not in events.active
    assert isinstance(seen[0].time, float) and seen[0].get("missing") is None


def test_star_subscribes_to_every_event() -> None:
    events.stop_logging_events()
    seen: list[str] = []

    def record(event: pgjobs.Event) -> None:
        seen.append(event.name)

    pgjobs.subscribe("*", record)
    assert set(events.active) == set(events.EVENTS)
    for name in ("enqueue", "perform", "recover"):
        events.emit(name)
    pgjobs.unsubscribe("*", record)
    assert seen == ["enqueue", "perform", "recover"] and events.active == {}


def test_unknown_event_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"no event 'failed'.*discard, discard_failed"):
        pgjobs.subscribe("failed", print)


def test_a_failing_subscriber_is_reported_and_the_others_still_run() -> None:
    reported: list[tuple[str, str]] = []
    seen: list[str] = []

    def broken(event: pgjobs.Event) -> None:
        raise RuntimeError("subscriber bug")

    pgjobs.on_thread_error(lambda error, where: reported.append((str(error), where)))
    pgjobs.subscribe("discard", broken)
    pgjobs.subscribe("discard", lambda event: seen.append(event.name))
    events.emit("discard")
    assert seen == ["discard"]
    assert reported == [
        (
            "subscriber bug",
            "subscriber 'test_a_failing_subscriber_is_reported_"
            "and_the_others_still_run.<locals>.broken' of 'discard'",
        )
    ]


def test_thread_errors_are_logged_and_handed_to_handlers(caplog: pytest.LogCaptureFixture) -> None:
    reported: list[BaseException] = []
    pgjobs.on_thread_error(lambda error, where: reported.append(error))
    error = OSError("disk full")
    events.thread_error(error, "pgjobs-heartbeat-1")
    assert reported == [error]
    assert "unexpected error in pgjobs-heartbeat-1: OSError('disk full')" in caplog.text


# -- log lines ------------------------------------------------------------------------------------


def test_at_info_per_job_events_are_not_even_subscribed() -> None:
    logger = logging.getLogger("pgjobs")
    level = logger.level
    try:
        logger.setLevel(logging.INFO)
        events.log_events()
        assert not {"enqueue", "claim", "perform_start", "perform"} & set(events.active)
        assert {"retry", "discard", "fail", "timeout"} <= set(events.active)
        logger.setLevel(logging.DEBUG)
        events.log_events()  # again after a level change: idempotent
        assert {"perform", "claim"} <= set(events.active)
        assert events.active["perform"].count(events._log_subscriber) == 1
    finally:
        logger.setLevel(level)
        events.stop_logging_events()


def test_one_log_line_per_event_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    events.log_events()
    job_id = uuid.uuid4()
    with caplog.at_level(logging.WARNING, logger="pgjobs"):
        events.emit(
            "retry", job_id=job_id, queue="default", attempt=2, error="a b", wait=3.25, skipped=None
        )
        events.emit("fail", job_id=job_id, duration_ms=12.5)
    retry, fail = caplog.records
    assert retry.levelno == logging.WARNING and fail.levelno == logging.ERROR
    assert retry.getMessage() == (
        f'retry job_id={job_id} queue=default attempt=2 error="a b" wait=3.25'
    )
    assert retry.pgjobs == {  # type: ignore[attr-defined]
        "event": "retry",
        "job_id": job_id,
        "queue": "default",
        "attempt": 2,
        "error": "a b",
        "wait": 3.25,
        "skipped": None,
    }
    line = json.loads(JsonFormatter().format(fail))
    assert (line["event"], line["job_id"], line["duration_ms"]) == ("fail", str(job_id), 12.5)
    assert line["level"] == "error"


# -- what a worker emits --------------------------------------------------------------------------


@pytest.fixture
def worker(db: Database) -> Iterator[Worker]:
    made = Worker(Database(db.url), CONFIG, WorkerConfig(queues=("*",), threads=10))
    made.register()
    yield made
    made.stop()
    made.close()


@pytest.mark.committed
def test_a_worker_emits_the_documented_job_events(
    worker: Worker, db: Database, got: list[pgjobs.Event]
) -> None:
    classes: list[type[pgjobs.Job]] = [Works, Retries, Discards, Fails, Rescues]
    jobs = {cls: cls.perform_later() for cls in classes}
    del got[:]  # (enqueue events come with the lead's enqueue.py instrumentation)
    run_once(worker)
    assert states(db.url) == {"finished": 3, "scheduled": 1, "failed": 1}
    (claim,) = named(got, "claim")
    assert claim == {"process_id": worker.id, "count": 5, "queue": None}

    def base(cls: type[pgjobs.Job]) -> dict[str, Any]:
        return {"job_id": jobs[cls].job_id, "class": cls.job_name, "queue": "default", "attempt": 1}

    starts = named(got, "perform_start")
    assert sorted(s["class"] for s in starts) == sorted(c.job_name for c in jobs)
    assert base(Works) in starts
    performed = {p["class"]: p for p in named(got, "perform")}
    assert {k: performed[Works.job_name][k] for k in ("outcome", "error_class")} == {
        "outcome": "finished",
        "error_class": None,
    }
    assert set(performed[Works.job_name]) == {
        *base(Works),
        *("duration_ms", "outcome", "error_class", "wait_ms"),
    }
    assert performed[Works.job_name]["wait_ms"] >= 0  # a first attempt: since its enqueue
    outcomes = {name: p["outcome"] for name, p in performed.items()}
    assert outcomes == {
        Works.job_name: "finished",
        Retries.job_name: "retry",
        Discards.job_name: "discard",
        Fails.job_name: "fail",
        Rescues.job_name: "rescued",
    }

    (retry,) = named(got, "retry")
    assert retry.pop("duration_ms") >= 0 and isinstance(retry.pop("scheduled_at"), datetime)
    assert retry == {
        **base(Retries),
        "error_class": "builtins.LookupError",
        "error": "not yet",
        "wait": 60.0,
        "retry_queue": "later",
        "retry_priority": 3,
    }
    (discard,) = named(got, "discard")
    assert discard.pop("duration_ms") >= 0
    assert discard == {
        **base(Discards),
        "error_class": "builtins.PermissionError",
        "error": "forbidden",
    }
    (fail,) = named(got, "fail")
    assert fail.pop("duration_ms") >= 0
    assert fail == {**base(Fails), "error_class": "builtins.ZeroDivisionError", "error": "oops"}


@pytest.mark.committed
def test_shutdown_emits_release_claimed(
    worker: Worker, db: Database, got: list[pgjobs.Event]
) -> None:
    Works.perform_later()
    assert len(worker.claim(1)) == 1  # and its reply was lost: the worker does not know of it
    worker.config = Config(heartbeat_interval=30, shutdown_timeout=0.1)
    worker.shutdown()
    worker.deregister()
    assert named(got, "release_claimed") == [
        {
            "process_id": worker.id,
            "process": worker.name,
            "count": 1,
            "reason": "claimed but not running at deregistration",
        }
    ]
    assert states(db.url) == {"ready": 1}


@pytest.mark.committed
def test_the_operators_api_emits_events(db: Database, got: list[pgjobs.Event]) -> None:
    failed = pgjobs.FailedJobs(db)
    assert failed.retry_all(queue="none") == 0
    assert failed.discard_all(job_class=Fails, error=ZeroDivisionError) == 0
    assert pgjobs.clear_finished(older_than=0, job_class=Works) == 0
    assert named(got, "retry_failed") == [{"count": 0, "queue": "none"}]
    assert named(got, "discard_failed") == [
        {"count": 0, "job_class": Fails.job_name, "error": "builtins.ZeroDivisionError"}
    ]
    (cleared,) = named(got, "clear_finished")
    assert (cleared["count"], cleared["job_class"]) == (0, Works.job_name)
    assert isinstance(cleared["cutoff"], datetime) and cleared["duration_ms"] >= 0
