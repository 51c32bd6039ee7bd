"""The dispatcher: moves due scheduled jobs to ready, in batches, back to back while behind,
moves jobs waiting for a rate limit to ready when its budget frees (:mod:`pgjobs.store.rates`),
and runs the concurrency maintenance (:func:`pgjobs.operations.concurrency.maintain`) every
``concurrency_maintenance_interval`` seconds.

Several dispatchers may run side by side: the dispatch statement locks with ``SKIP LOCKED`` and
moves each row exactly once (see :mod:`pgjobs.store.scheduled`); due jobs of limited classes go
to blocked and are unblocked right after, as slots allow.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import psycopg

from pgjobs import clock, events
from pgjobs.config.queue import Config, DispatcherConfig
from pgjobs.db.database import GAVE_UP, Database
from pgjobs.operations import concurrency
from pgjobs.processes.poller import Poller
from pgjobs.store import blocked as blocked_store
from pgjobs.store import rates as rates_store
from pgjobs.store import scheduled as store
from pgjobs.store.jobs import notify_channel


class Dispatcher(Poller):
    kind = "dispatcher"
    listens = False

    def __init__(
        self, database: Database, config: Config, dispatcher: DispatcherConfig, **kwargs: Any
    ) -> None:
        metadata = {
            "polling_interval": dispatcher.polling_interval,
            "batch_size": dispatcher.batch_size,
        }
        super().__init__(database, config, metadata=metadata, **kwargs)
        self.dispatcher = dispatcher
        self._maintained_at = time.monotonic()  # the first pass comes one interval in
        # Whether a rate limit's line may need moving: what the last look at the next due times
        # said (a line's free_at), so that a dispatcher of jobs without rate limits runs no
        # transaction for them each poll.  True at first: lines may wait from before we started.
        self._lines_waiting = True
        self._keys_left: list[str] = []  # keys to unblock that a lock timeout left for later

    def title(self) -> str:
        return f"pgjobs-dispatcher: every {self.dispatcher.polling_interval}s"

    def dispatch(self, now: datetime | None = None) -> int:
        """Move one batch of due jobs to ready; returns how many moved."""
        started = time.perf_counter()
        rows = self.execute(
            store.DISPATCH_DUE,
            {
                "now": now or clock.now(),
                "limit": self.dispatcher.batch_size,
                "channel": notify_channel(self.database.schema),
            },
        )
        moved, keys = int(rows[0][0]), rows[0][2]
        if self.reconnected:
            # A reply lost with the connection may have named keys to unblock: try them all.
            self.reconnected = False
            lost = self.execute(blocked_store.KEYS, {"limit": concurrency.EXPIRED_KEYS_PER_PASS})
            keys = [*(keys or []), *(r[0] for r in lost)]
        keys = [*self._keys_left, *(keys or [])]
        self._keys_left = []
        if keys:
            try:
                concurrency.unblock(
                    self.execute, keys, channel=notify_channel(self.database.schema)
                )
            except GAVE_UP:  # a lock held elsewhere: these keys come first next pass
                self._keys_left = keys
                raise
        if moved and "dispatch_scheduled" in events.active:
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            events.emit(
                "dispatch_scheduled", process_id=self.id, count=moved, duration_ms=duration_ms
            )
        return moved

    def maintain(self, now: datetime | None = None) -> tuple[int, concurrency.Unblocked]:
        """One concurrency-maintenance pass: (semaphores expired, jobs unblocked)."""
        self._maintained_at = time.monotonic()
        return concurrency.maintain(
            self.execute,
            channel=notify_channel(self.database.schema),
            alive_threshold=self.config.process_alive_threshold,
            now=now,
        )

    def release_rates(self) -> int:
        """Move the jobs waiting for rate limits whose budget has freed to ready; returns how
        many moved (see :mod:`pgjobs.store.rates`; the times are the database's clock)."""
        params = {
            "keys": rates_store.KEYS_PER_PASS,
            "guard": rates_store.GUARD,
            "channel": notify_channel(self.database.schema),
        }
        lock_due, move = (self.database.sql(s) for s in (rates_store.LOCK_DUE, rates_store.MOVE))

        def run(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                locked = [r[0] for r in conn.execute(lock_due, params)]
                if not locked:
                    return 0
                row = conn.execute(move, {**params, "locked": locked}).fetchone()
                return int(row[0]) if row else 0

        moved = self.with_retry(self.kind, run)
        if moved and "rate_release" in events.active:
            events.emit("rate_release", process_id=self.id, count=moved)
        return moved

    def poll(self) -> float:
        interval = self.dispatcher.concurrency_maintenance_interval
        if self.dispatcher.concurrency_maintenance and (
            time.monotonic() - self._maintained_at >= interval
        ):
            self.maintain()
        if self._lines_waiting:
            self.release_rates()
        if self.dispatch() >= self.dispatcher.batch_size:
            return 0.0  # a backlog: go again at once
        # Sleep until the next scheduled job is due or the next rate-limit line may move.
        due, rates_in = self.execute(store.NEXT_DUE)[0]
        self._lines_waiting = rates_in is not None
        wait = self.dispatcher.polling_interval
        if due is not None:  # scheduled times are compared with this host's clock
            wait = min(wait, float((due - clock.now()).total_seconds()))
        if rates_in is not None:  # a rate limit's moment, on the database's clock
            wait = min(wait, float(rates_in))
        return max(0.0, wait)
