"""The base of every pgjobs process: registration, heartbeats, a reconnecting connection, signals.

Guarantees:

- A process registers a row in ``pgjobs_processes`` before it claims anything and deletes it on a
  clean exit.  Its heartbeat comes from a dedicated thread on a dedicated connection, so a busy or
  CPU-bound job cannot starve it (the GIL is released while the thread waits on the socket).
- If the heartbeat finds the row gone (the process was pruned as dead after a stall), the process
  stops: its jobs have been recovered by someone else, and it must not finish them twice.
- Database errors never crash the process: the connection is reopened with backoff and the work
  is retried (a PostgreSQL restart is survived).
- Signal handlers take no lock: they write the signal to a pipe, and a thread stops the process
  (:mod:`pgjobs.processes.signals`), so a signal cannot deadlock it wherever it lands.  SIGTERM
  and SIGINT stop gracefully, any number of times in any order; only SIGQUIT stops at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
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


def set_proctitle(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        pass


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
    ) -> None:
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
        self._conn: psycopg.Connection[Any] | None = None
        self._heartbeat: threading.Thread | None = None
        self._parent_pid = os.getppid()
        self.reconnected = False  # set after a lost connection; subclasses reconcile
        self.pruned = False  # the heartbeat found our row gone: someone recovered our jobs
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

    # -- the connection ---------------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.database.connect(autocommit=True)
            # Behind a pooler in transaction mode a session SET would leak to other clients of
            # the server connection (and not stay with us): the role's setting applies instead.
            if self.lock_timeout_ms is not None and not self.database.transaction_pooling:
                self._conn.execute(f"SET lock_timeout = {int(self.lock_timeout_ms)}")
            self.on_connect(self._conn)
        return self._conn

    def on_connect(self, conn: psycopg.Connection[Any]) -> None:
        """Hook for subclasses: set up a new main connection (also after a reconnect)."""

    def with_retry(self, what: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``fn(conn)``; on a connection failure reconnect with backoff and run it again."""
        attempt = 0
        while True:
            try:
                return fn(self.conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnreachable) as exc:
                if isinstance(exc, GAVE_UP):
                    raise  # a lock_timeout / statement_timeout: the caller decides, not a lost link
                self.reconnected = True
                self.contact_since = None  # an outage, maybe: contact must be unbroken again
                self._beat_now.set()  # the heartbeat may have lost its connection too: beat now
                if self._conn is not None:
                    self._conn.close()
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

    def register(self) -> None:
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
                        recover=False,
                        max_interruptions=self.config.max_interruptions,
                    ),
                )
                if ended.released:
                    events.emit(
                        "release_claimed",
                        process_id=process_id,
                        process=self.name,
                        count=ended.released,
                        reason="claimed but not running at deregistration",
                    )
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
        conn: psycopg.Connection[Any] | None = None
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
            try:
                if conn is None or conn.closed:
                    conn = self.database.connect(autocommit=True)
                alive = conn.execute(statement, {"id": self.id}).fetchone()
            except (psycopg.Error, DatabaseUnreachable) as exc:
                log.warning("%s %s: heartbeat failed: %s", self.kind, self.name, exc)
                self.contact_since = None
                if conn is not None:
                    conn.close()
                conn = None
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
            if alive is None:
                log.error(
                    "%s %s: pruned as dead by another process; stopping", self.kind, self.name
                )
                self.pruned = True
                self.stop()
                return
        if conn is not None:
            conn.close()

    def orphaned(self) -> bool:
        """A supervised process whose supervisor died (it was re-parented)."""
        return self.supervisor_id is not None and os.getppid() != self._parent_pid

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
        if self._conn is not None:
            self._conn.close()
        self.database.close()
