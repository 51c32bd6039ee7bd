"""A process's one connection (``processes.base.Link``): handed over in arrival order, so its
heartbeat is never starved by a loop that goes from statement to statement; its lock_timeout set
for whoever holds it; a lost connection replaced, and noticed by every process sharing it."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime

import psycopg
import pytest

from pgjobs.config.queue import Config, DispatcherConfig
from pgjobs.db.database import Database
from pgjobs.processes.base import Link, _FairLock
from pgjobs.processes.dispatcher import Dispatcher
from pgjobs.processes.supervisor import Supervisor

pytestmark = [pytest.mark.committed]


def test_the_lock_is_handed_over_in_arrival_order_and_is_reentrant() -> None:
    lock = _FairLock()
    order: list[str] = []
    lock.acquire()
    lock.acquire()  # reentrant
    threads = []
    for name in "abc":
        thread = threading.Thread(
            target=lambda n=name: (lock.acquire(), order.append(n), lock.release())
        )
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # a, then b, then c are waiting
    lock.release()
    time.sleep(0.05)
    assert order == []  # still held once
    lock.release()
    for thread in threads:
        thread.join(timeout=5)
    assert order == ["a", "b", "c"]


def test_a_heartbeat_is_not_starved_by_a_loop_that_never_pauses(db: Database) -> None:
    """A thread that runs statement after statement on the link with no pause in between (the
    way a worker drains a backlog): the heartbeat still beats about every interval."""
    config = Config(heartbeat_interval=0.1, process_alive_threshold=5)
    process = Dispatcher(Database(db.url), config, DispatcherConfig())
    process.register()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            process.execute("SELECT 1")

    beats: list[datetime] = []
    workers = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in workers:
        thread.start()
    try:
        with psycopg.connect(db.url, autocommit=True) as watch:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                row = watch.execute(
                    "SELECT last_heartbeat_at FROM pgjobs_processes WHERE id = %s", [process.id]
                ).fetchone()
                if row and (not beats or beats[-1] != row[0]):
                    beats.append(row[0])
                time.sleep(0.02)
    finally:
        stop.set()
        for thread in workers:
            thread.join()
        process.deregister()
        process.close()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(beats)]
    assert len(beats) >= 12, beats  # ~20 beats in 2 s at 0.1 s
    assert max(gaps) < 0.5, gaps


def test_the_link_sets_each_users_lock_timeout_and_residents_share_it(db: Database) -> None:
    """The supervisor (2 s) and a dispatcher resident (the server's) on one connection: each
    statement runs with its own user's lock_timeout."""
    config = Config(workers=(), dispatchers=())
    supervisor = Supervisor(Database(db.url), config)
    dispatcher = Dispatcher(
        supervisor.database, config, DispatcherConfig(), supervisor_id=None, link=supervisor.link
    )
    try:
        show = "SHOW lock_timeout"
        assert supervisor.execute(show) == [("2s",)]
        assert dispatcher.execute(show) == [("0",)]
        assert supervisor.execute(show) == [("2s",)]
        backends = {supervisor.execute("SELECT pg_backend_pid()")[0]}
        backends.add(dispatcher.execute("SELECT pg_backend_pid()")[0])
        assert len(backends) == 1  # one connection
    finally:
        dispatcher.close()
        supervisor.close()


def test_a_connection_lost_in_one_users_hands_is_noticed_by_the_others(db: Database) -> None:
    config = Config(workers=(), dispatchers=())
    supervisor = Supervisor(Database(db.url), config)
    dispatcher = Dispatcher(supervisor.database, config, DispatcherConfig(), link=supervisor.link)
    try:
        supervisor.execute("SELECT 1")
        dispatcher.execute("SELECT 1")
        first = supervisor.link.generation
        (pid,) = supervisor.execute("SELECT pg_backend_pid()")[0]
        with psycopg.connect(db.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        supervisor.execute("SELECT 1")  # lost in the supervisor's hands, then reopened
        assert supervisor.link.generation == first + 1
        assert not dispatcher.reconnected
        dispatcher.execute("SELECT 1")
        assert dispatcher.reconnected  # a reply of the dispatcher's may have been lost too
    finally:
        dispatcher.close()
        supervisor.close()


def test_a_link_used_by_nobody_opens_no_connection(db: Database) -> None:
    link = Link(Database(db.url), lambda conn: None)
    assert link.generation == 0
    link.close()


def test_residents_wait_for_a_lock_no_longer_than_the_supervisor(db: Database) -> None:
    """On the shared link a dispatcher or scheduler stuck behind an application's lock would
    hold up the supervisor's heartbeat, reaping and pruning: they give up after 2 s like it."""
    from pgjobs.processes.supervisor import Resident

    config = Config(dispatchers=(DispatcherConfig(),))
    supervisor = Supervisor(Database(db.url), config, extra_children=[("scheduler", 0)])
    try:
        supervisor.register()
        dispatcher = supervisor._build_resident(Resident("dispatcher", 0))
        scheduler = supervisor._build_resident(Resident("scheduler", 0))
        assert dispatcher.execute("SHOW lock_timeout") == [("2s",)]
        assert scheduler.execute("SHOW lock_timeout") == [("2s",)]
        assert scheduler.ticks_apart  # type: ignore[attr-defined]
    finally:
        supervisor.deregister()
        supervisor.close()


def test_a_process_whose_start_fails_deregisters(db: Database) -> None:
    """An error after registration (in on_start) still ends in deregistration: no row left
    beating for a process that is gone."""

    class FailsToStart(Dispatcher):
        def on_start(self) -> None:
            raise RuntimeError("no start")

    process = FailsToStart(Database(db.url), Config(heartbeat_interval=0.1), DispatcherConfig())
    with pytest.raises(RuntimeError, match="no start"):
        process.run()
    with psycopg.connect(db.url) as conn:
        assert conn.execute("SELECT count(*) FROM pgjobs_processes").fetchone() == (0,)
