"""Claiming ahead (the ``prefetch`` worker key): an in-process worker with real job threads on a
real PostgreSQL.  A worker claims more jobs than it has idle threads once it knows its jobs are
short; the jobs waiting for a thread are claimed (their rows in claimed), go back to ready,
uncounted, when it stops or when one waited too long, are cancelled without running when asked
to stop, and jobs that must start as soon as they are claimed are never among them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

import pgjobs
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.processes import prefetch
from pgjobs.processes.executor import Claimed
from pgjobs.processes.worker import Worker
from pgjobs.store.control import CANCEL_PAYLOAD
from tests.engine_helpers import Running, drive, scalar, states, wait_for
from tests.sample_jobs import RatePerAccount, RebuildIndexUntilExecuting

pytestmark = pytest.mark.committed
GATE = threading.Event()  # Held jobs run until it is set
STARTED: list[str] = []  # the tags of the jobs that started, in order


class Held(pgjobs.Job):
    def perform(self, tag: str) -> None:
        STARTED.append(tag)
        GATE.wait(20)


class Quick(pgjobs.Job):
    def perform(self, tag: str) -> None:
        STARTED.append(tag)


@pytest.fixture(autouse=True)
def _gate() -> Iterator[None]:
    GATE.clear()
    STARTED.clear()
    yield
    GATE.set()


@pytest.fixture
def make(db: Database) -> Iterator[Callable[..., Worker]]:
    """Workers with their job threads started; stopped (buffer given back) after the test."""
    made: list[Worker] = []

    def make(threads: int = 1, prefetch: int = 10, start: bool = True) -> Worker:
        worker = Worker(
            Database(db.url),
            Config(heartbeat_interval=30, shutdown_timeout=5),
            WorkerConfig(threads=threads, prefetch=prefetch),
        )
        worker.register()
        if start:
            worker.on_start()
        made.append(worker)
        return worker

    yield make
    GATE.set()
    for worker in made:
        worker.stop()
        worker.shutdown()
        worker.close()


def claims_of(worker: Worker) -> list[tuple[int, int]]:
    """Record ``(limit, claimed)`` of each claim the worker makes from now on."""
    seen: list[tuple[int, int]] = []
    original = worker.claim

    def claim(limit: int) -> list[Claimed]:
        got = original(limit)
        seen.append((limit, len(got)))
        return got

    worker.claim = claim  # type: ignore[method-assign]
    return seen


def knows_short_jobs(worker: Worker) -> None:
    """As if the worker had run jobs of a millisecond each."""
    worker.buffer.ended(0.001, time.monotonic())


def held_then_quick(n: int) -> tuple[pgjobs.EnqueuedJob, list[pgjobs.EnqueuedJob]]:
    held = Held.perform_later("held")
    return held, [Quick.perform_later(f"quick {i}") for i in range(n)]


def counts(url: str) -> tuple[int, int]:
    """(executions, interruptions) summed over the jobs."""
    row = scalar(url, "SELECT ARRAY[sum(executions), sum(interruptions)] FROM pgjobs_jobs")
    return int(row[0]), int(row[1])


def test_a_worker_claims_more_jobs_than_threads_once_it_knows_they_are_short(
    make: Callable[..., Worker], db: Database
) -> None:
    for i in range(40):
        Quick.perform_later(f"q{i}")
    worker = make(threads=2, prefetch=10)
    seen = claims_of(worker)
    drive(worker, lambda: states(db.url) == {"finished": 40})
    assert seen[0] == (2, 2)  # no job has ended yet: nothing ahead of the idle threads
    assert max(limit for limit, _ in seen) == 12  # 2 idle threads + the 10 of prefetch
    assert max(got for _, got in seen) > 2
    assert len(STARTED) == 40 == len(set(STARTED))


def test_prefetch_zero_claims_for_idle_threads_only(
    make: Callable[..., Worker], db: Database
) -> None:
    for i in range(12):
        Quick.perform_later(f"q{i}")
    worker = make(threads=2, prefetch=0)
    seen = claims_of(worker)
    drive(worker, lambda: states(db.url) == {"finished": 12})
    assert max(limit for limit, _ in seen) == 2


def test_what_the_threads_cannot_start_soon_is_not_claimed_ahead(
    make: Callable[..., Worker],
) -> None:
    worker = make(threads=4, prefetch=1000, start=False)
    now = time.monotonic()
    assert worker.buffer.room(now) == 0  # no job ended yet
    worker.buffer.ended(0.001, now)
    assert worker.buffer.room(now) == 200  # 4 threads x 50 ms / 1 ms
    worker.buffer.ended(0.1, now)
    assert worker.buffer.room(now) == 2
    worker.buffer.ended(1.0, now)
    assert worker.buffer.room(now) == 0  # second-long jobs: none ahead


def test_jobs_waiting_for_a_thread_are_claimed_and_given_back_uncounted_on_stop(
    make: Callable[..., Worker], db: Database
) -> None:
    held_then_quick(5)
    worker = make(threads=1, prefetch=10)
    knows_short_jobs(worker)
    worker.poll()
    wait_for(lambda: STARTED == ["held"])
    assert states(db.url) == {"claimed": 6}  # the held job runs; the five wait, claimed
    assert worker.buffer.waiting() == 5
    worker.stop()
    stopping = threading.Thread(target=worker.shutdown)
    stopping.start()
    # The waiting jobs go back at once, while the running one is left to finish.
    wait_for(lambda: states(db.url) == {"claimed": 1, "ready": 5}, timeout=3)
    GATE.set()
    stopping.join(10)
    assert states(db.url) == {"finished": 1, "ready": 5}
    assert STARTED == ["held"]  # none of the five started
    assert counts(db.url) == (1, 0)  # given back: not counted as attempts or interruptions


def test_a_long_job_does_not_hold_the_jobs_waiting_behind_it_beyond_the_bound(
    make: Callable[..., Worker], db: Database
) -> None:
    held_then_quick(5)
    busy = make(threads=1, prefetch=10)
    knows_short_jobs(busy)
    with Running(busy):
        wait_for(lambda: STARTED == ["held"])
        claimed_at = time.monotonic()
        assert states(db.url) == {"claimed": 6}
        wait_for(lambda: states(db.url).get("ready") == 5, interval=0.01)
        waited = time.monotonic() - claimed_at
        # No job ended since their claim: every thread is held, they go back after STALL.
        assert waited <= prefetch.STALL + 0.4
        # An idle worker runs them while the long job still holds the first one's thread...
        idle = make(threads=2, prefetch=10)
        drive(idle, lambda: states(db.url) == {"claimed": 1, "finished": 5})
        assert STARTED[0] == "held" and sorted(STARTED[1:]) == [f"quick {i}" for i in range(5)]
        # ...and the busy worker claims nothing ahead again until one of its jobs ends.
        assert busy.buffer.room(time.monotonic()) == 0
        for i in range(3):
            Quick.perform_later(f"later {i}")
        time.sleep(0.3)
        assert states(db.url) == {"claimed": 1, "finished": 5, "ready": 3}
        GATE.set()
        wait_for(lambda: states(db.url) == {"finished": 9})
    assert counts(db.url) == (9, 0)


class Slowish(pgjobs.Job):
    def perform(self, tag: str) -> None:
        STARTED.append(tag)
        time.sleep(0.05)


def test_jobs_that_wait_long_go_back_even_while_other_jobs_end(
    make: Callable[..., Worker], db: Database
) -> None:
    Held.perform_later("held")
    for i in range(20):
        Slowish.perform_later(f"slowish {i}")
    worker = make(threads=2, prefetch=20)
    knows_short_jobs(worker)  # 20 claimed ahead: a second's work for the one thread left
    claimed_at = time.monotonic()
    with Running(worker):
        wait_for(lambda: "held" in STARTED, interval=0.01)
        assert states(db.url) == {"claimed": 21}
        wait_for(lambda: states(db.url).get("ready", 0) > 0, timeout=3, interval=0.01)
        waited = time.monotonic() - claimed_at
        assert prefetch.GIVE_BACK_AFTER - 0.1 <= waited <= prefetch.GIVE_BACK_AFTER + 0.4
        back = states(db.url)["ready"]
        assert 0 < back < 20  # some ran meanwhile on the free thread; those left went back
        GATE.set()
    assert counts(db.url)[1] == 0


def test_a_job_asked_to_stop_while_it_waits_for_a_thread_is_cancelled_without_running(
    make: Callable[..., Worker], db: Database
) -> None:
    _, quick = held_then_quick(2)
    worker = make(threads=1, prefetch=10)
    knows_short_jobs(worker)
    with Running(worker):
        wait_for(lambda: STARTED == ["held"])
        assert pgjobs.cancel(quick[0].job_id) == "cancelling"  # claimed: it may be running
        worker._notified(CANCEL_PAYLOAD)  # as the host's listener relays the request
        wait_for(lambda: pgjobs.get_job(quick[0].job_id).state == "cancelled", timeout=5)
        assert pgjobs.get_job(quick[0].job_id).attempts == 0
        GATE.set()
        wait_for(lambda: states(db.url) == {"finished": 3})
    assert STARTED == ["held", "quick 1"]


class LimitedHeld(pgjobs.Job):
    limits_concurrency = pgjobs.limit(to=2, key=lambda tag: "k", duration=60)

    def perform(self, tag: str) -> None:
        STARTED.append(tag)
        GATE.wait(20)


def test_a_limited_job_given_back_from_the_buffer_keeps_its_slot_and_the_limit_holds(
    make: Callable[..., Worker], db: Database
) -> None:
    for tag in ("a", "b", "c"):
        LimitedHeld.perform_later(tag)  # a and b take the two slots; c waits, blocked
    slots = "SELECT value FROM pgjobs_semaphores"
    busy = make(threads=1, prefetch=10)
    knows_short_jobs(busy)
    with Running(busy):
        wait_for(lambda: STARTED == ["a"])
        # b waited behind a, which holds the only thread: back to ready, still holding its slot.
        wait_for(lambda: states(db.url) == {"claimed": 1, "ready": 1, "blocked": 1}, timeout=3)
        assert scalar(db.url, slots) == 2
        idle = make(threads=2, prefetch=10)
        drive(idle, lambda: STARTED == ["a", "b"])
        time.sleep(0.2)
        assert states(db.url) == {"claimed": 2, "blocked": 1}  # never a third at once
        GATE.set()
        with Running(idle):
            wait_for(lambda: states(db.url) == {"finished": 3}, timeout=10)
    assert sorted(STARTED) == ["a", "b", "c"]
    assert scalar(db.url, slots) == 0
    assert counts(db.url) == (3, 0)


def test_rate_limited_jobs_are_never_claimed_ahead(
    make: Callable[..., Worker], db: Database
) -> None:
    for seq in range(5):
        RatePerAccount.perform_later("a", seq)
    worker = make(threads=1, prefetch=10, start=False)
    knows_short_jobs(worker)
    worker.poll()
    # One start token for the idle thread; the other four went back to ready, no token taken.
    assert states(db.url) == {"claimed": 1, "ready": 4}
    assert scalar(db.url, "SELECT cardinality(starts) FROM pgjobs_rate_limits") == 1
    assert worker.buffer.room(time.monotonic()) == 0  # for a while: idle threads only
    assert counts(db.url) == (0, 0)


def test_jobs_unique_until_executing_are_never_claimed_ahead(
    make: Callable[..., Worker], db: Database
) -> None:
    for name in ("a", "b", "c"):
        RebuildIndexUntilExecuting.perform_later(name)
    worker = make(threads=1, prefetch=10, start=False)
    knows_short_jobs(worker)
    worker.poll()
    assert states(db.url) == {"claimed": 1, "ready": 2}
    # Only the claimed job's key was released (it starts now); the others still hold theirs.
    keys = scalar(db.url, "SELECT count(unique_key) FROM pgjobs_jobs")
    assert keys == 2


def test_the_buffer_is_given_back_when_a_worker_stops_with_nothing_running(
    make: Callable[..., Worker], db: Database
) -> None:
    for i in range(6):
        Quick.perform_later(f"q{i}")
    worker = make(threads=2, prefetch=10, start=False)  # no threads: every job waits
    knows_short_jobs(worker)
    worker.poll()
    assert states(db.url) == {"claimed": 6}
    worker.stop()
    worker.shutdown()
    worker.deregister()
    assert states(db.url) == {"ready": 6}
    assert counts(db.url) == (0, 0)
