"""Concurrency slots and unique keys through the worker, dispatcher and supervisor passes.

The passes are called directly on committed data (threads and several connections are needed);
the end-to-end runs with real processes are in ``test_concurrency_e2e.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.config.queue import Config, DispatcherConfig
from pgjobs.db.database import Database
from pgjobs.processes.dispatcher import Dispatcher
from pgjobs.processes.executor import Claimed, Outcome
from pgjobs.processes.supervisor import Supervisor
from pgjobs.processes.worker import Worker
from tests.engine_helpers import scalar, states
from tests.sample_jobs import (
    DiscardWhenBusy,
    LimitedPerStore,
    OneAtATime,
    RebuildIndex,
    RebuildIndexUntilExecuting,
    Record,
)

pytestmark = pytest.mark.committed
CONFIG = Config(heartbeat_interval=30, max_interruptions=2)
STORE_KEY = "tests.sample_jobs:LimitedPerStore/{}"
ONE_KEY = "tests.sample_jobs:OneAtATime"


def slots(db: Database, key: str) -> int | None:
    value = scalar(db.url, "SELECT value FROM pgjobs_semaphores WHERE key = %s", (key,))
    return None if value is None else int(value)


def finish(worker: Worker, claimed: list[Claimed]) -> None:
    """What the worker's loop does with jobs that ended well."""
    for job in claimed:
        worker.in_flight[job.id] = job
        worker.outbox.put(Outcome(job))
    worker._collect()
    worker._finish_keyed()
    worker._finish_only()


def ended(job: Claimed, kind: str, wait: float | None = None) -> Outcome:
    return Outcome(job, RuntimeError("boom"), "Traceback ...", 0.1, kind, wait)  # type: ignore[arg-type]


# -- slots ------------------------------------------------------------------------------------


def test_finishing_gives_the_slot_to_the_next_blocked_job_by_priority(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    for priority in (0, 0, 5, -3):
        LimitedPerStore.set(priority=priority).perform_later("s")
    assert states(db.url) == {"ready": 2, "blocked": 2}
    worker = make_worker()
    first = worker.claim(10)
    assert len(first) == 2 and slots(db, STORE_KEY.format("s")) == 2
    assert worker.claim(10) == []  # blocked jobs are not claimable
    finish(worker, first[:1])
    unblocked = worker.claim(10)
    assert [j.priority for j in unblocked] == [-3]  # the lower number went first
    finish(worker, [first[1], *unblocked])
    assert [j.priority for j in worker.claim(10)] == [5]
    assert slots(db, STORE_KEY.format("s")) == 1
    assert states(db.url) == {"finished": 3, "claimed": 1}


def test_every_way_an_execution_ends_gives_the_slot_back(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    for _ in range(5):
        OneAtATime.perform_later()
    worker = make_worker()
    seen = []
    for kind, wait in (("fail", None), ("discard", None), ("retry", 30.0), ("finish", None)):
        (job,) = worker.claim(10)
        seen.append(job.id)
        assert slots(db, ONE_KEY) == 1
        if kind == "finish":
            finish(worker, [job])
        else:
            worker.in_flight[job.id] = job
            worker.record(ended(job, kind, wait))
    (last,) = worker.claim(10)
    assert last.id not in seen
    assert states(db.url) == {"failed": 1, "finished": 2, "scheduled": 1, "claimed": 1}
    # The job retried later takes a slot again when due: blocked behind the running one.
    dispatcher = Dispatcher(Database(db.url), CONFIG, DispatcherConfig())
    assert dispatcher.dispatch(now=datetime.now(UTC) + timedelta(minutes=1)) == 1
    assert states(db.url)["blocked"] == 1
    finish(worker, [last])
    assert len(worker.claim(10)) == 1
    dispatcher.close()


def test_a_retry_at_once_keeps_its_slot(db: Database, make_worker: Callable[..., Worker]) -> None:
    OneAtATime.perform_later()
    OneAtATime.perform_later()
    worker = make_worker()
    (job,) = worker.claim(10)
    worker.in_flight[job.id] = job
    worker.record(ended(job, "retry", 0.0))
    assert states(db.url) == {"ready": 1, "blocked": 1}
    assert slots(db, ONE_KEY) == 1
    (again,) = worker.claim(10)
    assert again.id == job.id


def test_a_release_behind_an_application_transaction_is_retried_and_then_unblocks(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    """Solid Queue's race — a job blocked in an open transaction while the holder finishes —
    without stalling the worker: the release gives up after the lock timeout, the worker keeps
    claiming other jobs, and a later pass releases the slot and unblocks the committed job."""
    OneAtATime.perform_later()
    worker = make_worker()
    (holder,) = worker.claim(10)
    with psycopg.connect(db.url) as app:  # the app's transaction, left open
        assert OneAtATime.set(connection=app).perform_later().state == "blocked"
        started = time.monotonic()
        finish(worker, [holder])  # waits lock_timeout, then leaves the finish for later
        assert time.monotonic() - started < 2
        assert worker.to_finish_keyed == [holder.id]
        Record.perform_later("unrelated")
        assert [job.class_name for job in worker.claim(10)] == ["tests.sample_jobs:Record"]
        app.commit()
    worker._retry_locked_at = 0.0  # the backoff has passed
    worker._claim_pass()  # finishes, unblocks, and claims the unblocked job
    assert worker.to_finish_keyed == []
    assert states(db.url) == {"finished": 1, "claimed": 2}
    assert slots(db, ONE_KEY) == 1


def test_a_recovered_job_is_finalised_once(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    """The pruner recovers a job while its worker finishes it: the slot is released once."""
    OneAtATime.perform_later()
    OneAtATime.perform_later()
    slow = make_worker()
    (job,) = slow.claim(10)
    supervisor = Supervisor(Database(db.url), CONFIG)
    supervisor.recover([slow.id])  # re-queued: it keeps its slot
    assert states(db.url) == {"ready": 1, "blocked": 1}
    finish(slow, [job])  # the old worker's late finish is not ours any more: nothing released
    assert slots(db, ONE_KEY) == 1
    assert states(db.url) == {"ready": 1, "blocked": 1}
    other = make_worker()
    finish(other, other.claim(10))
    assert states(db.url) == {"finished": 1, "ready": 1}
    assert slots(db, ONE_KEY) == 1
    supervisor.close()


def test_a_job_failed_after_interruptions_gives_its_slot_back(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    OneAtATime.perform_later()
    OneAtATime.perform_later()
    supervisor = Supervisor(Database(db.url), CONFIG)
    for _ in range(CONFIG.max_interruptions):
        worker = make_worker()
        assert len(worker.claim(10)) == 1
        supervisor.recover([worker.id])
    assert states(db.url) == {"failed": 1, "ready": 1}
    assert slots(db, ONE_KEY) == 1
    supervisor.close()


def test_due_scheduled_limited_jobs_take_slots_or_wait(db: Database) -> None:
    for _ in range(3):
        LimitedPerStore.set(wait=30).perform_later("later")
    DiscardWhenBusy.perform_later("busy")
    DiscardWhenBusy.set(wait=30).perform_later("busy")
    dispatcher = Dispatcher(Database(db.url), CONFIG, DispatcherConfig())
    assert dispatcher.dispatch(now=datetime.now(UTC) + timedelta(minutes=1)) == 4
    assert slots(db, STORE_KEY.format("later")) == 2
    discarded = scalar(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE discarded_at IS NOT NULL")
    assert states(db.url) == {"ready": 3, "blocked": 1, "finished": 1} and discarded == 1
    dispatcher.close()


def test_maintenance_frees_slots_of_dead_holders_only(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    OneAtATime.perform_later()
    OneAtATime.perform_later()
    LimitedPerStore.perform_later("alive")
    LimitedPerStore.perform_later("alive")
    LimitedPerStore.perform_later("alive")
    dead, alive = make_worker(), make_worker()
    assert len(dead.claim(1)) == 1  # OneAtATime's holder: its process will look dead
    assert len(alive.claim(5)) == 2
    later = datetime.now(UTC) + timedelta(minutes=5)
    with psycopg.connect(db.url) as conn:
        conn.execute(
            "UPDATE pgjobs_processes SET last_heartbeat_at = %s WHERE id <> %s",
            (later, dead.id),
        )
    dispatcher = Dispatcher(Database(db.url), CONFIG, DispatcherConfig())
    expired, unblocked = dispatcher.maintain(now=later)
    assert expired == 1  # OneAtATime's; the live worker keeps LimitedPerStore's
    assert unblocked.readied == 1
    assert slots(db, ONE_KEY) == 1 and slots(db, STORE_KEY.format("alive")) == 2
    assert states(db.url) == {"claimed": 3, "ready": 1, "blocked": 1}
    dispatcher.close()


# -- unique keys ------------------------------------------------------------------------------


def key_of(db: Database, job_id: Any) -> str | None:
    value = scalar(db.url, "SELECT unique_key FROM pgjobs_jobs WHERE job_id = %s", (job_id,))
    return None if value is None else str(value)


def test_until_executed_holds_the_key_while_running(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    first = RebuildIndex.perform_later("idx")
    worker = make_worker()
    (job,) = worker.claim(10)
    assert RebuildIndex.perform_later("idx").state == "duplicate"
    finish(worker, [job])
    assert key_of(db, first.job_id) is None
    assert RebuildIndex.perform_later("idx").enqueued


def test_until_executing_releases_the_key_at_claim(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    RebuildIndexUntilExecuting.perform_later("idx")
    assert RebuildIndexUntilExecuting.perform_later("idx").state == "duplicate"
    worker = make_worker()
    worker._claim_pass()  # claims, releases the key, hands the job to a thread
    assert RebuildIndexUntilExecuting.perform_later("idx").enqueued


def test_a_final_failure_releases_the_key_and_a_retry_keeps_it(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    first = RebuildIndex.perform_later("f")
    worker = make_worker()
    (job,) = worker.claim(10)
    worker.in_flight[job.id] = job
    worker.record(ended(job, "retry", 30.0))
    assert RebuildIndex.perform_later("f").state == "duplicate"
    dispatcher = Dispatcher(Database(db.url), CONFIG, DispatcherConfig())
    dispatcher.dispatch(now=datetime.now(UTC) + timedelta(minutes=1))
    (job,) = worker.claim(10)
    worker.in_flight[job.id] = job
    worker.record(ended(job, "fail"))
    assert key_of(db, first.job_id) is None
    assert RebuildIndex.perform_later("f").enqueued
    dispatcher.close()


def test_eight_threads_racing_one_key_leave_one_job(db: Database) -> None:
    barrier = threading.Barrier(8)
    results: list[pgjobs.EnqueuedJob] = []
    lock = threading.Lock()

    def enqueue() -> None:
        with psycopg.connect(db.url) as conn:  # each in its own transaction, committed
            barrier.wait()
            result = RebuildIndex.set(connection=conn).perform_later("raced")
            time.sleep(0.05)  # hold the transaction open: the others must wait, not slip past
            conn.commit()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [r for r in results if r.enqueued]
    assert len(results) == 8 and len(winners) == 1
    assert {r.duplicate_of for r in results if not r.enqueued} == {winners[0].job_id}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_jobs") == 1


def test_status_shows_slots_and_blocked_jobs(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from pgjobs.cli.main import main

    for _ in range(3):
        LimitedPerStore.perform_later("status")
    assert main(["status", "--json", "--database-url", db.url]) == 0
    shown = json.loads(capsys.readouterr().out)
    key = STORE_KEY.format("status")
    assert shown["concurrency"] == [{"key": key, "holding": 2, "blocked": 1}]
    assert main(["status", "--database-url", db.url]) == 0
    text = capsys.readouterr().out
    assert "CONCURRENCY KEY" in text and key in text


def test_recovery_keeps_the_key_of_a_requeued_job_and_frees_a_failed_ones(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    first = RebuildIndex.perform_later("recovered")
    supervisor = Supervisor(Database(db.url), CONFIG)
    worker = make_worker()
    assert len(worker.claim(10)) == 1
    supervisor.recover([worker.id])  # interrupted once of 2: back to ready, still unique
    assert key_of(db, first.job_id) is not None
    assert RebuildIndex.perform_later("recovered").state == "duplicate"
    worker = make_worker()
    assert len(worker.claim(10)) == 1
    supervisor.recover([worker.id])  # twice: failed with ProcessExitError, key released
    assert states(db.url) == {"failed": 1}
    assert RebuildIndex.perform_later("recovered").enqueued
    supervisor.close()


def test_a_discard_releases_the_key(db: Database, make_worker: Callable[..., Worker]) -> None:
    first = RebuildIndex.perform_later("discarded")
    worker = make_worker()
    (job,) = worker.claim(10)
    worker.in_flight[job.id] = job
    worker.record(ended(job, "discard"))
    assert key_of(db, first.job_id) is None
    assert RebuildIndex.perform_later("discarded").enqueued


def test_maintenance_reaches_every_key_past_a_long_expired_backlog(
    db: Database, make_worker: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgjobs.operations import concurrency

    monkeypatch.setattr(concurrency, "KEYS_PER_PAGE", 1)  # one key per statement of the walk
    for _ in range(5):  # one running, four blocked behind it
        OneAtATime.perform_later()
    LimitedPerStore.perform_later("b")
    LimitedPerStore.perform_later("b")
    LimitedPerStore.perform_later("b")  # blocked
    with psycopg.connect(db.url, autocommit=True) as conn:
        # Store b's slot was given back by a worker that died before unblocking: free a slot.
        conn.execute(
            "UPDATE pgjobs_semaphores SET value = 1 WHERE key = %s", (STORE_KEY.format("b"),)
        )
        # Everything blocked expired long ago, OneAtATime's oldest.
        conn.execute(
            "UPDATE pgjobs_blocked_executions SET expires_at = now() - interval '1 hour' - "
            "CASE WHEN concurrency_key = %s THEN interval '1 day' ELSE interval '0' END",
            (ONE_KEY,),
        )
    dispatcher = Dispatcher(Database(db.url), CONFIG, DispatcherConfig())
    _, unblocked = dispatcher.maintain()
    assert unblocked.readied == 1  # store b's job, though OneAtATime's expired rows come first
    assert slots(db, STORE_KEY.format("b")) == 2
    dispatcher.close()


def test_a_dispatcher_that_reconnected_unblocks_every_key(db: Database) -> None:
    OneAtATime.perform_later()
    OneAtATime.perform_later()  # blocked
    with psycopg.connect(db.url, autocommit=True) as conn:  # the slot came back, unannounced
        conn.execute("UPDATE pgjobs_semaphores SET value = 0")
    dispatcher = Dispatcher(Database(db.url), CONFIG, DispatcherConfig())
    dispatcher.dispatch()
    assert states(db.url) == {"ready": 1, "blocked": 1}  # nothing says the key needs it
    dispatcher.reconnected = True  # as after a lost connection
    dispatcher.dispatch()
    assert states(db.url) == {"ready": 2}
    assert dispatcher.reconnected is False
    dispatcher.close()
