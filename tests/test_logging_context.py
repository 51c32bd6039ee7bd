"""The running job's identity in log records: ``pgjobs.current_job()`` and ``JobContextFilter``,
for sync jobs in their threads and async jobs on the loop, with nothing left over between jobs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

import pgjobs
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.observability import logs
from pgjobs.observability.logging_context import FIELDS
from pgjobs.processes.executor import Claimed, EventLoopThread, perform
from pgjobs.processes.worker import Worker
from pgjobs.serialization import serialize_arguments
from tests.engine_helpers import states

LOGGER = "tests.logctx"
SEEN: list[tuple[str, Any]] = []  # (what, current_job()) as the jobs saw it


class Records(logging.Handler):
    """Keeps the records that reach it, through a JobContextFilter."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(pgjobs.JobContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def fields(self) -> list[dict[str, Any]]:
        return [{k: r.__dict__.get(k) for k in ("msg", *FIELDS)} for r in self.records]


@pytest.fixture
def records() -> Iterator[Records]:
    handler, logger = Records(), logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    SEEN.clear()


class SyncLogs(pgjobs.Job):
    queue_as = "reports"

    def perform(self, tag: str) -> None:
        SEEN.append((tag, pgjobs.current_job()))
        logging.getLogger(LOGGER).info(tag)


class AsyncLogs(pgjobs.Job):
    queue_as = "async-reports"

    async def perform(self, tag: str) -> None:
        await asyncio.sleep(0)
        SEEN.append((tag, pgjobs.current_job()))
        logging.getLogger(LOGGER).info(tag)


class Rescued(Exception):
    pass


def _log_rescue() -> None:
    SEEN.append(("rescued", pgjobs.current_job()))
    logging.getLogger(LOGGER).info("rescued")


class SyncRescues(pgjobs.Job):
    def perform(self) -> None:
        raise Rescued

    @pgjobs.rescue_from(Rescued)
    def handle(self, error: Rescued) -> None:
        _log_rescue()


class AsyncRescues(pgjobs.Job):
    async def perform(self) -> None:
        raise Rescued

    @pgjobs.rescue_from(Rescued)
    async def handle(self, error: Rescued) -> None:
        await asyncio.sleep(0)
        _log_rescue()


def claimed(job_class: type[pgjobs.Job], *args: Any, executions: int = 0) -> Claimed:
    return Claimed(
        id=1,
        job_id=uuid.uuid4(),
        class_name=job_class.job_name,
        arguments=serialize_arguments(args, {}),
        queue_name=job_class.queue_as if isinstance(job_class.queue_as, str) else "default",
        priority=0,
        executions=executions,
        created_at=datetime.now(UTC),
        scheduled_at=None,
    )


def expected(job: Claimed, msg: str) -> dict[str, Any]:
    return {
        "msg": msg,
        "job_id": str(job.job_id),
        "job_class": job.class_name,
        "queue": job.queue_name,
        "attempt": job.executions + 1,
    }


OUTSIDE = dict.fromkeys(FIELDS)


def outside(msg: str) -> dict[str, Any]:
    return {"msg": msg, **OUTSIDE}


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    thread = EventLoopThread()
    yield thread
    thread.stop()


def test_outside_a_job_there_is_no_job_and_the_filter_adds_nothing(records: Records) -> None:
    assert pgjobs.current_job() is None
    logging.getLogger(LOGGER).info("idle")
    record = logging.makeLogRecord({"msg": "bare"})
    assert pgjobs.JobContextFilter().filter(record) is True
    assert records.fields() == [outside("idle")]
    assert not set(FIELDS) & set(record.__dict__)


def test_a_sync_job_in_a_worker_thread_then_the_next_one_on_that_thread(
    records: Records, loop: EventLoopThread
) -> None:
    first, second = claimed(SyncLogs, "first"), claimed(SyncLogs, "second", executions=2)

    def run() -> None:  # one thread, as a worker's job thread: two jobs, a log line after each
        for job in (first, second):
            assert perform(job, loop).kind == "finished"
            logging.getLogger(LOGGER).info("between")
            assert pgjobs.current_job() is None

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()
    assert records.fields() == [
        expected(first, "first"),
        outside("between"),
        expected(second, "second"),
        outside("between"),
    ]
    (_, job1), (_, job2) = SEEN
    assert isinstance(job1, SyncLogs) and isinstance(job2, SyncLogs)
    assert (job1.job_id, job1.args, job1.executions) == (first.job_id, ("first",), 1)
    assert (job2.job_id, job2.executions, job2.queue_name) == (second.job_id, 3, "reports")
    assert pgjobs.current_job() is None  # the test's own thread never had one


def test_async_jobs_on_the_loop_carry_their_own_identity_and_leave_nothing_behind(
    records: Records, loop: EventLoopThread
) -> None:
    jobs = [claimed(AsyncLogs, f"async {i}") for i in range(3)]
    with ThreadPoolExecutor(3) as pool:  # three worker threads share the one loop
        outcomes = list(pool.map(lambda job: perform(job, loop), jobs))
    assert [o.kind for o in outcomes] == ["finished"] * 3
    by_msg = {f["msg"]: f for f in records.fields()}
    assert by_msg == {f"async {i}": expected(job, f"async {i}") for i, job in enumerate(jobs)}
    assert {tag: job.job_id for tag, job in SEEN} == {
        f"async {i}": job.job_id for i, job in enumerate(jobs)
    }

    async def after() -> Any:  # something else the loop runs later: no job there
        logging.getLogger(LOGGER).info("on the loop")
        return pgjobs.current_job()

    assert asyncio.run_coroutine_threadsafe(after(), loop.loop).result() is None
    assert records.fields()[-1] == outside("on the loop")


@pytest.mark.parametrize("job_class", [SyncRescues, AsyncRescues])
def test_error_handlers_run_inside_the_jobs_context(
    records: Records, loop: EventLoopThread, job_class: type[pgjobs.Job]
) -> None:
    job = claimed(job_class)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(perform, job, loop).result().kind == "finished"
    assert records.fields() == [expected(job, "rescued")]
    ((_, current),) = SEEN
    assert isinstance(current, job_class) and current.job_id == job.job_id


def test_the_filter_keeps_what_a_record_already_has(
    records: Records, loop: EventLoopThread
) -> None:
    class ExtraQueue(pgjobs.Job):
        def perform(self) -> None:
            logging.getLogger(LOGGER).info("extra", extra={"queue": "mine"})

    job = claimed(ExtraQueue)
    assert perform(job, loop).kind == "finished"
    assert records.fields() == [{**expected(job, "extra"), "queue": "mine"}]


def _info(msg: str) -> logging.LogRecord:
    return logging.LogRecord("myapp", logging.INFO, __file__, 1, msg, None, None)


def _filtered(record: logging.LogRecord) -> logging.LogRecord:
    pgjobs.JobContextFilter().filter(record)
    return record


def test_the_json_and_text_formats_show_the_job_only_during_a_job(
    records: Records, loop: EventLoopThread
) -> None:
    made: list[logging.LogRecord] = []

    class Formats(pgjobs.Job):
        def perform(self) -> None:
            made.append(_filtered(_info("in")))

    job = claimed(Formats, executions=1)
    perform(job, loop)
    during = made[0]
    after = _filtered(_info("out"))

    line = json.loads(logs.JsonFormatter().format(during))
    assert {k: line[k] for k in ("logger", "message", *FIELDS)} == {
        "logger": "myapp",
        "message": "in",
        "job_id": str(job.job_id),
        "job_class": job.class_name,
        "queue": "default",
        "attempt": 2,
    }
    assert not set(FIELDS) & set(json.loads(logs.JsonFormatter().format(after)))

    text = logs.TextFormatter("%(levelname)s %(name)s[%(process)d] %(message)s")
    assert text.format(during).endswith(f"myapp[{during.process}] [job {job.job_id}] in")
    assert text.format(after) == f"INFO myapp[{after.process}] out"
    journal = logs.JournalFormatter("%(name)s %(message)s")
    assert journal.format(during) == f"<6>myapp [job {job.job_id}] in"


def test_pgjobs_start_gives_the_applications_loggers_the_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.setattr(logs, "_settings", ("DEBUG", "json"))
        root.handlers[:] = []
        logs.capture_application_logs()  # nobody configured logging: pgjobs' handler
        (handler,) = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter) and root.level == logging.DEBUG
        assert any(isinstance(f, pgjobs.JobContextFilter) for f in handler.filters)

        own = logging.StreamHandler()
        root.handlers[:] = [own]
        logs.capture_application_logs()  # the application's own handler is kept, filtered
        logs.capture_application_logs()
        assert root.handlers == [own]
        assert [type(f) for f in own.filters] == [pgjobs.JobContextFilter]
    finally:
        root.handlers[:], root.level = saved


# -- a real worker ----------------------------------------------------------------------------


class FailsOnce(pgjobs.Job):
    retry_on = [pgjobs.retry_on(Rescued, wait=0, attempts=2)]

    def perform(self) -> None:
        logging.getLogger(LOGGER).info("attempt")
        if self.executions == 1:
            raise Rescued


@pytest.fixture
def worker(db: Database) -> Iterator[Worker]:
    worker = Worker(
        Database(db.url), Config(heartbeat_interval=30), WorkerConfig(queues=("*",), threads=1)
    )
    worker.register()
    worker.on_start()
    yield worker
    worker.stop()
    worker.shutdown()
    worker.close()


def drive(worker: Worker, until: Callable[[], Any], timeout: float = 15) -> None:
    started = time.monotonic()
    while not until():
        assert time.monotonic() - started < timeout, "condition not met in time"
        worker.wake.wait(min(worker.poll(), 0.02))
        worker.wake.clear()


@pytest.mark.committed
def test_a_worker_gives_each_job_and_attempt_its_identity(
    records: Records, worker: Worker, db: Database
) -> None:
    sync = SyncLogs.perform_later("sync")
    async_ = AsyncLogs.perform_later("async")
    retried = FailsOnce.perform_later()
    drive(worker, lambda: states(db.url) == {"finished": 3})
    got = sorted(
        (str(f["job_id"]), f["msg"], f["queue"], f["attempt"], f["job_class"])
        for f in records.fields()
    )
    assert got == sorted(
        [
            (str(sync.job_id), "sync", "reports", 1, SyncLogs.job_name),
            (str(async_.job_id), "async", "async-reports", 1, AsyncLogs.job_name),
            (str(retried.job_id), "attempt", "default", 1, FailsOnce.job_name),
            (str(retried.job_id), "attempt", "default", 2, FailsOnce.job_name),
        ]
    )
    # The worker's own thread never runs a job: nothing leaks into it.
    assert pgjobs.current_job() is None


class PerformsInline(pgjobs.Job):
    """Runs SyncLogs inline from inside itself: the inner job is current, then the outer again."""

    def perform(self) -> None:
        SyncLogs.perform_now("inner")
        SEEN.append(("outer", pgjobs.current_job()))
        logging.getLogger(LOGGER).info("outer")


@pytest.mark.parametrize("job_class", [SyncLogs, AsyncLogs])
def test_perform_now_runs_in_the_jobs_context(
    records: Records, job_class: type[pgjobs.Job]
) -> None:
    job = job_class("now")
    job.perform_inline()  # what perform_now does
    (seen,) = SEEN
    assert seen == ("now", job)
    assert records.fields() == [
        {
            "msg": "now",
            "job_id": str(job.job_id),
            "job_class": job_class.job_name,
            "queue": job.queue_name,
            "attempt": 1,
        }
    ]
    assert pgjobs.current_job() is None  # and nothing stays behind


def test_perform_now_inside_a_job_gives_the_outer_job_back(
    records: Records, loop: EventLoopThread
) -> None:
    outer = claimed(PerformsInline)
    assert perform(outer, loop).kind == "finished"
    inner_job = SEEN[0][1]
    assert [(tag, type(job)) for tag, job in SEEN] == [
        ("inner", SyncLogs),
        ("outer", PerformsInline),
    ]
    assert [(f["msg"], f["job_id"]) for f in records.fields()] == [
        ("inner", str(inner_job.job_id)),
        ("outer", str(outer.job_id)),
    ]
