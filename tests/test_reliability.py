"""Issue 15's defects, each provoked directly: no job stranded, none run twice at once.

Each test names the defect it covers; docs/reliability.md maps faults to these tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgjobs import clock
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.errors import DatabaseUnreachable
from pgjobs.processes import recovery
from pgjobs.processes.executor import Outcome
from pgjobs.processes.supervisor import Supervisor
from pgjobs.processes.worker import Worker
from pgjobs.store import ready as ready_store
from tests.engine_helpers import (
    config_file,
    log_lines,
    pgjobs_start,
    scalar,
    states,
    wait_for,
    worker_pids,
)
from tests.sample_jobs import (
    KillsItsWorker,
    OneAtATime,
    RebuildIndexUntilExecuting,
    Record,
    Sleepy,
)

pytestmark = pytest.mark.committed
CONFIG = Config(heartbeat_interval=30, process_alive_threshold=60, max_interruptions=3)


@pytest.fixture
def make_worker(db: Database) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def make(
        config: Config = CONFIG, threads: int = 10, supervisor_id: int | None = None
    ) -> Worker:
        worker = Worker(
            Database(db.url),
            config,
            WorkerConfig(queues=("*",), threads=threads),
            supervisor_id=supervisor_id,
        )
        worker.register()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()
        worker.close()


@pytest.fixture
def supervisor(db: Database) -> Iterator[Supervisor]:
    made = Supervisor(Database(db.url), Config(workers=(), dispatchers=(), **_fast()))
    made.register()
    yield made
    made.stop()
    made.close()


def _fast() -> dict[str, float]:
    return {"heartbeat_interval": 30, "process_alive_threshold": 60}


def long_in_contact(process: Supervisor) -> None:
    """As if its heartbeats had landed on time for longer than any threshold."""
    process.contact_since = time.monotonic() - 3600
    process.last_contact = time.monotonic()


def claimed_by(db: Database, process_id: int | None) -> int:
    return int(
        scalar(
            db.url,
            "SELECT count(*) FROM pgjobs_claimed_executions WHERE process_id = %s",
            [process_id],
        )
    )


# -- 1. claimed jobs whose process row no longer exists --------------------------------------


def claim_for_a_missing_process(db: Database, age_seconds: float) -> None:
    """A ready job, claimed under a process id that has no row, ``age_seconds`` ago."""
    Record.perform_later("orphan")
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "WITH moved AS (DELETE FROM pgjobs_ready_executions RETURNING job_id) "
            "INSERT INTO pgjobs_claimed_executions (job_id, process_id, created_at) "
            "SELECT job_id, 987654, now() - make_interval(secs => %s) FROM moved",
            [age_seconds],
        )


def test_jobs_claimed_under_a_missing_process_are_swept_back_after_the_grace(
    db: Database, supervisor: Supervisor
) -> None:
    claim_for_a_missing_process(db, age_seconds=60)
    supervisor.sweep()
    assert states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT interruptions FROM pgjobs_jobs") == 1


def test_a_fresh_orphan_is_left_alone_until_the_grace_passes(
    db: Database, supervisor: Supervisor
) -> None:
    claim_for_a_missing_process(db, age_seconds=0)
    supervisor.sweep()
    assert states(db.url) == {"claimed": 1}


def test_a_clean_shutdown_gives_back_jobs_claimed_by_a_lost_reply(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    """The claim committed but its reply was lost: the worker never knew of the job."""
    Record.perform_later("lost reply")
    worker = make_worker()
    assert len(worker.claim(5)) == 1
    worker.in_flight.clear()  # what a lost reply leaves: a claimed row the worker does not know
    worker.stop()
    worker.shutdown()
    worker.deregister()
    assert states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT interruptions + executions FROM pgjobs_jobs") == 0
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 0


def test_a_claim_still_running_when_its_process_is_ended_is_recovered(
    db: Database, make_worker: Callable[..., Worker], supervisor: Supervisor
) -> None:
    """A worker SIGKILLed while its claim statement runs on the server: the claim commits after
    the supervisor began recovering.  Ending the process waits for it and recovers its jobs."""
    Record.perform_later("in flight")
    worker = make_worker()
    assert worker.id is not None
    statement = db.sql(ready_store.CLAIM_ALL)
    params = {
        "finished": "{}",
        "process_id": worker.id,
        "now": clock.now(),
        "limit": 10,
        "floor_priority": -32768,
        "floor_id": 0,
    }
    with psycopg.connect(db.url) as server_side:  # the dead client's backend, mid-transaction
        assert len(server_side.execute(statement, params).fetchall()) == 1
        done = threading.Event()
        thread = threading.Thread(target=lambda: (supervisor.recover([worker.id]), done.set()))
        thread.start()
        assert not done.wait(0.5)  # ending the process waits for the claim's lock
        server_side.commit()
    thread.join(10)
    assert done.is_set()
    assert states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT interruptions FROM pgjobs_jobs") == 1
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes WHERE id = %s", [worker.id]) == 0


def test_a_pruned_worker_claims_nothing_more(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    """Its heartbeat could not reach the database and another host pruned it: its main
    connection still works, but a claim needs the process's row."""
    Record.perform_later("after the prune")
    worker = make_worker()
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("DELETE FROM pgjobs_processes WHERE id = %s", [worker.id])
    assert worker.claim(5) == []
    assert states(db.url) == {"ready": 1}


def test_a_worker_that_finds_itself_pruned_gives_back_what_is_still_claimed(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    Record.perform_later("claimed")
    worker = make_worker()
    assert len(worker.claim(5)) == 1
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("DELETE FROM pgjobs_processes WHERE id = %s", [worker.id])
    worker.pruned = True  # what its heartbeat concludes
    worker.stop()
    worker.shutdown()
    assert states(db.url) == {"ready": 1}


def test_a_claim_whose_reply_came_back_after_a_prune_starts_nothing(
    db: Database,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chaos seed 982991: a worker's claim committed, then a partition held its reply (and,
    behind it on the link, every heartbeat) past the threshold; another host pruned the worker
    and recovered the job, which ran elsewhere; the reply then arrived and the worker started
    the job again.  No beat has found its row for too long: it must not start what it claimed."""
    log = tmp_path / "runs.log"
    monkeypatch.setenv("PGJOBS_TEST_LOG", str(log))
    Record.perform_later("late")
    worker = make_worker(Config(heartbeat_interval=0.2, process_alive_threshold=1.0))
    claim_done, reply_held = threading.Event(), 1.6
    run = worker.link.run

    def reply_late(lock_timeout_ms: int | None, fn: Callable[[Any], Any]) -> Any:
        def then_wait(conn: Any) -> Any:
            result = fn(conn)
            if result and not claim_done.is_set():  # the claim ran and committed (autocommit)
                claim_done.set()
                time.sleep(reply_held)  # its reply is held up: the link stays busy, no beat
            return result

        return run(lock_timeout_ms, then_wait)

    monkeypatch.setattr(worker.link, "run", reply_late)
    got: list[Any] = []
    claiming = threading.Thread(target=lambda: got.extend(worker.claim(5)))
    claiming.start()
    assert claim_done.wait(10)
    time.sleep(1.1)  # the worker's last beat is older than the threshold
    with psycopg.connect(db.url, autocommit=True) as conn:  # another host prunes it
        pruned = recovery.prune_dead(
            conn, worker.database, threshold=1.0, alive=[], max_interruptions=3
        )
    assert pruned.ids == [worker.id] and pruned.requeued == 1
    claiming.join(10)
    monkeypatch.setattr(worker.link, "run", run)
    assert [c.id for c in got] and states(db.url) == {"ready": 1}
    for job in got:  # as the main loop does with a claim's jobs
        worker.in_flight[job.id] = job
    worker.buffer.put(got, time.monotonic())
    worker._start_thread()
    assert wait_for(lambda: not worker.outbox.empty(), 5)
    worker._collect()
    assert log_lines(log) == []  # it did not run here
    worker._give_back_unstarted()  # nothing of it is ours any more
    assert states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT interruptions FROM pgjobs_jobs") == 1  # the prune's recovery


def test_a_worker_unsure_it_is_alive_gives_a_job_back_uncounted_and_runs_it_after_a_beat(
    db: Database,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other side of the check above: a worker that was *not* pruned (frozen, or its beats
    held up, past the safe window) loses nothing — the job goes back to ready uncounted, the
    thread's refusal makes the heartbeat beat at once, and the job runs once the beat found
    the row."""
    log = tmp_path / "runs.log"
    monkeypatch.setenv("PGJOBS_TEST_LOG", str(log))
    Record.perform_later("unsure")
    worker = make_worker(Config(heartbeat_interval=30, process_alive_threshold=60))
    worker.safe_until = time.monotonic() - 1  # as if no beat had found our row for 57 s
    (job,) = worker.claim(5)
    worker.in_flight[job.id] = job
    worker.buffer.put([job], time.monotonic())
    worker._start_thread()
    assert wait_for(lambda: not worker.outbox.empty(), 5)
    worker._collect()
    worker._give_back_unstarted()
    assert log_lines(log) == [] and states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT executions + interruptions FROM pgjobs_jobs") == 0
    assert wait_for(lambda: worker.safe_until > time.monotonic() + 50, 5)  # it beat at once
    (again,) = worker.claim(5)
    worker.in_flight[again.id] = again
    worker.buffer.put([again], time.monotonic())
    assert wait_for(lambda: not worker.outbox.empty(), 5)
    worker._collect()
    worker._claim_pass()  # finishes it
    assert [line.split()[1:] for line in log_lines(log)] == [["1", "unsure"]]  # its first attempt
    assert states(db.url) == {"finished": 1}


# -- 2. outages, clocks, heartbeats --------------------------------------------------------


def test_heartbeats_and_cutoffs_use_the_databases_clock(
    db: Database, supervisor: Supervisor, make_worker: Callable[..., Worker]
) -> None:
    """A host whose clock is an hour behind is not judged dead by a pruner whose clock is
    right (nor would a host an hour ahead judge everyone else dead)."""
    saved = clock.clock
    clock.clock = clock.FrozenClock(datetime.now(UTC) - timedelta(hours=1))
    try:
        worker = make_worker()
    finally:
        clock.clock = saved
    long_in_contact(supervisor)
    supervisor.prune()
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes WHERE id = %s", [worker.id]) == 1


def test_no_pruning_until_the_pruner_has_been_in_contact_for_a_threshold(
    db: Database,
) -> None:
    config = Config(workers=(), dispatchers=(), heartbeat_interval=0.2, process_alive_threshold=1)
    supervisor = Supervisor(Database(db.url), config)
    supervisor.register()
    try:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO pgjobs_processes (kind, name, hostname, pid, last_heartbeat_at) "
                "VALUES ('worker', 'silent', 'elsewhere', 1, now() - interval '1 hour')"
            )
        supervisor.maintain()
        assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes WHERE name = 'silent'") == 1
        time.sleep(1.3)  # a threshold of unbroken beats
        assert supervisor.in_contact(config.process_alive_threshold)
        supervisor._last_prune = float("-inf")
        supervisor.maintain()
        assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes WHERE name = 'silent'") == 0
        # An outage (a beat that failed, or came late) starts the count again.
        supervisor.contact_since = None
        assert not supervisor.in_contact(config.process_alive_threshold)
    finally:
        supervisor.stop()
        supervisor.close()


def test_a_reconnect_makes_the_heartbeat_beat_at_once(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(Config(heartbeat_interval=30, process_alive_threshold=90))
    before = scalar(
        db.url, "SELECT last_heartbeat_at FROM pgjobs_processes WHERE id = %s", [worker.id]
    )
    with psycopg.connect(db.url, autocommit=True) as conn:  # the database restarted, say
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'pgjobs' AND pid <> pg_backend_pid() "
            "AND datname = current_database()"
        )
    worker.execute("SELECT 1")  # the main connection finds out and reconnects

    def beaten() -> bool:
        now = scalar(
            db.url, "SELECT last_heartbeat_at FROM pgjobs_processes WHERE id = %s", [worker.id]
        )
        return bool(now > before)

    deadline = time.monotonic() + 5
    while not beaten() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert beaten()  # within seconds, not heartbeat_interval (30 s)


# -- 3. a poison pill does not take its neighbours with it ---------------------------------


def test_a_recovered_job_runs_alone(db: Database, make_worker: Callable[..., Worker]) -> None:
    for name in ("a", "b", "c"):
        Record.perform_later(name)
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgjobs_jobs SET interruptions = 1 WHERE id = (SELECT min(id) FROM pgjobs_jobs)"
        )
    worker = make_worker()
    claimed = worker.isolate(worker.claim(5))
    assert [c.interruptions for c in claimed] == [1]  # the suspect alone; the others given back
    assert states(db.url) == {"claimed": 1, "ready": 2}
    assert worker._alone == claimed[0].id
    worker.in_flight[claimed[0].id] = claimed[0]
    assert worker._claim_pass() > 0 and states(db.url) == {"claimed": 1, "ready": 2}
    worker.outbox.put(Outcome(claimed[0]))  # it finished: claiming resumes
    worker._collect()
    worker._claim_pass()
    assert states(db.url) == {"finished": 1, "claimed": 2}


def test_a_busy_worker_gives_a_suspect_back_and_drains_before_claiming_again(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    Sleepy.perform_later(0)
    worker = make_worker()
    (running,) = worker.claim(5)
    worker.in_flight[running.id] = running
    Record.perform_later("suspect")
    Record.perform_later("innocent")
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgjobs_jobs SET interruptions = 1 "
            "WHERE id = (SELECT max(id) - 1 FROM pgjobs_jobs)"
        )
    kept = worker.isolate(worker.claim(5))
    assert [c.interruptions for c in kept] == [0]
    assert worker._draining
    assert states(db.url) == {"claimed": 2, "ready": 1}
    assert worker._claim_pass() > 0 and states(db.url) == {"claimed": 2, "ready": 1}  # drains
    other = make_worker()
    assert [c.interruptions for c in other.isolate(other.claim(5))] == [1]  # an idle worker
    worker._claim_pass()  # the suspect was taken: this worker claims again at once
    assert not worker._draining


# -- the review's findings: lock timeouts never strand or crash ----------------------------


def test_a_lock_timeout_on_a_later_queue_keeps_the_jobs_claimed_from_earlier_ones(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    Record.set(queue="a").perform_later("first queue")
    Record.set(queue="b").perform_later("second queue")
    worker = Worker(
        Database(db.url), CONFIG, WorkerConfig(queues=("a", "b"), threads=10), supervisor_id=None
    )
    worker.register()
    blocker = psycopg.connect(db.url)
    execute = worker.execute
    calls = []

    def execute_then_lock(template: str, params: dict[str, Any] | None = None) -> Any:
        rows = execute(template, params)
        calls.append(template)
        if len(calls) == 2:  # after the first queue's claim: a migration locks a table
            blocker.execute("LOCK TABLE pgjobs_claimed_executions IN SHARE MODE")
        return rows

    try:
        worker.execute = execute_then_lock  # type: ignore[method-assign]
        worker._claim_pass()
        assert [c.queue_name for c in worker.in_flight.values()] == ["a"]
    finally:
        blocker.rollback()
        blocker.close()
        worker.stop()
        worker.close()


def test_an_until_executing_key_held_by_a_locked_row_is_released_a_pass_later(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    RebuildIndexUntilExecuting.perform_later("idx")
    worker = make_worker()
    with psycopg.connect(db.url) as app:
        app.execute("SELECT id FROM pgjobs_jobs FOR UPDATE")  # an application holds the row
        worker._claim_pass()  # claims it; releasing the key waits 200 ms, then is put off
        assert len(worker.in_flight) == 1 and worker._pending_unique
    worker._claim_pass()
    assert not worker._pending_unique
    assert scalar(db.url, "SELECT unique_key FROM pgjobs_jobs") is None


def test_the_supervisor_gives_up_on_a_lock_and_recovers_a_pass_later(
    db: Database, supervisor: Supervisor
) -> None:
    """Recovering a job failed after its last interruption gives its slot back: an application
    transaction holding that semaphore row made the supervisor wait for ever."""
    OneAtATime.perform_later()
    with psycopg.connect(db.url, autocommit=True) as conn:
        dead = conn.execute(
            "INSERT INTO pgjobs_processes (kind, name, hostname, pid, last_heartbeat_at) "
            "VALUES ('worker', 'dead', 'gone', 1, now() - interval '1 hour') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE pgjobs_jobs SET interruptions = 2")  # its last interruption
        conn.execute(
            "WITH moved AS (DELETE FROM pgjobs_ready_executions RETURNING job_id) "
            "INSERT INTO pgjobs_claimed_executions (job_id, process_id) "
            "SELECT job_id, %s FROM moved",
            [dead],
        )
    with psycopg.connect(db.url) as app:
        app.execute("SELECT * FROM pgjobs_semaphores FOR UPDATE")
        started = time.monotonic()
        long_in_contact(supervisor)
        supervisor.prune()  # gives up after its lock_timeout instead of waiting
        assert time.monotonic() - started < 5
        assert states(db.url) == {"claimed": 1}
    long_in_contact(supervisor)
    supervisor.prune()
    assert states(db.url) == {"failed": 1}


def test_registering_again_after_a_lost_reply_returns_the_same_row(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker()
    first = worker.id
    worker.register()  # what a retry after a lost reply does: the same name
    assert worker.id == first
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 1


def test_the_heartbeat_goes_on_while_a_worker_lets_its_jobs_finish(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    """A stopping worker is alive: pruned for a shutdown_timeout longer than the threshold,
    its running jobs would have run elsewhere at the same time."""
    worker = make_worker(Config(heartbeat_interval=0.2, process_alive_threshold=1))
    worker.stop()  # SIGTERM: from now on it waits for its jobs
    time.sleep(0.3)
    before = scalar(
        db.url, "SELECT last_heartbeat_at FROM pgjobs_processes WHERE id = %s", [worker.id]
    )
    time.sleep(0.6)
    after = scalar(
        db.url, "SELECT last_heartbeat_at FROM pgjobs_processes WHERE id = %s", [worker.id]
    )
    assert after > before


def test_a_worker_without_a_supervisor_leaves_running_jobs_claimed(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    """Its threads die only with the process; recovery gives the jobs back once it is gone."""
    config = Config(heartbeat_interval=30, process_alive_threshold=60, shutdown_timeout=0.1)
    Sleepy.perform_later(0)
    worker = make_worker(config)
    (job,) = worker.claim(5)
    worker.in_flight[job.id] = job
    worker.stop()
    worker.shutdown()
    worker.deregister()
    assert worker.leaves_jobs and states(db.url) == {"claimed": 1}


# -- 8. shutdown gives jobs back only once their threads are dead --------------------------


def test_a_supervised_worker_leaves_unfinished_jobs_to_its_supervisor(
    db: Database, make_worker: Callable[..., Worker], supervisor: Supervisor
) -> None:
    config = Config(heartbeat_interval=30, process_alive_threshold=60, shutdown_timeout=0.2)
    Sleepy.perform_later(0)
    worker = make_worker(config, supervisor_id=supervisor.id)
    (job,) = worker.claim(5)
    worker.in_flight[job.id] = job  # still running when the timeout passes
    worker.stop()
    worker.shutdown()
    worker.deregister()
    assert worker.leaves_jobs
    assert states(db.url) == {"claimed": 1}  # not released while its thread may run
    assert claimed_by(db, worker.id) == 1
    # The process exited (cleanly): its supervisor gives the job back, uncounted.
    supervisor._ending[worker.pid] = True
    supervisor.end_children()
    assert states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT interruptions + executions FROM pgjobs_jobs") == 0


# -- 9. durable_claims: false keeps registration and giving back durable -------------------


def test_registration_and_deregistration_commit_durably_with_durable_claims_off(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS sync_log (what text, setting text)")
        conn.execute("TRUNCATE sync_log")
        conn.execute(
            "CREATE OR REPLACE FUNCTION log_sync() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN INSERT INTO sync_log VALUES (TG_OP, current_setting('synchronous_commit')); "
            "RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE OR REPLACE TRIGGER log_sync AFTER INSERT OR DELETE ON pgjobs_processes "
            "FOR EACH ROW EXECUTE FUNCTION log_sync()"
        )
    try:
        worker = make_worker(Config(durable_claims=False, heartbeat_interval=30))
        assert str(worker.conn.execute("SHOW synchronous_commit").fetchone()[0]) == "off"  # type: ignore[index]
        worker.stop()
        worker.shutdown()
        worker.deregister()
        with psycopg.connect(db.url) as conn:
            rows = conn.execute("SELECT what, setting FROM sync_log").fetchall()
        assert rows == [("INSERT", "on"), ("DELETE", "on")]
    finally:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS log_sync ON pgjobs_processes")
            conn.execute("DROP FUNCTION IF EXISTS log_sync()")
            conn.execute("DROP TABLE IF EXISTS sync_log")


# -- end to end: real processes -------------------------------------------------------------


@pytest.mark.slow
def test_a_poison_pill_is_failed_alone_and_its_neighbour_finishes(
    db: Database, tmp_path: Path
) -> None:
    """Defect 3: the job claimed beside a job that kills its worker was failed with it."""
    innocent = Sleepy.perform_later(2.0)
    poison = KillsItsWorker.perform_later()
    log = tmp_path / "log"
    workers = '  - queues: "*"\n    threads: 2\n    polling_interval: 0.1'
    config = config_file(tmp_path, workers, max_interruptions=2)
    with pgjobs_start(db.url, config, log) as proc:
        wait_for(lambda: states(db.url) == {"failed": 1, "finished": 1}, timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    row = scalar(
        db.url,
        "SELECT f.exception_class FROM pgjobs_failed_executions f JOIN pgjobs_jobs j "
        "ON j.id = f.job_id WHERE j.job_id = %s",
        [poison.job_id],
    )
    assert row == "pgjobs.errors.ProcessExitError"
    interrupted = scalar(
        db.url, "SELECT interruptions FROM pgjobs_jobs WHERE job_id = %s", [innocent.job_id]
    )
    assert interrupted == 1  # the first crash only: afterwards the poison pill ran alone


@pytest.mark.slow
def test_a_stopped_worker_is_killed_and_its_job_runs_elsewhere(
    db: Database, tmp_path: Path
) -> None:
    """Defect 10: a child whose process lives but whose heartbeat stopped (SIGSTOP here; a
    wedged heartbeat thread is the same to its supervisor) was trusted for ever."""
    job = Sleepy.perform_later(1.0)
    log = tmp_path / "log"
    with pgjobs_start(db.url, config_file(tmp_path), log) as proc:
        wait_for(lambda: any(" start" in line for line in log_lines(log)))
        (pid,) = worker_pids(db.url)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: finished(db.url) == 1, timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # it was killed: nothing to resume
                os.kill(pid, signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert "has not beaten" in log.with_suffix(".out").read_text()
    assert (
        scalar(db.url, "SELECT interruptions FROM pgjobs_jobs WHERE job_id = %s", [job.job_id]) == 1
    )


def finished(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL"))


def test_an_orphaned_child_waiting_for_its_database_gives_up(db: Database) -> None:
    """A child whose supervisor died before it registered, and whose database is gone, used to
    retry for ever (its heartbeat thread, which notices orphaning, was not started yet)."""
    gone = db.url.rsplit("/", 1)[0] + "/pgjobs_no_such_database"
    worker = Worker(Database(gone), CONFIG, WorkerConfig(threads=1), supervisor_id=1)
    worker._parent_pid = -1  # re-parented: what orphaned() looks for
    started = time.monotonic()
    with pytest.raises((psycopg.Error, DatabaseUnreachable)):
        worker.register()
    assert time.monotonic() - started < 10
    worker.close()


def test_a_prune_that_waited_out_an_outage_judges_nobody(db: Database) -> None:
    """Found by the chaos suite: a prune begun before an outage was retried through it and then
    judged every process by heartbeats the outage had stopped.  A statement that had to
    reconnect breaks the contact, and prune() checks it again after each wait."""
    config = Config(workers=(), dispatchers=(), heartbeat_interval=30, process_alive_threshold=1)
    supervisor = Supervisor(Database(db.url), config)
    supervisor.register()
    try:
        with psycopg.connect(db.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO pgjobs_processes (kind, name, hostname, pid, last_heartbeat_at) "
                "VALUES ('worker', 'silent', 'elsewhere', 1, now() - interval '1 hour')"
            )
        long_in_contact(supervisor)
        assert supervisor.in_contact(1)
        with psycopg.connect(db.url, autocommit=True) as conn:  # the outage: our link drops
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name "
                "= 'pgjobs' AND pid <> pg_backend_pid() AND datname = current_database()"
            )
        supervisor.prune()  # its first statement reconnects: contact is broken, nobody judged
        assert not supervisor.in_contact(1)
        assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes WHERE name = 'silent'") == 1
    finally:
        supervisor.stop()
        supervisor.close()
