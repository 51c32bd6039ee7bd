"""Job control in an in-process worker (real PostgreSQL, real job threads): results, failures,
cancellation of waiting and running jobs, progress, snooze.  The same guarantees with real
``pgjobs start`` processes are in test_job_control_e2e.py."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import events
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.operations import results
from pgjobs.operations.results import wait_result
from pgjobs.processes.jobcontrol import Control
from pgjobs.processes.worker import Worker
from tests.control_jobs import (
    Compute,
    ComputeAsync,
    Cooperative,
    CooperativeAsync,
    Explodes,
    Huge,
    Nothing,
    Reports,
    Stepped,
    Stubborn,
    Unkept,
)
from tests.engine_helpers import Running, drive, scalar
from tests.sample_jobs import _log_line

pytestmark = pytest.mark.committed


@pytest.fixture
def worker(db: Database, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    monkeypatch.setenv("PGJOBS_TEST_LOG", str(tmp_path / "jobs.log"))
    made = Worker(Database(db.url), Config(heartbeat_interval=30), WorkerConfig(threads=3))
    made.register()
    made.on_start()
    yield made
    made.stop()
    made.shutdown()
    made.close()


def state(job_id: Any) -> str:
    return pgjobs.get_job(job_id).state


def log(tmp_path: Any) -> list[str]:
    path = tmp_path / "jobs.log"
    return path.read_text().splitlines() if path.exists() else []


# -- results -------------------------------------------------------------------------------------


def test_a_result_round_trip_sync_and_async(worker: Worker) -> None:
    sync, in_async = Compute.perform_later(4), ComputeAsync.perform_later(7)
    with Running(worker):
        assert sync.result(timeout=10) == {
            "n": 4,
            "square": 16,
            "on": datetime.date(2026, 12, 6),
        }
        assert asyncio.run(in_async.result_async(timeout=10)) == [7, 8]
    info = pgjobs.get_job(sync.job_id)
    assert (info.state, info.attempts, info.result) == ("finished", 1, sync.result())


@pytest.fixture
def notified_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiters poll only after a minute: within a test, only the notification wakes them."""
    monkeypatch.setattr(results, "_FIRST_POLL", 60.0)
    monkeypatch.setattr(results, "POLL", 60.0)


def _woken_after_the_finish(worker: Worker, job: pgjobs.EnqueuedJob, wait: Any) -> float:
    """Start ``wait()`` (which returns the result) in a thread, let it read the job (still
    ready) and listen, run the job, and return the seconds from its finish to the wake."""
    woken: list[tuple[Any, float]] = []
    waiter = threading.Thread(target=lambda: woken.append((wait(), time.monotonic())))
    waiter.start()
    time.sleep(0.3)  # it has read the job, still ready, and waits: the next poll is a minute off
    assert state(job.job_id) == "ready"
    drive(worker, lambda: state(job.job_id) == "finished")
    finished = time.monotonic()
    waiter.join(10)
    assert woken and woken[0][0]["square"] == 4
    return woken[0][1] - finished


def test_a_waiter_is_woken_by_the_notification(worker: Worker, notified_only: None) -> None:
    job = Compute.perform_later(2)
    assert _woken_after_the_finish(worker, job, lambda: job.result(timeout=5)) < 0.2


def test_an_async_waiter_is_woken_by_the_notification(worker: Worker, notified_only: None) -> None:
    job = Compute.perform_later(2)
    took = _woken_after_the_finish(worker, job, lambda: asyncio.run(job.result_async(timeout=5)))
    assert took < 0.2


def test_a_failed_job_raises_job_failed_with_its_error(worker: Worker) -> None:
    job = Explodes.perform_later()
    with Running(worker), pytest.raises(pgjobs.JobFailed) as raised:
        job.result(timeout=10)
    error = raised.value
    assert (error.state, error.error_class, error.message) == (
        "failed",
        "builtins.ValueError",
        "no such report",
    )
    assert error.traceback is not None and "raise ValueError" in error.traceback
    assert "no such report" in str(error)


def test_none_stores_nothing_and_waiters_poll_for_it(worker: Worker) -> None:
    job = Nothing.perform_later()
    with Running(worker):
        assert job.result(timeout=10) is None
    assert scalar(worker.database.url, "SELECT result FROM pgjobs_jobs") is None


def test_store_result_false_opts_out(worker: Worker) -> None:
    job = Unkept.perform_later()
    with Running(worker):
        assert job.result(timeout=10) is None
    assert pgjobs.get_job(job.job_id).state == "finished"


def test_a_result_that_cannot_be_stored_does_not_fail_the_job(worker: Worker) -> None:
    job = Huge.perform_later()
    too_big = "1,002 bytes of JSON, over its max_result"
    with (
        events.recording("result_error") as seen,
        Running(worker),
        pytest.raises(pgjobs.ResultError, match=too_big),
    ):
        job.result(timeout=10)
    info = pgjobs.get_job(job.job_id)
    assert (info.state, info.attempts, info.errors) == ("finished", 1, ())  # ran once, not retried
    assert seen and seen[0]["error"].startswith("the result of tests.control_jobs:Huge")


def test_another_jobs_cancellation_is_an_error_not_a_cancel(worker: Worker) -> None:
    other = Cooperative.set(wait=600).perform_later("other")
    assert other.cancel() == "cancelled"
    job = WaitsFor.perform_later(str(other.job_id))
    with Running(worker), pytest.raises(pgjobs.JobFailed) as raised:
        job.result(timeout=10)
    assert raised.value.error_class == "pgjobs.errors.JobCancelled"  # judged, not "cancelled"


class WaitsFor(pgjobs.Job):
    def perform(self, job_id: str) -> None:
        wait_result(job_id, timeout=5)


def test_a_write_that_can_never_succeed_is_the_jobs_error() -> None:
    """A write the database refuses on its data would fail on every try: the job thread gets it
    as a JobError (judged by the job's rules), not as an interruption that would loop."""
    control = Control(threading.Event())
    result: list[object] = []

    def job_thread() -> None:
        try:
            control.call("UPDATE ...", {"id": 1})
        except pgjobs.JobError as exc:
            result.append(exc)

    def refuse(template: str, params: dict[str, object]) -> list[tuple[object, ...]]:
        raise psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence")

    thread = threading.Thread(target=job_thread)
    thread.start()
    while not control.pending():
        time.sleep(0.01)
    control.serve(refuse, 1)
    thread.join(5)
    assert "job control could not write" in str(result[0])


def test_result_times_out_and_unknown_jobs_are_not_found(worker: Worker) -> None:
    job = Compute.perform_later(1)
    with pytest.raises(TimeoutError, match="it is ready"):
        job.result(timeout=0.2)
    with pytest.raises(pgjobs.JobNotFound):
        pgjobs.get_job("00000000-0000-0000-0000-000000000000")


def test_result_async_times_out_and_raises_job_failed(worker: Worker) -> None:
    waiting, failing = Compute.perform_later(1), Explodes.perform_later()
    with pytest.raises(TimeoutError, match="it is ready"):
        asyncio.run(waiting.result_async(timeout=0.2))
    drive(worker, lambda: state(failing.job_id) == "failed")
    with pytest.raises(pgjobs.JobFailed) as raised:
        asyncio.run(failing.result_async(timeout=10))
    assert (raised.value.error_class, raised.value.message) == (
        "builtins.ValueError",
        "no such report",
    )


def test_a_job_not_committed_yet_is_not_found_rather_than_waited_for(
    worker: Worker, db: Database
) -> None:
    with psycopg.connect(db.url) as conn:
        job = Compute.set(connection=conn).perform_later(3)
        with pytest.raises(pgjobs.JobNotFound, match="not committed yet"):
            job.result(timeout=5)  # it could never appear while this thread waits
    with Running(worker):  # committed now
        assert job.result(timeout=10)["square"] == 9


# -- cancellation --------------------------------------------------------------------------------


def test_cancelling_waiting_jobs(worker: Worker, tmp_path: Any) -> None:
    ready = Cooperative.perform_later("ready")
    scheduled = Cooperative.set(wait=600).perform_later("scheduled")
    assert pgjobs.cancel(ready.job_id) == "cancelled"
    assert scheduled.cancel() == "cancelled"
    assert pgjobs.cancel(ready.job_id) == "cancelled"  # already: its state, unchanged
    drive(worker, lambda: True)
    worker.poll()
    for job in (ready, scheduled):
        info = pgjobs.get_job(job.job_id)
        assert (info.state, info.attempts) == ("cancelled", 0)
        assert info.cancelled_at is not None and info.finished_at is not None
        with pytest.raises(pgjobs.JobCancelled):
            job.result(timeout=1)
    assert log(tmp_path) == []


def test_a_blocked_job_is_cancelled_and_its_key_stays_usable(worker: Worker) -> None:
    first = Limited.perform_later("a")
    second = Limited.perform_later("b")  # blocked behind the first
    assert pgjobs.get_job(second.job_id).state == "blocked"
    assert pgjobs.cancel(second.job_id) == "cancelled"
    assert pgjobs.cancel(first.job_id) == "cancelled"  # ready, holding the slot: given back
    third = Limited.perform_later("c")
    assert pgjobs.get_job(third.job_id).state == "ready"


class Limited(pgjobs.Job):
    limits_concurrency = pgjobs.limit(to=1, key=lambda tag: "one")

    def perform(self, tag: str) -> None:
        pass


def _started(tmp_path: Any, tag: str) -> None:
    deadline = time.monotonic() + 10
    while f"{tag} start" not in log(tmp_path):
        assert time.monotonic() < deadline, f"{tag} did not start"
        time.sleep(0.02)


def test_cancelling_a_waiting_or_running_unique_job_releases_its_key(
    worker: Worker, tmp_path: Any
) -> None:
    waiting = UniqueCooperative.perform_later("waiting")
    assert UniqueCooperative.perform_later("dup").duplicate_of == waiting.job_id
    assert waiting.cancel() == "cancelled"
    running = UniqueCooperative.perform_later("running")
    assert running.state == "ready"  # the key was released with the waiting job
    with Running(worker):
        _started(tmp_path, "running")
        assert UniqueCooperative.perform_later("dup").duplicate_of == running.job_id
        assert running.cancel() == "cancelling"
        with pytest.raises(pgjobs.JobCancelled):
            running.result(timeout=10)
    after = UniqueCooperative.perform_later("after")
    assert (after.state, after.duplicate_of) == ("ready", None)  # released with the running one
    assert log(tmp_path) == ["running start", "running after_cancel"]


class UniqueCooperative(Cooperative):
    unique = pgjobs.unique(key=lambda tag: "one")


def test_cancelling_a_running_limited_job_gives_its_slot_back(
    worker: Worker, tmp_path: Any
) -> None:
    first = LimitedCooperative.perform_later("first")
    second = LimitedCooperative.perform_later("second")
    assert second.state == "blocked"
    with Running(worker):
        _started(tmp_path, "first")
        assert first.cancel() == "cancelling"
        with pytest.raises(pgjobs.JobCancelled):
            first.result(timeout=10)
        _started(tmp_path, "second")  # unblocked by the slot the cancelled job gave back
        assert second.cancel() == "cancelling"
        with pytest.raises(pgjobs.JobCancelled):
            second.result(timeout=10)
    assert log(tmp_path) == [
        "first start",
        "first after_cancel",
        "second start",
        "second after_cancel",
    ]


class LimitedCooperative(Cooperative):
    limits_concurrency = pgjobs.limit(to=1, key=lambda tag: "one")


def test_a_running_sync_job_that_polls_cancel_requested_returns_early(
    worker: Worker, tmp_path: Any
) -> None:
    job = PollsCancelRequested.perform_later("polls")
    with Running(worker):
        _started(tmp_path, "polls")
        asked = time.monotonic()
        assert job.cancel() == "cancelling"
        stopped_at = job.result(timeout=10)
        assert time.monotonic() - asked < 2
    assert isinstance(stopped_at, int) and stopped_at < 600
    info = pgjobs.get_job(job.job_id)
    assert (info.state, info.attempts) == ("finished", 1)  # it returned: finished, not cancelled
    assert info.cancel_requested_at is not None and info.cancelled_at is None
    assert log(tmp_path) == ["polls start", "polls saw the request"]


class PollsCancelRequested(pgjobs.Job):
    """Polls ``self.cancel_requested`` and returns where it stopped."""

    def perform(self, tag: str) -> int:
        _log_line(f"{tag} start")
        for i in range(600):
            if self.cancel_requested:
                _log_line(f"{tag} saw the request")
                return i
            time.sleep(0.02)
        return 600


def test_a_running_sync_job_is_cancelled_cooperatively(worker: Worker, tmp_path: Any) -> None:
    job = Cooperative.perform_later("sync")
    with Running(worker):
        deadline = time.monotonic() + 10
        while "sync start" not in log(tmp_path):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        asked = time.monotonic()
        assert pgjobs.cancel(job.job_id) == "cancelling"
        with pytest.raises(pgjobs.JobCancelled):
            job.result(timeout=10)
        took = time.monotonic() - asked
    assert took < 2
    info = pgjobs.get_job(job.job_id)
    assert (info.state, info.attempts) == ("cancelled", 1)
    assert info.cancel_requested_at is not None
    assert log(tmp_path) == ["sync start", "sync after_cancel"]


def test_a_running_async_job_is_cancelled(worker: Worker, tmp_path: Any) -> None:
    job = CooperativeAsync.perform_later("async")
    with Running(worker):
        deadline = time.monotonic() + 10
        while "async start" not in log(tmp_path):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert job.cancel() == "cancelling"
        started = time.monotonic()
        with pytest.raises(pgjobs.JobCancelled):
            job.result(timeout=10)
        assert time.monotonic() - started < 2
    assert log(tmp_path) == ["async start", "async after_cancel"]


def test_an_operator_retry_drops_a_cancel_request_made_before_the_failure(
    worker: Worker, db: Database
) -> None:
    job = Explodes.perform_later()
    drive(worker, lambda: pgjobs.get_job(job.job_id).state == "failed")
    with psycopg.connect(db.url, autocommit=True) as conn:  # as if asked while it ran
        conn.execute("UPDATE pgjobs_jobs SET cancel_requested_at = now()")
    assert pgjobs.FailedJobs().retry(job.job_id)
    drive(worker, lambda: pgjobs.get_job(job.job_id).state == "failed")
    assert pgjobs.get_job(job.job_id).attempts == 2  # it ran again: the request was dropped


def test_a_job_that_ignores_the_request_finishes_with_it_noted(worker: Worker) -> None:
    job = Stubborn.perform_later(1.0)
    with Running(worker):
        deadline = time.monotonic() + 10
        while pgjobs.get_job(job.job_id).state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert pgjobs.cancel(job.job_id) == "cancelling"
        assert job.result(timeout=10) == "done anyway"
    info = pgjobs.get_job(job.job_id)
    assert info.state == "finished" and info.cancel_requested_at is not None
    assert pgjobs.cancel(job.job_id) == "finished"


def test_a_job_asked_to_stop_before_its_claim_is_cancelled_not_run(
    worker: Worker, tmp_path: Any
) -> None:
    job = Cooperative.perform_later("never")
    with psycopg.connect(worker.database.url, autocommit=True) as conn:
        # As when a cancel found the row locked by a claim that then rolled back, or the job was
        # given back to ready after the request.
        conn.execute("UPDATE pgjobs_jobs SET cancel_requested_at = now()")
    drive(worker, lambda: pgjobs.get_job(job.job_id).state == "cancelled")
    assert pgjobs.get_job(job.job_id).attempts == 0  # it never ran
    assert log(tmp_path) == []


# -- progress ------------------------------------------------------------------------------------


def test_progress_is_visible_while_the_job_runs_and_the_last_report_is_written(
    worker: Worker,
) -> None:
    job = Reports.perform_later(5, 1.5)
    with Running(worker):
        deadline = time.monotonic() + 10
        while (info := pgjobs.get_job(job.job_id)).progress is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert info.state == "running"
        assert info.progress is not None and info.progress.done == 0  # throttled: the first
        assert info.progress.total == 5 and info.progress.message == "item 0"
        job.result(timeout=10)
    progress = pgjobs.get_job(job.job_id).progress
    assert progress is not None
    assert (progress.done, progress.fraction, progress.message) == (5, 1.0, "all done")


def test_progress_writes_are_throttled_to_about_one_a_second(worker: Worker, db: Database) -> None:
    """300 reports over 2.5 s: a write about every second (the first at once), plus the last."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS progress_writes (at timestamptz, done float8)")
        conn.execute("TRUNCATE progress_writes")
        conn.execute(
            "CREATE OR REPLACE FUNCTION log_progress() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN INSERT INTO progress_writes VALUES (clock_timestamp(), "
            "(NEW.progress ->> 'done')::float8); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE OR REPLACE TRIGGER log_progress AFTER UPDATE OF progress ON pgjobs_jobs "
            "FOR EACH ROW EXECUTE FUNCTION log_progress()"
        )
    try:
        job = ReportsOften.perform_later(300, 2.5)
        with Running(worker):
            job.result(timeout=20)
        with psycopg.connect(db.url) as conn:
            writes = conn.execute("SELECT at, done FROM progress_writes ORDER BY at").fetchall()
    finally:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS log_progress ON pgjobs_jobs")
            conn.execute("DROP FUNCTION IF EXISTS log_progress()")
            conn.execute("DROP TABLE IF EXISTS progress_writes")
    done = [w[1] for w in writes]
    assert 3 <= len(writes) <= 5, done  # not 300: at 0 s, ~1 s, ~2 s, and the last at the end
    assert done[0] == 1 and done[-1] == 300  # the first report at once, the last always
    throttled = [b[0] - a[0] for a, b in itertools.pairwise(writes[:-1])]
    assert all(gap.total_seconds() >= 0.8 for gap in throttled), throttled


class ReportsOften(pgjobs.Job):
    def perform(self, times: int, seconds: float) -> None:
        for done in range(1, times + 1):
            self.progress(done, times)
            time.sleep(seconds / times)


def test_the_last_progress_report_is_written_when_the_job_fails(worker: Worker) -> None:
    job = ReportsThenFails.perform_later()
    with Running(worker), pytest.raises(pgjobs.JobFailed):
        job.result(timeout=10)
    progress = pgjobs.get_job(job.job_id).progress
    assert progress is not None and (progress.done, progress.message) == (2, "second")


class ReportsThenFails(pgjobs.Job):
    def perform(self) -> None:
        self.progress(1, 10, "first")
        self.progress(2, 10, "second")  # throttled: only sent at the end
        raise RuntimeError("broke")


def test_an_async_job_cannot_use_the_decorator_form() -> None:
    with pytest.raises(TypeError, match=r"await self\.step"):
        ComputeAsync(1).step("x")


def test_a_with_block_step_says_which_forms_are_supported() -> None:
    with (
        pytest.raises(TypeError, match=r"`with self\.step\('fetch'\)` is not supported") as raised,
        Nothing().step("fetch") as step,
    ):
        pytest.fail(f"the body ran with {step!r}")
    assert "self.step('fetch', fn, *args)" in str(raised.value)
    assert "@self.step('fetch')" in str(raised.value)
    assert Nothing().step("fetch")(lambda step: "fetched") == "fetched"  # the decorator form


def test_progress_rejects_what_is_not_a_number() -> None:
    with pytest.raises(TypeError, match="done must be a finite number"):
        Reports(1, 0).progress("half")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="done must be a finite number"):
        Reports(1, 0).progress(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="total must be a finite number or None"):
        Reports(1, 0).progress(1, float("nan"))


# -- steps and snooze without a worker (perform_now) ---------------------------------------------


def test_steps_run_in_order_under_perform_now(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGJOBS_TEST_LOG", str(tmp_path / "jobs.log"))
    job = Stepped(3, 0)
    assert job.perform_inline() == "stepped"
    lines = [line.split(" ", 1)[1] for line in log(tmp_path)]
    assert lines == ["prepare", "item 0", "item 1", "item 2", "finish"]


def test_snooze_reaches_perform_now_callers() -> None:
    with pytest.raises(pgjobs.Snooze):
        Nothing().snooze(5)
    with pytest.raises(TypeError, match="delay must be"):
        pgjobs.Snooze(-1)


def test_a_snoozing_limited_job_gives_its_slot_back(worker: Worker, tmp_path: Any) -> None:
    snoozer = LimitedSnoozes.perform_later("snoozer")
    other = LimitedSnoozes.perform_later("other")
    assert other.state == "blocked"  # behind the snoozer's slot
    drive(worker, lambda: state(other.job_id) == "finished")
    info = pgjobs.get_job(snoozer.job_id)
    assert (info.state, info.attempts, info.errors) == ("scheduled", 0, ())
    assert log(tmp_path) == ["snoozer ran", "other ran"]


class LimitedSnoozes(pgjobs.Job):
    limits_concurrency = pgjobs.limit(to=1, key=lambda tag: "one")

    def perform(self, tag: str) -> None:
        _log_line(f"{tag} ran")
        if tag == "snoozer":
            self.snooze(600)


def test_a_step_whose_completion_cannot_be_written_interrupts_the_job(
    worker: Worker, db: Database, tmp_path: Any
) -> None:
    job = Stepped.perform_later(3, 0.3)
    with Running(worker):
        deadline = time.monotonic() + 10
        while not any("item 0" in line for line in log(tmp_path)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with psycopg.connect(db.url, autocommit=True) as conn:  # the job is taken from us
            conn.execute("DELETE FROM pgjobs_claimed_executions")
        deadline = time.monotonic() + 10
        while pgjobs.get_job(job.job_id).state != "unknown" or worker.in_flight:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    lines = [line.split(" ", 1)[1] for line in log(tmp_path)]
    assert "finish" not in lines  # it stopped at the end of "items" instead of going on
