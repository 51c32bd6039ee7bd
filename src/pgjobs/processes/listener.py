"""LISTEN/NOTIFY: wakes an idle process within milliseconds of a commit.

One dedicated connection per process LISTENs on the schema's channel; a notification whose
payload is one of the process's queues (or ``*``) sets the process's wake event.  Correctness
never depends on it: polling stays the fallback.  On a lost connection the listener reconnects
with backoff, re-LISTENs and wakes the process once (notifications sent meanwhile were lost).
Behind a pooler in transaction mode (PgBouncer) the listener connects to the direct URL
(``direct_database_url``); where LISTEN cannot work (``listen_notify: false``, or a pooled URL
with no direct one) no listener runs and the process says so once in its log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

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
    ) -> None:
        super().__init__(name="pgjobs-listener", daemon=True)
        self.database = database
        self.channel = channel
        self.on_notify = wake
        self.stopping = stopping
        self.connected = threading.Event()

    def run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self.database.connect_session()  # the direct URL behind a pooler
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
