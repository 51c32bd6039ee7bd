"""The base of every pgjobs process: registration, heartbeats, a reconnecting connection, signals.

Guarantees:

- A process registers a row in ``pgjobs_processes`` before it claims anything and deletes it on a
  clean exit.  Its heartbeat comes from a dedicated thread, on the process's one connection (its
  :class:`Link`) taken in turn with the process's loop: a busy or CPU-bound job cannot starve it
  (job threads never use the link; the GIL is released while the thread waits on the socket),
  and the loop holds the link for one statement or transaction at a time, handing it over in
  arrival order.
- If the heartbeat finds the row gone (the process was pruned as dead after a stall), the process
  stops: its jobs have been recovered by someone else, and it must not finish them twice.
- Database errors never crash the process: the connection is reopened with backoff and the work
  is retried (a PostgreSQL restart is survived).
- Signal handlers take no lock: they write the signal to a pipe, and a thread stops the process
  (:mod:`pgjobs.processes.signals`), so a signal cannot deadlock it wherever it lands.  SIGTERM
  and SIGINT stop gracefully, any number of times in any order; only SIGQUIT stops at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg

from pgjobs import events
from pgjobs.config.queue import Config
from pgjobs.db.database import GAVE_UP, Database
from pgjobs.errors import DatabaseUnreachable
from pgjobs.processes import recovery, signals
from pgjobs.store import processes as store

log = logging.getLogger("pgjobs")
T = TypeVar("T")
RECONNECT_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
#: The share of process_alive_threshold after a beat during which a process knows it is alive.
SAFE_SHARE = 0.95
INF = float("inf")


def set_proctitle(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        pass


class _FairLock:
    """A reentrant lock handed to its waiters in arrival order.

    CPython's locks promise no order: a thread that releases one and takes it again at once (a
    worker's loop going from one statement to the next) may get it back before a thread that
    was already waiting.  In practice the waiter gets its turn (tests/test_link.py measures it
    with plain locks too); handing over in arrival order makes the heartbeat's turn certain,
    within a statement or two, rather than likely."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[tuple[int, threading.Lock]] = deque()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner is None and not self._waiters:  # the common case first
                self._owner, self._depth = me, 1
                return
            if self._owner == me:
                self._depth += 1
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append((me, turn))
        turn.acquire()  # released by the holder that hands us the lock (owner already set)

    def release(self) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth:
                return
            if self._waiters:
                owner, turn = self._waiters.popleft()
                self._owner, self._depth = owner, 1
                turn.release()
            else:
                self._owner = None


class Link:
    """One database connection, used in turn by the threads of a process that share it.

    A worker's loop and its heartbeat share one; in the supervisor, its own loop and heartbeat,
    its dispatchers' and its scheduler's (each unit of work holds the link for one statement or
    one transaction).  Each user brings its own ``lock_timeout``: the link sets it when it
    changes hands between users that differ.  A connection lost in anyone's hands is closed and
    the next user opens another (``generation`` counts them, so the others learn of it)."""

    def __init__(
        self, database: Database, on_connect: Callable[[psycopg.Connection[Any]], None]
    ) -> None:
        self.database = database
        self.on_connect = on_connect
        self.generation = 0
        self._lock = _FairLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._lock_timeout: int | None = None

    def run(self, lock_timeout_ms: int | None, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``fn(conn)`` with the link held (the hot path: a worker's every statement; a plain
        call rather than :meth:`use`, whose generator costs ~3 µs a call)."""
        self._lock.acquire()
        try:
            conn = self._connection(lock_timeout_ms)
            try:
                return fn(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._lost(conn, exc)
                raise
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def use(self, lock_timeout_ms: int | None = None) -> Iterator[psycopg.Connection[Any]]:
        """The link held for a ``with`` block (heartbeats, retention ranges)."""
        self._lock.acquire()
        try:
            conn = self._connection(lock_timeout_ms)
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._lost(conn, exc)
                raise
        finally:
            self._lock.release()

    @staticmethod
    def _lost(conn: psycopg.Connection[Any], exc: Exception) -> None:
        """After an error in a user's hands: a lost connection is closed, so that whoever comes
        next opens another; a lock or statement timeout leaves a working one as it is."""
        if not isinstance(exc, GAVE_UP) or conn.closed or conn.broken:
            conn.close()

    def _connection(self, lock_timeout_ms: int | None) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = self.database.connect(autocommit=True)
            self.generation += 1
            self._lock_timeout = None
            self.on_connect(conn)
        # Behind a pooler in transaction mode a session SET would leak to other clients of the
        # server connection (and not stay with us): the role's setting applies instead.
        if lock_timeout_ms != self._lock_timeout and not self.database.transaction_pooling:
            if lock_timeout_ms is None:
                conn.execute("RESET lock_timeout")
            else:
                conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            self._lock_timeout = lock_timeout_ms
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class Process:
    """A registered pgjobs process (worker, dispatcher, scheduler or supervisor)."""

    kind = "process"
    # The main connection's lock_timeout in ms (None: the server's): a statement that would wait
    # longer for a lock held elsewhere — a semaphore row in an application's open transaction, a
    # table a migration locks — raises one of GAVE_UP, and the caller does the work again later.
    lock_timeout_ms: int | None = None

    def __init__(
        self,
        database: Database,
        config: Config,
        *,
        supervisor_id: int | None = None,
        metadata: dict[str, Any] | None = None,
        link: Link | None = None,
        resident: bool = False,
    ) -> None:
        """``resident``: the process runs as a thread of its supervisor (the dispatchers and the
        scheduler always; workers too in ``mode: async``).  ``link``: a connection to share with
        the process that made it (the supervisor's, for the dispatchers and the scheduler);
        without one the process opens its own, which its heartbeat shares."""
        self.database = database
        self.config = config
        self.supervisor_id = supervisor_id
        self.metadata = metadata or {}
        # PGJOBS_HOSTNAME: the host name recorded for this process (containers that share a
        # name, or several "hosts" on one machine in the chaos tests).
        self.hostname = os.environ.get("PGJOBS_HOSTNAME") or socket.gethostname()
        self.pid = os.getpid()
        self.name = f"{self.kind}-{uuid.uuid4().hex[:12]}"
        self.id: int | None = None
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.exit_now = False
        self.resident = resident or link is not None
        self._own_link = link is None
        self.link = link or Link(database, self.on_connect)
        self._generation = 0  # the link's connection we last used (see _saw)
        self._heartbeat: threading.Thread | None = None
        self._parent_pid = os.getppid()
        self.reconnected = False  # set after a lost connection; subclasses reconcile
        self.pruned = False  # the heartbeat found our row gone: someone recovered our jobs
        self.crashed = False  # the loop died of an error: deregistration recovers, counted
        self._beat_now = threading.Event()  # wakes the heartbeat thread (after a reconnect)
        # The heartbeat beats until the process closes, not until it is asked to stop: a worker
        # letting its jobs finish at shutdown is alive, and must not be judged dead meanwhile.
        self._closed = threading.Event()
        # Unbroken contact with the database, as the heartbeat thread sees it (monotonic times):
        # since when every beat succeeded with no gap longer than ``contact_gap``.  A pruner
        # trusts other processes' heartbeats only after a threshold of such contact.
        self.contact_since: float | None = None
        self.last_contact: float | None = None
        interval = config.heartbeat_interval
        self.contact_gap = interval + max(1.0, interval / 2)
        # Until when (monotonic) no other process can have judged us dead: a pruner ends a
        # process whose heartbeat is older than process_alive_threshold (database clock), so
        # until that long after the last beat that found our row was sent.  A worker starts a
        # claimed job only before it (see JobThreads): a claim whose reply came back late — held
        # up by a partition, or a process frozen meanwhile — may hold jobs a pruner has already
        # recovered and another worker run.  Infinite until the process registers.
        self.safe_until = INF

    # -- the connection ---------------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The link's connection as it is (opened if needed); for tests and inspection only:
        work goes through :meth:`with_retry`, which takes the link in turn."""
        with self.link.use(self.lock_timeout_ms) as conn:
            return conn

    def on_connect(self, conn: psycopg.Connection[Any]) -> None:
        """Hook for subclasses: set up a new main connection (also after a reconnect)."""

    def _saw(self, generation: int) -> None:
        """Note the link's connection we are using: a new one since our last use means the
        one before was lost (by us or by a thread sharing it), and replies with it."""
        if generation != self._generation:
            if self._generation:
                self.reconnected = True
            self._generation = generation

    def with_retry(self, what: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``fn(conn)`` with the link held; on a connection failure reconnect with backoff
        and run it again."""
        attempt = 0
        while True:
            try:
                result = self.link.run(self.lock_timeout_ms, fn)
                self._saw(self.link.generation)
                return result
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnreachable) as exc:
                if isinstance(exc, GAVE_UP):
                    raise  # a lock_timeout / statement_timeout: the caller decides, not a lost link
                self.reconnected = True
                self.contact_since = None  # an outage, maybe: contact must be unbroken again
                self._beat_now.set()  # the heartbeat may have lost its connection too: beat now
                delay = RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)]
                if attempt == 0:
                    log.warning("%s: database connection lost (%s); reconnecting", what, exc)
                attempt += 1
                if self.orphaned():  # our supervisor died while we waited for the database
                    self.stop()
                if self.exit_now or (self.stopping.is_set() and attempt > 3):
                    raise  # stopping: do not outlive systemd's TimeoutStopSec on a dead database
                time.sleep(delay)

    def execute(self, template: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        statement = self.database.sql(template)

        def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

        return self.with_retry(self.kind, run)

    # -- registration and heartbeat ---------------------------------------------------------

    def execute_durable(
        self, template: str, params: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """``execute`` with synchronous commit on, whatever the connection's setting: for the
        statements a PostgreSQL crash must not forget (registration, giving jobs back)."""
        statement = self.database.sql(template)

        def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = on")
                cur = conn.execute(statement, params)
                return cur.fetchall() if cur.description else []

        return self.with_retry(self.kind, run)

    def _beat_sent(self, at: float) -> None:
        """A beat (or the registration) sent at ``at`` (monotonic) found our row: nobody can
        judge us dead before ``at`` plus the threshold (less a margin for clock rates)."""
        self.safe_until = at + self.config.process_alive_threshold * SAFE_SHARE

    def register(self) -> None:
        sent = time.monotonic()
        rows = self.execute_durable(
            store.REGISTER,
            {
                "kind": self.kind,
                "name": self.name,
                "hostname": self.hostname,
                "pid": self.pid,
                "supervisor_id": self.supervisor_id,
                "metadata": json.dumps(self.metadata),
            },
        )
        self.id = int(rows[0][0])
        self._beat_sent(sent)
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name=f"pgjobs-heartbeat-{self.id}", daemon=True
        )
        self._heartbeat.start()

    def deregister(self) -> None:
        """Delete our row, giving back (uncounted) any job still claimed under it — such as one
        claimed by a statement whose reply was lost — in one transaction."""
        self._closed.set()  # no beat after this: it would find the row gone and cry "pruned"
        if self.id is not None and not self.pruned:
            process_id = self.id
            try:
                ended = self.with_retry(
                    self.kind,
                    lambda c: recovery.end(
                        c,
                        self.database,
                        [process_id],
                        recover=self.crashed,
                        max_interruptions=self.config.max_interruptions,
                    ),
                )
                # released (uncounted), or recovered (counted) after a crash of the loop
                ended.emit("claimed but not running at deregistration")
            except (
                psycopg.Error,
                DatabaseUnreachable,
            ) as exc:  # the supervisor or a pruner will clean up
                log.warning("%s %s: could not deregister: %s", self.kind, self.name, exc)

    def in_contact(self, threshold: float) -> bool:
        """Whether this process has been in unbroken contact with the database (every beat
        on time) for ``threshold`` seconds, up to now."""
        now = time.monotonic()
        return (
            self.contact_since is not None
            and self.last_contact is not None
            and now - self.contact_since >= threshold
            and now - self.last_contact <= self.contact_gap
        )

    def _heartbeat_loop(self) -> None:
        statement = self.database.sql(store.HEARTBEAT)
        interval = self.config.heartbeat_interval
        self.contact_since = self.last_contact = time.monotonic()  # registration just succeeded
        delay = interval
        while not self._closed.is_set():
            self._beat_now.wait(delay)
            self._beat_now.clear()
            if self._closed.is_set():
                break
            if self.orphaned() and not self.stopping.is_set():
                log.error("%s %s: supervisor exited; stopping", self.kind, self.name)
                self.stop()
            sent = time.monotonic()
            try:
                # On the process's own link, in turn with its loop: a statement of the loop
                # holds it for milliseconds (its lock_timeout bounds a wait for a row), and
                # the link is handed over in arrival order, so the beat is never starved.
                with self.link.use(self.lock_timeout_ms) as conn:
                    alive = conn.execute(statement, {"id": self.id}).fetchone()
            except GAVE_UP as exc:  # our row is locked (a pruner ending us?): look again soon
                log.info("%s %s: heartbeat waited too long: %s", self.kind, self.name, exc)
                delay = min(1.0, interval)
                continue
            except (psycopg.Error, DatabaseUnreachable) as exc:
                log.warning("%s %s: heartbeat failed: %s", self.kind, self.name, exc)
                self.contact_since = None
                delay = min(1.0, interval)  # beat again soon: others may be judging us
                continue
            except Exception as exc:  # a bug: report it, keep beating
                events.thread_error(exc, f"{self.kind} {self.name} heartbeat")
                continue
            now = time.monotonic()
            if self.last_contact is None or now - self.last_contact > self.contact_gap:
                self.contact_since = now  # contact was broken: it starts again
            elif self.contact_since is None:
                self.contact_since = now
            self.last_contact = now
            delay = interval
            if alive is not None:
                self._beat_sent(sent)
            if alive is None:
                log.error(
                    "%s %s: pruned as dead by another process; stopping", self.kind, self.name
                )
                self.pruned = True
                self.stop()
                return

    def orphaned(self) -> bool:
        """A supervised process whose supervisor died (it was re-parented)."""
        return (
            self.supervisor_id is not None
            and not self.resident
            and os.getppid() != self._parent_pid
        )

    # -- signals and stopping ---------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop gracefully, SIGQUIT at once (main thread only).

        The handlers take no lock (see :mod:`pgjobs.processes.signals`): :meth:`_on_signal`
        runs in the signal thread, so a signal can land anywhere without deadlocking us.
        """
        signals.install(self._on_signal)

    def _on_signal(self, signum: int) -> None:
        # Idempotent: under a terminal a child gets Ctrl-C's SIGINT and then the supervisor's
        # SIGTERM; neither turns a graceful stop into an immediate one, only SIGQUIT does.
        if signum == signal.SIGQUIT:
            self.exit_now = True
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def close(self) -> None:
        self.stopping.set()
        self._closed.set()
        self._beat_now.set()
        if self._own_link:
            self.link.close()
        if not self.resident:  # a resident's database is its supervisor's
            self.database.close()
