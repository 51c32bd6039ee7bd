"""Job timeouts: async jobs are cancelled; sync jobs are interrupted in their thread, or failed
and their thread abandoned and replaced when they cannot be interrupted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.processes.worker import Worker
from tests.engine_helpers import (
    config_file,
    drive,
    log_lines,
    pgjobs_start,
    scalar,
    states,
    wait_for,
)
from tests.sample_jobs import BusyTimeout, Record, StuckTimeout

pytestmark = pytest.mark.committed
CONFIG = Config(heartbeat_interval=30)
WOKE: list[str] = []


class BusySync(pgjobs.Job):
    timeout = 0.3

    def perform(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.005)


class SwallowsEverything(pgjobs.Job):
    timeout = 0.3

    def perform(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                time.sleep(0.005)
            except Exception:  # a job's own catch-all does not swallow the interruption
                continue


class StuckSync(pgjobs.Job):
    timeout = 0.3

    def perform(self, seconds: float) -> None:
        time.sleep(seconds)  # one C call: cannot be interrupted
        WOKE.append(str(self.job_id))


class AsyncSlow(pgjobs.Job):
    timeout = 0.3

    async def perform(self) -> None:
        await asyncio.sleep(20)


class AsyncBlocksTheLoop(pgjobs.Job):
    timeout = 0.2

    async def perform(self, seconds: float) -> None:
        time.sleep(seconds)  # blocks the event loop: cancellation cannot happen


class RetriedOnTimeout(pgjobs.Job):
    timeout = 0.2
    retry_on = [pgjobs.retry_on(pgjobs.JobTimeout, wait=0, attempts=2)]

    def perform(self) -> None:
        time.sleep(0.01) if self.executions > 1 else BusySync().perform()


class Quick(pgjobs.Job):
    timeout = 5

    def perform(self) -> None:
        pass


class NoTimeout(pgjobs.Job):
    def perform(self) -> None:
        BusySync().perform()


@pytest.fixture
def make_worker(db: Database) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(threads: int = 2, grace: float = 0.3, default: float | None = None) -> Worker:
        worker = Worker(Database(db.url), CONFIG, WorkerConfig(queues=("*",), threads=threads))
        worker.timeout_grace, worker.default_timeout = grace, default
        worker.register()
        worker.on_start()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()
        worker.shutdown()
        worker.close()
    WOKE.clear()


def failures(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT j.class_name, f.exception_class, f.message, f.backtrace, "
            "(SELECT count(*) FROM pgjobs_job_errors e WHERE e.job_id = j.id) "
            "FROM pgjobs_failed_executions f JOIN pgjobs_jobs j ON j.id = f.job_id ORDER BY j.id"
        ).fetchall()


def test_a_busy_sync_job_is_interrupted_in_its_thread(
    make_worker: Callable[..., Worker], db: Database
) -> None:
    worker = make_worker(grace=2.0)
    threads = [slot.thread for slot in worker._slots]
    BusySync.perform_later()
    took = drive(worker, lambda: states(db.url) == {"failed": 1})
    assert 0.3 <= took < 0.3 + 2.0  # before the grace ran out
    ((_, error, message, _, history),) = failures(db.url)
    assert (error, history) == ("pgjobs.errors.JobTimeout", 1)
    assert message == f"{BusySync.job_name} ran longer than its timeout of 0.3s"
    assert [slot.thread for slot in worker._slots] == threads  # nothing abandoned
    assert worker.in_flight == {} and worker._timed == {}


def test_a_jobs_catch_all_does_not_swallow_the_interruption(
    make_worker: Callable[..., Worker], db: Database
) -> None:
    worker = make_worker(grace=2.0)
    SwallowsEverything.perform_later()
    drive(worker, lambda: states(db.url) == {"failed": 1})
    assert failures(db.url)[0][1] == "pgjobs.errors.JobTimeout"
    assert len({slot.thread for slot in worker._slots}) == 2


def test_a_stuck_sync_job_is_failed_and_its_thread_replaced(
    make_worker: Callable[..., Worker], db: Database
) -> None:
    worker = make_worker(threads=1, grace=0.3)
    (old,) = worker._slots
    stuck = StuckSync.perform_later(2.0)
    took = drive(worker, lambda: states(db.url) == {"failed": 1})
    assert 0.6 <= took < 1.5
    ((_, error, _, backtrace, history),) = failures(db.url)
    assert (error, history) == ("pgjobs.errors.JobTimeout", 1)
    assert "abandoned" in backtrace and "time.sleep(seconds)" in backtrace
    (new,) = worker._slots
    assert new is not old and new.thread is not None and new.thread.is_alive()
    # Capacity is back: the replacement thread runs the next job while the old one still sleeps.
    Quick.perform_later()
    drive(worker, lambda: states(db.url) == {"failed": 1, "finished": 1})
    assert old.thread is not None and old.thread.is_alive()
    # When the sleep returns, the pending interruption lands at once (the job never goes on);
    # the abandoned thread's late outcome is ignored (nothing recorded twice), and it exits.
    old.thread.join(timeout=5)
    drive(worker, lambda: True)
    assert WOKE == [] and not old.thread.is_alive()
    assert stuck.job_id not in {c.job_id for c in worker.in_flight.values()}
    assert states(db.url) == {"failed": 1, "finished": 1}
    assert failures(db.url)[0][4] == 1


def test_an_async_job_is_cancelled(make_worker: Callable[..., Worker], db: Database) -> None:
    worker = make_worker(grace=2.0)
    threads = [slot.thread for slot in worker._slots]
    AsyncSlow.perform_later()
    took = drive(worker, lambda: states(db.url) == {"failed": 1})
    assert took < 0.3 + 2.0
    ((_, error, message, backtrace, _),) = failures(db.url)
    assert error == "pgjobs.errors.JobTimeout" and "0.3s" in message
    assert "asyncio.sleep(20)" in backtrace
    assert [slot.thread for slot in worker._slots] == threads


def test_an_async_job_blocking_the_loop_is_failed_after_the_grace(
    make_worker: Callable[..., Worker], db: Database
) -> None:
    worker = make_worker(threads=1, grace=0.2)
    (old,) = worker._slots
    AsyncBlocksTheLoop.perform_later(1.0)
    took = drive(worker, lambda: states(db.url) == {"failed": 1})
    assert 0.4 <= took < 0.9
    assert worker._slots[0] is not old
    assert old.thread is not None
    old.thread.join(timeout=5)  # the loop unblocks; the late success is ignored
    drive(worker, lambda: True)
    assert states(db.url) == {"failed": 1}


def test_retry_on_job_timeout_retries_it(make_worker: Callable[..., Worker], db: Database) -> None:
    worker = make_worker()
    RetriedOnTimeout.perform_later()
    drive(worker, lambda: states(db.url) == {"finished": 1})
    with psycopg.connect(db.url) as conn:
        row = conn.execute(
            "SELECT j.executions, e.exception_class FROM pgjobs_jobs j "
            "JOIN pgjobs_job_errors e ON e.job_id = j.id"
        ).fetchone()
    assert row == (2, "pgjobs.errors.JobTimeout")


def test_the_default_timeout_applies_to_jobs_without_one(
    make_worker: Callable[..., Worker], db: Database
) -> None:
    worker = make_worker(default=0.2)
    NoTimeout.perform_later()
    drive(worker, lambda: states(db.url) == {"failed": 1})
    assert "timeout of 0.2s" in failures(db.url)[0][2]


def test_jobs_that_finish_in_time_are_never_interrupted(
    make_worker: Callable[..., Worker], db: Database
) -> None:
    worker = make_worker(threads=4)
    pgjobs.perform_all_later([Quick() for _ in range(200)])
    drive(worker, lambda: states(db.url) == {"finished": 200}, timeout=30)
    assert worker._timed == {}


def test_the_main_loop_sleeps_no_longer_than_the_next_deadline(
    make_worker: Callable[..., Worker], db: Database
) -> None:
    worker = make_worker()
    worker.worker = WorkerConfig(queues=("*",), threads=2, polling_interval=30)
    BusySync.perform_later()
    drive(worker, lambda: worker._timed)  # started, with its deadline
    delay = worker.poll()
    assert delay <= 0.3


def test_timeout_events(make_worker: Callable[..., Worker], db: Database) -> None:
    got: list[pgjobs.Event] = []
    pgjobs.subscribe("timeout", got.append)
    try:
        worker = make_worker(threads=1, grace=0.2)
        job = StuckSync.perform_later(1.0)
        drive(worker, lambda: states(db.url) == {"failed": 1})
    finally:
        pgjobs.unsubscribe("timeout", got.append)
    assert [e["abandoned"] for e in got] == [False, True]
    assert got[0].fields == {
        "job_id": job.job_id,
        "class": StuckSync.job_name,
        "queue": "default",
        "attempt": 1,
        "timeout": 0.3,
        "abandoned": False,
    }


@pytest.mark.slow
def test_pgjobs_start_fails_timed_out_jobs_and_keeps_working(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "log"
    workers = '  - queues: "*"\n    threads: 2\n    polling_interval: 0.2'
    busy, stuck = BusyTimeout.perform_later(), StuckTimeout.perform_later(30)
    records = "SELECT count(*) FROM pgjobs_jobs WHERE class_name = %s AND finished_at IS NOT NULL"
    with pgjobs_start(db.url, config_file(tmp_path, workers), log) as proc:
        wait_for(lambda: len(failures(db.url)) == 2, timeout=30)
        pgjobs.perform_all_later([Record(str(i)) for i in range(10)])  # both threads still work
        wait_for(lambda: scalar(db.url, records, [Record.job_name]) == 10, timeout=30)
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    assert {f[1] for f in failures(db.url)} == {"pgjobs.errors.JobTimeout"}
    started = [line for line in log_lines(log) if line.endswith(" start")]
    assert {line.split()[0] for line in started} == {str(busy.job_id), str(stuck.job_id)}
    assert not any("woke up" in line for line in log_lines(log))


def test_a_pending_interruption_can_be_cancelled() -> None:
    from pgjobs.processes.executor import TimeoutInterrupt
    from pgjobs.processes.threads import _set_async_exc

    go, caught = threading.Event(), []

    def target() -> None:
        try:
            go.wait()  # a blocking C call: the interruption waits for it to return
            for _ in range(1000):
                pass
        except TimeoutInterrupt:
            caught.append("interrupted")

    thread = threading.Thread(target=target)
    thread.start()
    assert thread.ident is not None
    assert _set_async_exc(thread.ident, TimeoutInterrupt) == 1
    assert _set_async_exc(thread.ident, None) == 1  # cancelled before it lands
    go.set()
    thread.join()
    assert caught == []
    second = threading.Thread(target=target)
    go.clear()
    second.start()
    assert second.ident is not None
    _set_async_exc(second.ident, TimeoutInterrupt)
    go.set()
    second.join()
    assert caught == ["interrupted"]
