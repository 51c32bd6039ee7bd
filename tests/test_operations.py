"""Operators acting on waiting jobs (``pgjobs.operations.waiting.WaitingJobs``): discarding ready,
scheduled and blocked jobs, running scheduled jobs now, and the races with workers and the
dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

import pgjobs
import pgjobs.operations.waiting
from pgjobs import clock
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.operations.waiting import WaitingJobs
from pgjobs.processes.worker import Worker
from tests.engine_helpers import scalar, states
from tests.sample_jobs import OneAtATime, Record, StrictUnique, UniqueAndLimited

pytestmark = pytest.mark.committed


@pytest.fixture
def worker(db: Database) -> Iterator[Worker]:
    made = Worker(Database(db.url), Config(heartbeat_interval=30), WorkerConfig(threads=100))
    made.register()
    yield made
    made.stop()
    made.close()


def semaphore(db: Database, key: str | None = None) -> int | None:
    return scalar(  # type: ignore[no-any-return]
        db.url,
        "SELECT sum(value)::int FROM pgjobs_semaphores WHERE %s::text IS NULL OR key = %s",
        [key, key],
    )


def discarded(db: Database) -> int:
    return scalar(  # type: ignore[no-any-return]
        db.url,
        "SELECT count(*)::int FROM pgjobs_jobs WHERE discarded_at IS NOT NULL "
        "AND finished_at = discarded_at",
    )


def test_discard_one_job_in_each_waiting_state(db: Database) -> None:
    ready = Record.perform_later("r")
    scheduled = Record.set(wait=3600).perform_later("s")
    holder = OneAtATime.perform_later()
    blocked = OneAtATime.perform_later()
    waiting = WaitingJobs()
    assert waiting.state(blocked.job_id) == "blocked"
    assert semaphore(db) == 1
    for job in (ready, scheduled, blocked):
        assert waiting.discard(job.job_id) == pgjobs.operations.waiting.Outcome(True, "discarded")
    assert discarded(db) == 3
    assert semaphore(db) == 1  # a blocked job held no slot; the holder keeps its own
    assert waiting.discard(ready.job_id) == pgjobs.operations.waiting.Outcome(False, "discarded")
    assert waiting.discard("00000000-0000-0000-0000-000000000000").state is None
    assert states(db.url) == {"ready": 1, "finished": 3}
    # The holder is ready with a slot: discarding it gives the slot back.
    assert waiting.discard(holder.job_id).done
    assert semaphore(db) == 0


def test_discarding_a_ready_limited_job_unblocks_the_next(db: Database) -> None:
    holder = OneAtATime.perform_later()
    nxt = OneAtATime.perform_later()
    waiting = WaitingJobs()
    assert waiting.discard(holder.job_id).done
    assert waiting.state(nxt.job_id) == "ready"  # took the slot given back
    assert semaphore(db) == 1


def test_a_job_claimed_by_a_worker_is_not_discarded(worker: Worker, db: Database) -> None:
    job = Record.perform_later("x")
    waiting = WaitingJobs()
    (claimed,) = worker.claim(1)
    assert waiting.discard(job.job_id) == pgjobs.operations.waiting.Outcome(False, "claimed")
    assert claimed.job_id == job.job_id
    assert states(db.url) == {"claimed": 1}


def test_a_job_being_claimed_during_the_discard_is_left_to_the_worker(db: Database) -> None:
    """The race: the operator saw the job ready, a worker locks its row (mid-claim) before the
    discard runs; the discard skips it instead of waiting, and the claim goes through."""
    job = Record.perform_later("x")
    waiting = WaitingJobs()
    assert waiting.state(job.job_id) == "ready"
    with psycopg.connect(db.url) as claimer:
        claimer.execute(
            "SELECT r.job_id FROM pgjobs_ready_executions r JOIN pgjobs_jobs j ON j.id = r.job_id"
            " WHERE j.job_id = %s FOR UPDATE",
            [job.job_id],
        )
        assert waiting.discard_all("ready") == 0  # skipped, without waiting for the lock
        outcome = waiting.discard(job.job_id)
        assert outcome == pgjobs.operations.waiting.Outcome(False, "ready")
        claimer.execute("DELETE FROM pgjobs_ready_executions")
        claimer.commit()
    assert discarded(db) == 0
    assert scalar(db.url, "SELECT finished_at FROM pgjobs_jobs") is None


def test_discard_releases_the_unique_key(db: Database) -> None:
    StrictUnique.set(wait=60).perform_later("a")
    with pytest.raises(pgjobs.DuplicateJobError):
        StrictUnique.perform_later("a")
    assert WaitingJobs().discard_all("scheduled") == 1
    StrictUnique.perform_later("a")  # the key is free again
    assert states(db.url) == {"ready": 1, "finished": 1}


def test_discard_all_in_batches_with_filters(db: Database) -> None:
    pgjobs.perform_all_later([Record(i) for i in range(25)])
    Record.set(queue="other").perform_later("o")
    seen: list[int] = []
    waiting = WaitingJobs(batch_size=10)
    assert waiting.discard_all("ready", progress=seen.append, queue="default") == 25
    assert seen == [10, 20, 25, 25]
    assert waiting.discard_all("ready", job_class="Nope") == 0
    assert waiting.discard_all("ready", text='"o"') == 1
    assert states(db.url) == {"finished": 26}


def test_dispatch_runs_a_scheduled_job_now(db: Database) -> None:
    job = Record.set(wait=3600).perform_later("later")
    waiting = WaitingJobs()
    assert waiting.dispatch(job.job_id) == pgjobs.operations.waiting.Outcome(True, "ready")
    assert waiting.dispatch(job.job_id) == pgjobs.operations.waiting.Outcome(False, "ready")
    assert scalar(db.url, "SELECT scheduled_at <= now() FROM pgjobs_jobs") is True


def test_dispatching_a_limited_job_blocks_it_when_no_slot_is_free(db: Database) -> None:
    holder = OneAtATime.perform_later()
    later = OneAtATime.set(wait=3600).perform_later()
    free = UniqueAndLimited.set(wait=3600).perform_later("n")
    waiting = WaitingJobs()
    assert waiting.dispatch(later.job_id) == pgjobs.operations.waiting.Outcome(True, "blocked")
    assert waiting.dispatch_all() == 1
    assert waiting.state(free.job_id) == "ready"  # its key had a free slot: unblocked at once
    assert semaphore(db) == 2  # the holder's slot and the unblocked job's
    assert waiting.discard(holder.job_id).done  # the slot goes to the blocked job
    assert waiting.state(later.job_id) == "ready"


def test_waiting_for(worker: Worker, db: Database) -> None:
    running = OneAtATime.perform_later()
    (claimed,) = worker.claim(1)
    blocked = OneAtATime.perform_later()
    scheduled = Record.set(wait=60).perform_later("s")
    paused = Record.set(queue="held").perform_later("p")
    waiting = WaitingJobs()
    found = waiting.waiting_for(blocked.job_id)
    assert found is not None and found.state == "blocked"
    assert found.limit == 1 and found.slots_taken == 1 and found.concurrency_key
    assert found.holders == (str(running.job_id),)
    assert found.blocked_until is not None and found.blocked_until > clock.now()
    found = waiting.waiting_for(scheduled.job_id)
    assert found is not None and found.scheduled_at is not None
    assert found.scheduled_at > clock.now() + timedelta(seconds=50)
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("INSERT INTO pgjobs_pauses (queue_name) VALUES ('held')")
    found = waiting.waiting_for(paused.job_id)
    assert found is not None and found.state == "ready" and found.paused_since is not None
    assert waiting.waiting_for("00000000-0000-0000-0000-000000000000") is None
    assert claimed.job_id == running.job_id


def test_bad_arguments_are_named(db: Database) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="state must be one of ready"):
        WaitingJobs().discard_all("claimed")  # type: ignore[arg-type]
    with pytest.raises(pgjobs.ConfigurationError, match="batch_size"):
        WaitingJobs(batch_size=0)
    with pytest.raises(pgjobs.ConfigurationError, match="is not a job id"):
        WaitingJobs().discard("nope")


@pytest.mark.parametrize(
    ("state", "table"),
    [("scheduled", "pgjobs_scheduled_executions"), ("blocked", "pgjobs_blocked_executions")],
)
def test_a_row_being_moved_is_skipped_not_waited_for(db: Database, state: str, table: str) -> None:
    """The dispatcher (scheduled) or an unblock (blocked) holds the row's lock while it moves the
    job: the operator's statement skips it, and the mover's work stands."""
    OneAtATime.perform_later()  # the holder of the slot
    job = (
        Record.set(wait=3600).perform_later("x")
        if state == "scheduled"
        else OneAtATime.perform_later()
    )
    waiting = WaitingJobs()
    assert waiting.state(job.job_id) == state
    with psycopg.connect(db.url) as mover:
        mover.execute(
            f"SELECT x.job_id FROM {table} x JOIN pgjobs_jobs j ON j.id = x.job_id "
            "WHERE j.job_id = %s FOR UPDATE",
            [job.job_id],
        )
        assert waiting.discard_all(state) == 0  # type: ignore[arg-type]
        assert waiting.discard(job.job_id) == pgjobs.operations.waiting.Outcome(False, state)
        if state == "scheduled":
            assert waiting.dispatch_all() == 0
        mover.rollback()
    assert semaphore(db) == 1
    assert waiting.discard(job.job_id).done  # once the mover let go
    assert semaphore(db) == 1  # a blocked job held no slot; a scheduled one neither


def test_a_job_dispatched_meanwhile_is_followed_to_ready(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The discard read the job as scheduled, then the dispatcher made it ready before the
    statement ran: the scheduled statement finds nothing, and the discard follows it to ready."""
    job = Record.perform_later("x")  # already moved to ready by "the dispatcher"
    waiting = WaitingJobs()
    read = waiting.state
    stale = iter(["scheduled"])
    monkeypatch.setattr(waiting, "state", lambda job_id: next(stale, None) or read(job_id))
    assert waiting.discard(job.job_id) == pgjobs.operations.waiting.Outcome(True, "discarded")
    assert discarded(db) == 1
