"""The base of every pgjobs process: registration, heartbeats, a reconnecting connection, signals.

Guarantees:

- A process registers a row in ``pgjobs_processes`` before it claims anything and deletes it on a
  clean exit.  Its heartbeat comes from a dedicated thread on a dedicated connection, so a busy or
  CPU-bound job cannot starve it (the GIL is released while the thread waits on the socket).
- If the heartbeat finds the row gone (the process was pruned as dead after a stall), the process
  stops: its jobs have been recovered by someone else, and it must not finish them twice.
- Database errors never crash the process: the connection is reopened with backoff and the work
  is retried (a PostgreSQL restart is survived).
- Signal handlers only record the signal and wake the loop.
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
from types import FrameType
from typing import Any, TypeVar

import psycopg

from pgjobs import clock, events
from pgjobs.config import Config
from pgjobs.db.database import Database
from pgjobs.errors import DatabaseUnreachable
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

    # -- the connection ---------------------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.database.connect(autocommit=True)
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
                self.reconnected = True
                if self._conn is not None:
                    self._conn.close()
                delay = RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)]
                if attempt == 0:
                    log.warning("%s: database connection lost (%s); reconnecting", what, exc)
                attempt += 1
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

    def register(self) -> None:
        rows = self.execute(
            store.REGISTER,
            {
                "kind": self.kind,
                "name": self.name,
                "hostname": self.hostname,
                "pid": self.pid,
                "supervisor_id": self.supervisor_id,
                "metadata": json.dumps(self.metadata),
                "now": clock.now(),
            },
        )
        self.id = int(rows[0][0])
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name=f"pgjobs-heartbeat-{self.id}", daemon=True
        )
        self._heartbeat.start()

    def deregister(self) -> None:
        if self.id is not None:
            try:
                self.execute(store.DEREGISTER, {"id": self.id})
            except (
                psycopg.Error,
                DatabaseUnreachable,
            ) as exc:  # the supervisor or a pruner will clean up
                log.warning("%s %s: could not deregister: %s", self.kind, self.name, exc)

    def _heartbeat_loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        statement = self.database.sql(store.HEARTBEAT)
        while not self.stopping.wait(self.config.heartbeat_interval):
            if self.orphaned():
                log.error("%s %s: supervisor exited; stopping", self.kind, self.name)
                self.stop()
                return
            try:
                if conn is None or conn.closed:
                    conn = self.database.connect(autocommit=True)
                alive = conn.execute(statement, {"now": clock.now(), "id": self.id}).fetchone()
            except (psycopg.Error, DatabaseUnreachable) as exc:
                log.warning("%s %s: heartbeat failed: %s", self.kind, self.name, exc)
                if conn is not None:
                    conn.close()
                conn = None
                continue
            except Exception as exc:  # a bug: report it, keep beating
                events.thread_error(exc, f"{self.kind} {self.name} heartbeat")
                continue
            if alive is None:
                log.error(
                    "%s %s: pruned as dead by another process; stopping", self.kind, self.name
                )
                self.id = None
                self.stop()
                return
        if conn is not None:
            conn.close()

    def orphaned(self) -> bool:
        """A supervised process whose supervisor died (it was re-parented)."""
        return self.supervisor_id is not None and os.getppid() != self._parent_pid

    # -- signals and stopping ---------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGQUIT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGQUIT:
            self.exit_now = True
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def close(self) -> None:
        self.stopping.set()
        if self._conn is not None:
            self._conn.close()
        self.database.close()
