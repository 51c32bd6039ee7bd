"""Worker and dispatcher passes called directly: queue selection, claiming, dispatching."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import pgjobs
from pgjobs.config.queue import Config, DispatcherConfig, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.operations.queues import Queue, all_queues
from pgjobs.processes.dispatcher import Dispatcher
from pgjobs.processes.worker import Worker
from tests.engine_helpers import scalar, states
from tests.sample_jobs import Record

pytestmark = pytest.mark.committed
CONFIG = Config(heartbeat_interval=30)


@pytest.fixture
def make_worker(db: Database) -> Iterator[type[Worker]]:
    made: list[Worker] = []

    def make(*queues: str, threads: int = 100) -> Worker:
        worker = Worker(Database(db.url), CONFIG, WorkerConfig(queues=queues, threads=threads))
        worker.register()
        made.append(worker)
        return worker

    yield make  # type: ignore[misc]
    for worker in made:
        worker.stop()
        worker.close()


def enqueue(queue: str, n: int = 1, priority: int = 0) -> None:
    pgjobs.perform_all_later(
        [Record.set(queue=queue, priority=priority).build(queue) for _ in range(n)]
    )


def test_a_queue_list_is_strict_order(make_worker: type[Worker]) -> None:
    enqueue("background", 3)
    enqueue("critical", 2)
    worker = make_worker("critical", "background")
    assert [j.queue_name for j in worker.claim(3)] == ["critical", "critical", "background"]
    assert [j.queue_name for j in worker.claim(5)] == ["background", "background"]


def test_priority_orders_within_a_queue_then_fifo(make_worker: type[Worker]) -> None:
    enqueue("q", 1, priority=5)
    enqueue("q", 1, priority=-1)
    enqueue("q", 1, priority=0)
    enqueue("q", 1, priority=-1)
    claimed = make_worker("q").claim(10)
    assert [j.priority for j in claimed] == [-1, -1, 0, 5]
    assert claimed[0].id < claimed[1].id


def test_star_means_every_queue_in_global_priority(make_worker: type[Worker]) -> None:
    enqueue("a", 1, priority=3)
    enqueue("b", 1, priority=1)
    enqueue("c", 1, priority=2)
    assert [j.queue_name for j in make_worker("*").claim(10)] == ["b", "c", "a"]


def test_prefix_wildcards_expand_in_list_order(make_worker: type[Worker]) -> None:
    for name in ("reports_b", "reports_a", "mail", "other"):
        enqueue(name)
    worker = make_worker("mail", "reports*")
    assert [j.queue_name for j in worker.claim(10)] == ["mail", "reports_a", "reports_b"]


def test_paused_queues_are_skipped_and_resume_brings_them_back(
    make_worker: type[Worker], db: Database
) -> None:
    enqueue("a", 2)
    enqueue("b", 2, priority=-1)
    Queue("b", database=db).pause()
    assert Queue("b", database=db).paused
    star = make_worker("*")
    assert {j.queue_name for j in star.claim(10)} == {"a"}
    listed = make_worker("b", "a")
    assert listed.claim(10) == []
    enqueue("b", 1)  # a paused queue still receives jobs
    assert Queue("b", database=db).size == 3
    Queue("b", database=db).resume()
    star._paused_at = listed._paused_at = float("-inf")  # no need to wait out the 1 s cache
    assert {j.queue_name for j in listed.claim(10)} == {"b"}
    infos = {q.name: q for q in all_queues(db)}
    assert "b" not in infos  # empty and not paused: nothing to show


def test_claims_no_more_than_asked_and_finishes_in_the_next_trip(
    make_worker: type[Worker], db: Database
) -> None:
    enqueue("q", 5)
    worker = make_worker("q")
    first = worker.claim(2)
    assert len(first) == 2
    assert states(db.url) == {"claimed": 2, "ready": 3}
    worker.to_finish = [j.id for j in first]
    assert len(worker.claim(10)) == 3
    assert states(db.url) == {"finished": 2, "claimed": 3}


def test_racing_workers_never_claim_the_same_job(make_worker: type[Worker], db: Database) -> None:
    enqueue("q", 2000)
    workers = [make_worker("q") for _ in range(4)]
    seen: list[list[int]] = [[] for _ in workers]

    def drain(i: int) -> None:
        while batch := workers[i].claim(25):
            seen[i].extend(j.id for j in batch)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [job for ids in seen for job in ids]
    assert len(everything) == 2000 == len(set(everything))


def test_two_dispatchers_move_each_due_job_exactly_once(db: Database) -> None:
    pgjobs.perform_all_later([Record.set(wait=60).build(str(i)) for i in range(1000)])
    later = datetime.now(UTC) + timedelta(minutes=2)
    dispatchers = [
        Dispatcher(Database(db.url), CONFIG, DispatcherConfig(batch_size=50)) for _ in range(2)
    ]
    moved = [0, 0]

    def run(i: int) -> None:
        while n := dispatchers[i].dispatch(now=later):
            moved[i] += n

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for dispatcher in dispatchers:
        dispatcher.close()
    assert sum(moved) == 1000
    assert states(db.url) == {"ready": 1000}
    with psycopg.connect(db.url) as conn:
        assert conn.execute(
            "SELECT count(DISTINCT job_id) FROM pgjobs_ready_executions"
        ).fetchone() == (1000,)


def test_dispatcher_leaves_jobs_that_are_not_due(db: Database) -> None:
    pgjobs.perform_all_later([Record.set(wait=3600).build("later")])
    dispatcher = Dispatcher(Database(db.url), CONFIG, DispatcherConfig())
    assert dispatcher.dispatch() == 0
    assert 0 < dispatcher.poll() <= 1.0
    dispatcher.close()
    assert states(db.url) == {"scheduled": 1}


def test_pruning_recovers_stale_processes_and_kills_a_silent_live_child(db: Database) -> None:
    """A vanished host's process is pruned and its jobs recovered; our own child whose process
    runs but whose heartbeat is stale is not pruned (its row is ours to end) but killed, and
    reap() then recovers its jobs as a crash's."""
    import subprocess

    from pgjobs.processes.supervisor import Child, Supervisor

    config = Config(workers=(), dispatchers=(), heartbeat_interval=30, process_alive_threshold=5)
    supervisor = Supervisor(Database(db.url), config)
    supervisor.register()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        child = Child("worker", 0, popen=sleeper, started_at=0.0)
        supervisor.children = [child]
        supervisor.spawn = lambda child: None  # type: ignore[method-assign]  # not replaced here
        old = datetime.now(UTC) - timedelta(minutes=10)
        with psycopg.connect(db.url, autocommit=True) as conn:
            ids = [
                conn.execute(
                    "INSERT INTO pgjobs_processes (kind, name, hostname, pid, supervisor_id, "
                    "last_heartbeat_at) VALUES ('worker', %s, 'h', %s, %s, %s) RETURNING id",
                    [name, pid, sup, old],
                ).fetchone()[0]  # type: ignore[index]
                for name, pid, sup in (
                    ("own-silent-child", sleeper.pid, supervisor.id),
                    ("vanished-host", 424242, None),
                )
            ]
            pgjobs.perform_all_later([Record("a"), Record("b")], connection=conn)
            first, second = [
                r[0] for r in conn.execute("SELECT job_id FROM pgjobs_ready_executions")
            ]
            for job, process in ((first, ids[0]), (second, ids[1])):
                conn.execute(
                    "WITH moved AS (DELETE FROM pgjobs_ready_executions WHERE job_id = %s "
                    "RETURNING job_id) INSERT INTO pgjobs_claimed_executions (job_id, process_id) "
                    "SELECT job_id, %s FROM moved",
                    [job, process],
                )
        supervisor.contact_since, supervisor.last_contact = (
            time.monotonic() - 3600,
            time.monotonic(),
        )
        supervisor.prune()  # in contact with the database for long: it may judge others
        with psycopg.connect(db.url) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM pgjobs_processes")}
        assert "own-silent-child" in names and "vanished-host" not in names
        assert states(db.url) == {"ready": 1, "claimed": 1}
        assert sleeper.wait(timeout=5) == -9  # killed
        supervisor.reap()  # sees the exit: the child's jobs are recovered, its row removed
        assert states(db.url) == {"ready": 2}
        assert scalar(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE interruptions = 1") == 2
        assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 1  # the supervisor
    finally:
        sleeper.kill()
        sleeper.wait()
        supervisor.stop()
        supervisor.close()


def test_durable_claims_off_sets_asynchronous_commit_on_every_connection(db: Database) -> None:
    def setting(worker: Worker) -> str:
        return str(worker.conn.execute("SHOW synchronous_commit").fetchone()[0])  # type: ignore[index]

    fast = Worker(Database(db.url), Config(durable_claims=False), WorkerConfig(threads=2))
    default = Worker(Database(db.url), CONFIG, WorkerConfig(threads=2))
    try:
        assert (setting(fast), setting(default)) == ("off", "on")
        fast.conn.close()  # a lost connection: the new one is set up again
        assert setting(fast) == "off"
        enqueue("q", 2)
        fast.register()
        assert len(fast.claim(5)) == 2
    finally:
        for worker in (fast, default):
            worker.close()
