"""pgjobs.testing: capture and inline adapters, assertions, fixtures.  No database is used."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import pgjobs
from pgjobs.enqueue import core as enqueue
from pgjobs.pytest_plugin import pgjobs_capture, pgjobs_inline  # noqa: F401  (fixtures)
from pgjobs.testing import AT_TOLERANCE, TestAdapter, TooManyJobsError, capture_jobs, inline_jobs
from tests import sample_jobs
from tests.sample_jobs import (
    AsyncChild,
    Child,
    SendWelcomeEmail,
    async_function_job,
    noop_job,
    rebuild_index,
)

log: list[str] = []


COUNTDOWN_2 = [f"countdown {n} {e}" for n in (2, 1, 0) for e in ("start", "end")]


class Countdown(pgjobs.Job):
    """Enqueues itself with n - 1 until n reaches 0."""

    queue_as = "chains"

    def perform(self, n: int) -> int:
        log.append(f"countdown {n} start")
        if n > 0:
            Countdown.perform_later(n - 1)
        log.append(f"countdown {n} end")
        return n


class Forever(pgjobs.Job):
    def perform(self) -> None:
        Forever.perform_later()


class Echo(pgjobs.Job):
    def perform(self, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, kwargs


class Boom(pgjobs.Job):
    def perform(self) -> None:
        raise ValueError("boom")


class AsyncFanOut(pgjobs.Job):
    async def perform(self, n: int) -> int:
        await asyncio.sleep(0)
        for i in range(n):
            await async_function_job.perform_later_async(i)
        return n


@pytest.fixture(autouse=True)
def _clean_logs() -> Iterator[None]:
    log.clear()
    sample_jobs.EVENTS.clear()
    yield
    assert enqueue._adapter is None, "a test left an adapter installed"


# -- capture ------------------------------------------------------------------------------------


def test_capture_records_class_args_queue_priority_and_schedule() -> None:
    with capture_jobs() as jobs:
        now = datetime.now(UTC)
        handle = SendWelcomeEmail.perform_later(42)
        later = SendWelcomeEmail.set(wait=60, queue="urgent", priority=3).perform_later(user_id=7)
    assert sample_jobs.EVENTS == []  # nothing ran
    first, second = jobs.enqueued
    assert first.job_class is SendWelcomeEmail and first.args == (42,) and first.kwargs == {}
    assert (first.queue, first.priority, first.scheduled_at) == ("mailers", 0, None)
    assert first.job_id == handle.job_id and first.job.job_id == handle.job_id
    assert handle.class_name == "tests.sample_jobs:SendWelcomeEmail" and not handle.scheduled
    assert second.kwargs == {"user_id": 7} and (second.queue, second.priority) == ("urgent", 3)
    assert second.scheduled_at is not None and later.scheduled_at == second.scheduled_at
    assert abs(second.scheduled_at - (now + timedelta(seconds=60))) < AT_TOLERANCE
    assert jobs.performed == []


def test_capture_restores_the_previous_adapter() -> None:
    with capture_jobs() as outer:
        with capture_jobs() as inner:
            SendWelcomeEmail.perform_later(1)
        assert enqueue._adapter is outer
        SendWelcomeEmail.perform_later(2)
    assert enqueue._adapter is None
    assert [r.args for r in inner.enqueued] == [(1,)] and [r.args for r in outer.enqueued] == [(2,)]


def test_every_way_of_enqueueing_is_captured() -> None:
    with capture_jobs() as jobs:
        SendWelcomeEmail.set(queue="q1").perform_later(1)
        rebuild_index.perform_later("products")
        rebuild_index.set(queue="slow", wait_until=datetime(2100, 1, 1, tzinfo=UTC)).perform_later(
            "users"
        )
        pgjobs.perform_all_later([SendWelcomeEmail(2), rebuild_index.build("orders")])
        asyncio.run(SendWelcomeEmail.perform_later_async(3))
        asyncio.run(pgjobs.perform_all_later_async([noop_job.build(4)]))
    jobs.assert_enqueued_jobs(7)
    jobs.assert_enqueued_jobs(3, job=rebuild_index)
    jobs.assert_enqueued_jobs(2, job=rebuild_index, queue="indexing")
    jobs.assert_enqueued_with(job=rebuild_index, args=["products"], queue="indexing", priority=5)
    jobs.assert_enqueued_with(job=rebuild_index, at=datetime(2100, 1, 1, tzinfo=UTC))
    jobs.assert_enqueued_with(job="tests.sample_jobs:noop_job", args=(4,))
    jobs.assert_enqueued_with(job="SendWelcomeEmail", args=(3,))


def test_enqueue_callbacks_run_when_capturing() -> None:
    with capture_jobs() as jobs:
        Child.perform_later(5)
    assert sample_jobs.EVENTS == ["before enqueue default", "after enqueue"]
    jobs.assert_enqueued_with(job=Child, args=(5,))


def test_arguments_are_round_tripped_like_in_production() -> None:
    items = [1, 2]
    when = datetime(2030, 5, 1, 12, tzinfo=UTC)
    with capture_jobs() as jobs:
        Echo.perform_later(items, (1, "a"), when=when, amount=Decimal("1.10"))
    items.append(3)  # mutating after enqueue does not change what the job receives
    record = jobs.enqueued[0]
    assert record.args == ([1, 2], (1, "a")) and record.args[0] is not items
    assert record.kwargs == {"when": when, "amount": Decimal("1.10")}
    assert record.job.args is record.args and record.job.kwargs is record.kwargs
    (result,) = jobs.perform_enqueued_jobs()
    assert result == (([1, 2], (1, "a")), {"when": when, "amount": Decimal("1.10")})


def test_unserializable_arguments_fail_even_when_capturing() -> None:
    with capture_jobs() as jobs:
        with pytest.raises(pgjobs.SerializationError, match=r"argument 1 .*SendWelcomeEmail"):
            SendWelcomeEmail.perform_later(1, object())
        with pytest.raises(pgjobs.SerializationError, match="keyword argument 'lock'"):
            rebuild_index.perform_later(name="x", lock=threading.Lock())
        with pytest.raises(pgjobs.SerializationError):
            pgjobs.perform_all_later([Echo({1, 2}), Echo(object())])
    assert [r.args for r in jobs.enqueued] == [({1, 2},)]  # bulk adds the jobs one by one


def test_bad_options_fail_as_in_production() -> None:
    with capture_jobs() as jobs:
        with pytest.raises(pgjobs.ConfigurationError, match="timezone-aware"):
            Echo.set(wait_until=datetime(2030, 1, 1)).perform_later()
        with pytest.raises(pgjobs.ConfigurationError, match="priority must be an int"):
            Echo.set(priority="high").perform_later()  # type: ignore[arg-type]
    jobs.assert_no_enqueued_jobs()
    with pytest.raises(ValueError, match="mode"):
        TestAdapter("later")  # type: ignore[arg-type]


# -- performing captured jobs -------------------------------------------------------------------


def test_perform_enqueued_jobs_runs_chains_in_enqueue_order() -> None:
    with capture_jobs() as jobs:
        Countdown.perform_later(2)
        SendWelcomeEmail.perform_later(9)
        jobs.assert_enqueued_jobs(2)
        assert jobs.perform_enqueued_jobs() == [2, 9, 1, 0]
    assert log == COUNTDOWN_2
    jobs.assert_no_enqueued_jobs()
    jobs.assert_performed_jobs(4)
    jobs.assert_performed_jobs(3, job=Countdown)
    assert [r.args for r in jobs.performed] == [(2,), (9,), (1,), (0,)]


def test_perform_enqueued_jobs_with_only_and_at() -> None:
    with capture_jobs() as jobs:
        SendWelcomeEmail.perform_later(1)
        rebuild_index.perform_later("a")
        SendWelcomeEmail.set(wait=3600).perform_later(2)
        Echo.perform_later("e")
        assert jobs.perform_enqueued_jobs(only=rebuild_index) == ["a"]
        assert jobs.perform_enqueued_jobs(only=[Echo, SendWelcomeEmail], at=datetime.now(UTC)) == [
            1,
            (("e",), {}),
        ]
        jobs.assert_enqueued_with(job=SendWelcomeEmail, args=(2,))
        assert jobs.perform_enqueued_jobs(only=lambda r: r.args == (2,)) == [2]
    jobs.assert_no_enqueued_jobs()


def test_perform_enqueued_jobs_captures_nested_jobs_after_the_block() -> None:
    with capture_jobs() as jobs:
        Countdown.perform_later(1)
    assert jobs.perform_enqueued_jobs() == [1, 0]  # installs itself meanwhile: no database
    assert enqueue._adapter is None


def test_perform_enqueued_jobs_stops_endless_chains() -> None:
    with capture_jobs(max_jobs=50) as jobs:
        Forever.perform_later()
        with pytest.raises(TooManyJobsError, match=r"more than 50 jobs .*Forever\(\)"):
            jobs.perform_enqueued_jobs()
    jobs.assert_performed_jobs(50)


def test_a_failing_job_stops_perform_enqueued_jobs() -> None:
    with capture_jobs() as jobs:
        Boom.perform_later()
        Echo.perform_later(1)
        with pytest.raises(ValueError, match="boom"):
            jobs.perform_enqueued_jobs()
        jobs.assert_performed_jobs(1, job=Boom)
        jobs.assert_enqueued_with(job=Echo, args=(1,))
        assert jobs.perform_enqueued_jobs() == [((1,), {})]


def test_perform_enqueued_jobs_runs_callbacks_and_async_jobs() -> None:
    with capture_jobs() as jobs:
        Child.perform_later(3)
        AsyncChild.perform_later(4)
        async_function_job.perform_later(5)
        sample_jobs.EVENTS.clear()
        assert jobs.perform_enqueued_jobs() == [6, 5, 15]
    assert sample_jobs.EVENTS == [
        "base before",
        "child before",
        "base around in",
        "perform 3 attempt 0",
        "base around out",
        "child after",
        "base after",
        "base before",
        "async around in",
        "async perform 4",
        "async around out",
        "base after",
    ]


def test_perform_enqueued_jobs_inside_a_running_event_loop() -> None:
    async def main(jobs: TestAdapter) -> tuple[list[Any], list[Any]]:
        await AsyncFanOut.perform_later_async(2)
        on_threads = jobs.perform_enqueued_jobs()  # asyncio.run on a helper thread
        await AsyncFanOut.perform_later_async(1)
        return on_threads, await jobs.perform_enqueued_jobs_async()

    with capture_jobs() as jobs:
        assert asyncio.run(main(jobs)) == ([2, 0, 3], [1, 0])


def test_clear_forgets_everything() -> None:
    with capture_jobs() as jobs:
        Countdown.perform_later(1)
        jobs.perform_enqueued_jobs(only=lambda r: r.args == (1,))
        jobs.clear()
    assert jobs.enqueued == [] and jobs.performed == []


# -- inline -------------------------------------------------------------------------------------


def test_inline_performs_jobs_and_what_they_enqueue() -> None:
    with inline_jobs() as jobs:
        handle = Countdown.perform_later(2)
        assert log == COUNTDOWN_2
        Child.perform_later(1)
    assert handle.class_name.endswith(":Countdown") and handle.queue_name == "chains"
    assert "perform 1 attempt 0" in sample_jobs.EVENTS and "base after" in sample_jobs.EVENTS
    jobs.assert_no_enqueued_jobs()
    jobs.assert_performed_jobs(3, job=Countdown)
    jobs.assert_performed_jobs(1, job=Child)


def test_inline_propagates_errors_and_stops_endless_chains() -> None:
    with inline_jobs(max_jobs=20) as jobs:
        with pytest.raises(ValueError, match="boom"):
            Boom.perform_later()
        with pytest.raises(TooManyJobsError):
            Forever.perform_later()
        Echo.perform_later(1)  # the adapter is usable again
    jobs.assert_performed_jobs(1, job=Echo)


def test_inline_async_jobs_with_and_without_a_running_loop() -> None:
    with inline_jobs() as jobs:
        AsyncFanOut.perform_later(2)
        asyncio.run(AsyncFanOut.perform_later_async(1))
    assert [r.job_class.__name__ for r in jobs.performed] == [
        *["AsyncFanOut", "async_function_job", "async_function_job"],
        *["AsyncFanOut", "async_function_job"],
    ]


# -- assertion messages -------------------------------------------------------------------------


def test_assertions_fail_with_a_listing_of_what_was_enqueued() -> None:
    with capture_jobs() as jobs:
        with pytest.raises(
            AssertionError, match=r"expected 1 enqueued job, found 0\.\nNo jobs were"
        ):
            jobs.assert_enqueued_jobs(1)
        SendWelcomeEmail.perform_later(42)
        rebuild_index.set(wait=60).perform_later(name="users")
        with pytest.raises(AssertionError) as failed:
            jobs.assert_enqueued_jobs(2, job=SendWelcomeEmail, queue="mailers")
    message = str(failed.value)
    assert message.startswith(
        "expected 2 enqueued jobs (job=SendWelcomeEmail, queue='mailers'), found 1.\n"
        "Jobs enqueued (2):\n  SendWelcomeEmail(42) queue='mailers'\n"
        "  rebuild_index(name='users') queue='indexing' priority=5 at="
    )
    expected = (
        r"no enqueued job matches \(job=SendWelcomeEmail, args=\(43,\)\)\.\n"
        r"Jobs enqueued \(2\):\n  SendWelcomeEmail\(42\)"
    )
    with pytest.raises(AssertionError, match=expected):
        jobs.assert_enqueued_with(job=SendWelcomeEmail, args=[43])
    with pytest.raises(AssertionError, match="no enqueued job matches"):
        jobs.assert_enqueued_with(job=SendWelcomeEmail, at=datetime.now(UTC))
    with pytest.raises(AssertionError, match="no enqueued job matches"):
        jobs.assert_enqueued_with(kwargs={"name": "products"})
    with pytest.raises(AssertionError, match=r"expected 0 enqueued jobs \(job=rebuild_index\)"):
        jobs.assert_no_enqueued_jobs(job=rebuild_index)
    with pytest.raises(AssertionError, match="expected 1 performed job, found 0"):
        jobs.assert_performed_jobs(1)


def test_assert_enqueued_with_at_allows_one_second() -> None:
    with capture_jobs() as jobs:
        SendWelcomeEmail.set(wait=timedelta(minutes=5)).perform_later(1)
    target = datetime.now(UTC) + timedelta(minutes=5)
    record = jobs.assert_enqueued_with(at=target)
    assert record.args == (1,)
    with pytest.raises(AssertionError):
        jobs.assert_enqueued_with(at=target + timedelta(seconds=2))


# -- pytest fixtures ----------------------------------------------------------------------------


def test_capture_fixture(pgjobs_capture: TestAdapter) -> None:  # noqa: F811
    assert enqueue._adapter is pgjobs_capture and pgjobs_capture.mode == "capture"
    SendWelcomeEmail.perform_later(1)
    pgjobs_capture.assert_enqueued_with(job=SendWelcomeEmail, args=(1,))


def test_inline_fixture(pgjobs_inline: TestAdapter) -> None:  # noqa: F811
    assert pgjobs_inline.mode == "inline"
    Countdown.perform_later(1)
    pgjobs_inline.assert_performed_jobs(2)
