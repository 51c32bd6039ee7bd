"""Queues as operators see them: size, latency, pausing.  ``pgjobs.Queue("mailers").pause()``.

A paused queue still receives jobs; workers skip it (within a second) until it is resumed
(at once: resuming notifies the workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from pgjobs import clock
from pgjobs.db.database import Database
from pgjobs.store import pauses as pauses_store
from pgjobs.store import rates as rates_store
from pgjobs.store import ready as ready_store
from pgjobs.store.jobs import notify_channel


@dataclass(frozen=True)
class QueueInfo:
    name: str
    size: int
    latency: float  # seconds since the oldest ready job was enqueued (0 when empty)
    paused: bool


class Queue:
    """One queue by name, on the default database (or the one given)."""

    def __init__(self, name: str, *, database: Database | None = None) -> None:
        self.name = name
        self._database = database

    @property
    def database(self) -> Database:
        if self._database is None:
            from pgjobs.runtime import get_database

            self._database = get_database()
        return self._database

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    def pause(self) -> None:
        with self.database.connection() as conn:
            conn.execute(self.database.sql(pauses_store.PAUSE), {"queue": self.name})

    def resume(self) -> None:
        params = {"queue": self.name, "channel": notify_channel(self.database.schema)}
        with self.database.connection() as conn:
            conn.execute(self.database.sql(pauses_store.RESUME), params)

    @property
    def paused(self) -> bool:
        return self.name in paused_queues(self.database)

    def _stats(self) -> tuple[int, datetime | None]:
        with self.database.connection() as conn:
            row = conn.execute(
                self.database.sql(ready_store.QUEUE_STATS), {"queue": self.name}
            ).fetchone()
        assert row is not None
        return int(row[0]), row[1]

    @property
    def size(self) -> int:
        """Ready jobs in the queue."""
        return self._stats()[0]

    @property
    def latency(self) -> float:
        """Seconds the oldest ready job has waited (0.0 for an empty queue)."""
        oldest = self._stats()[1]
        return max(0.0, (clock.now() - oldest).total_seconds()) if oldest else 0.0

    def info(self, paused: frozenset[str] | None = None) -> QueueInfo:
        size, oldest = self._stats()
        latency = max(0.0, (clock.now() - oldest).total_seconds()) if oldest else 0.0
        paused = paused_queues(self.database) if paused is None else paused
        return QueueInfo(self.name, size, latency, self.name in paused)


def paused_queues(database: Database) -> frozenset[str]:
    with database.connection() as conn:
        return frozenset(r[0] for r in conn.execute(database.sql(pauses_store.LIST)))


def all_queues(database: Database) -> list[QueueInfo]:
    """Every queue with ready jobs or a pause, with size, latency and paused state."""
    paused = paused_queues(database)
    with database.connection() as conn:
        names = {r[0] for r in conn.execute(database.sql(ready_store.READY_QUEUES))}
    return [Queue(n, database=database).info(paused) for n in sorted(names | paused)]


@dataclass(frozen=True)
class RateLimitInfo:
    """A rate limit's key as it stands: starts in its window now, jobs waiting in its line."""

    key: str
    limit: int
    period: timedelta
    started: int  # starts inside the current window
    waiting: int  # jobs in the key's line
    free_at: datetime | None  # when the line moves next (None: nobody waits)


def rate_limits(
    database: Database,
    limit: int = 1000,
    *,
    key: str | None = None,
    conn: psycopg.Connection[Any] | None = None,
) -> list[RateLimitInfo]:
    """The rate-limit keys in use (``pgjobs status``, the dashboard), by key; or just ``key``
    (on ``conn`` when given)."""
    params = {"guard": rates_store.GUARD, "limit": limit, "key": key}
    if conn is None:
        with database.connection() as own:
            return rate_limits(database, limit, key=key, conn=own)
    rows = conn.execute(database.sql(rates_store.LIST), params).fetchall()
    return [RateLimitInfo(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), r[5]) for r in rows]
