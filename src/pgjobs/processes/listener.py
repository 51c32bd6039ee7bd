"""LISTEN/NOTIFY: wakes an idle process within milliseconds of a commit.

One dedicated connection per process LISTENs on the schema's channel; a notification whose
payload is one of the process's queues (or ``*``) sets the process's wake event.  Correctness
never depends on it: polling stays the fallback.  On a lost connection the listener reconnects
with backoff, re-LISTENs and wakes the process once (notifications sent meanwhile were lost).
Behind a pooler in transaction mode (PgBouncer) the listener connects to the direct URL
(``direct_database_url``); where LISTEN cannot work (``listen_notify: false``, or a pooled URL
with no direct one) no listener runs and the process says so once in its log.

Under ``pgjobs start`` one listener serves the whole host: the supervisor's.  It hands every
notification on to its worker processes through a pipe each (:class:`Relay` writes,
:func:`read_relay` reads) and to the workers that run as its threads (``mode: async``) directly —
one LISTEN connection per host instead of one per process.  A pipe that is full (a worker too
busy to read) drops the notification: the worker polls, as it does whenever the listener is down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from pgjobs import events
from pgjobs.db.database import Database
from pgjobs.db.names import quote_ident
from pgjobs.processes.base import RECONNECT_BACKOFF

log = logging.getLogger("pgjobs")


class Listener(threading.Thread):
    def __init__(
        self,
        database: Database,
        channel: str,
        wake: Callable[[str], None],
        stopping: threading.Event,
        *,
        application_name: str | None = None,
    ) -> None:
        super().__init__(name="pgjobs-listener", daemon=True)
        self.database = database
        self.application_name = application_name
        self.channel = channel
        self.on_notify = wake
        self.stopping = stopping
        self.connected = threading.Event()

    def run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                # the direct URL behind a pooler
                conn = self.database.connect_session(application_name=self.application_name)
                conn.execute(f"LISTEN {quote_ident(self.channel)}")
                if attempt:
                    log.info("listener reconnected to %s", self.channel)
                    self.on_notify("*")  # anything sent while we were away was lost
                attempt = 0
                self.connected.set()
                while not self.stopping.is_set():
                    for note in conn.notifies(timeout=1.0):
                        self.on_notify(note.payload)
            except Exception as exc:
                self.connected.clear()
                if self.stopping.is_set():
                    break
                if attempt == 0:
                    log.warning("listener lost its connection (%s); polling meanwhile", exc)
                delay = RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)]
                attempt += 1
                self.stopping.wait(delay)
            finally:
                if conn is not None:
                    conn.close()


class Relay:
    """The supervisor's side of the host listener: a pipe per worker process (the read end is
    the child's, named in its spec) and callbacks for the processes that run as its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipes: dict[object, int] = {}  # a child -> the write end of its pipe
        self._direct: dict[object, Callable[[str], None]] = {}

    def pipe(self, child: object) -> int:
        """A new pipe for ``child`` (replacing any earlier one); returns the read end, which
        the caller passes to the child and then closes."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        with self._lock:
            old = self._pipes.pop(child, None)
            self._pipes[child] = write_end
        if old is not None:
            os.close(old)
        return read_end

    def direct(self, owner: object, on_notify: Callable[[str], None]) -> None:
        with self._lock:
            self._direct[owner] = on_notify

    def drop(self, owner: object) -> None:
        with self._lock:
            write_end = self._pipes.pop(owner, None)
            self._direct.pop(owner, None)
        if write_end is not None:
            os.close(write_end)

    def send(self, payload: str) -> None:
        line = payload.replace("\n", " ").encode() + b"\n"
        with self._lock:  # held while writing: a pipe closed meanwhile could be a reused fd
            for write_end in self._pipes.values():
                # Non-blocking, under PIPE_BUF: whole or nothing.  Full: the worker polls;
                # gone: the supervisor replaces it.
                with contextlib.suppress(OSError):
                    os.write(write_end, line)
            direct = list(self._direct.values())
        for on_notify in direct:
            on_notify(payload)

    def close(self) -> None:
        with self._lock:
            pipes = list(self._pipes.values())
            self._pipes.clear()
            self._direct.clear()
        for write_end in pipes:
            os.close(write_end)


def read_relay(fd: int, on_notify: Callable[[str], None], stopping: threading.Event) -> None:
    """A worker's side: hand each line the supervisor's listener relays to ``on_notify``, until
    the pipe ends (the supervisor is gone: the orphan check stops us) or we stop."""
    pending = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while not stopping.is_set():
            try:
                data = pipe.read(65536)
            except OSError:
                return
            if not data:
                return
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                try:
                    on_notify(line.decode())
                except Exception as exc:  # a bug: report it, keep reading
                    events.thread_error(exc, "relay reader")
