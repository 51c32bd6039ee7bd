"""A handle on one pgjobs database: URL, schema, connection pools and the SQL for its schema.

Every process holds one :class:`Database`.  Its pools open lazily, so importing or configuring
pgjobs never connects; ``pgjobs.configure(...)`` sets the process-wide default used when a call
is not given a connection of its own.

Every connection it opens (pooled, dedicated, sync or async) carries a connect timeout and TCP
keepalives (:data:`CONNECTION_DEFAULTS`), so a database host that vanished without closing its
sockets -- a failover, a partition, a NAT or firewall that forgot the connection -- makes the
next statement or wait fail within about 30 seconds instead of hanging for ever.  That bound is
what lets a process notice a half-open heartbeat or listener connection, reconnect and beat
well before other hosts consider it dead.  Values the URL sets itself are kept.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import MappingProxyType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgjobs.db.names import sql
from pgjobs.db.urls import psycopg_url, redact
from pgjobs.errors import DatabaseUnreachable

DEFAULT_POOL_SIZE = 4
# A statement that gave up waiting for a lock (lock_timeout), was cancelled (statement_timeout,
# an operator's pg_cancel_backend) or was chosen to end a deadlock (two finishes whose triggers
# lock the rows of the same batches in opposite orders, pgjobs.workflows): it rolled back whole,
# the connection is fine, and the work can simply be done again later.  Not a lost connection.
GAVE_UP = (
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,
    psycopg.errors.DeadlockDetected,
)
# A pooled connection idle longer than this is checked (one round trip) before it is handed out,
# so a database restart costs no failed call; busy connections skip the check on the hot path.
CHECK_AFTER_IDLE = 1.0

# libpq parameters every pgjobs connection gets unless its URL sets them.  Together they bound how
# long a dead peer goes unnoticed to about 30 s: far below heartbeat_interval (60 s) and
# process_alive_threshold (300 s), so a process whose heartbeat connection went half-open finds
# out, reconnects and beats long before another host may prune it; far above a network blip (a
# few lost packets are retransmitted within seconds).  A slow statement is never cut short: a
# live server acknowledges the query and answers probes however long it computes.

# Seconds to establish a connection (per address tried; libpq's minimum is 2): a black-holed host
# fails here instead of after about 2 minutes (the SYN retries; psycopg's fallback timeout).
CONNECT_TIMEOUT = 10
# An idle or waiting connection (a listener, a heartbeat between beats, a pooled connection, a
# query awaiting its result) sends a probe after KEEPALIVES_IDLE s of silence, then one every
# KEEPALIVES_INTERVAL s, and is closed after KEEPALIVES_COUNT unanswered: 10 + 3 * 5 = 25 s.
# (On Linux TCP_USER_TIMEOUT takes over the count: closed once probing and 30 s without a reply.)
KEEPALIVES_IDLE = 10
KEEPALIVES_INTERVAL = 5
KEEPALIVES_COUNT = 3
# Milliseconds sent data may stay unacknowledged before the connection is closed: catches a peer
# that vanished while a statement was being sent, which keepalives (idle connections only) do not.
TCP_USER_TIMEOUT = 30_000
CONNECTION_DEFAULTS: Mapping[str, str] = MappingProxyType(
    {
        "connect_timeout": str(CONNECT_TIMEOUT),
        "keepalives": "1",
        "keepalives_idle": str(KEEPALIVES_IDLE),
        "keepalives_interval": str(KEEPALIVES_INTERVAL),
        "keepalives_count": str(KEEPALIVES_COUNT),
        "tcp_user_timeout": str(TCP_USER_TIMEOUT),
    }
)
# The defaults that libpq also reads from the environment: a variable that is set wins too.
_ENVIRONMENT = {"connect_timeout": "PGCONNECT_TIMEOUT"}


def connection_defaults(url: str) -> dict[str, str]:
    """The :data:`CONNECTION_DEFAULTS` that ``url`` (a URL or ``key=value`` string) leaves unset.

    Pass them as keyword arguments to ``psycopg.connect`` (or SQLAlchemy's ``connect_args``).
    A Unix-socket connection accepts them; libpq applies only ``connect_timeout`` there.
    """
    given = set(conninfo_to_dict(url))
    given.update(key for key, variable in _ENVIRONMENT.items() if variable in os.environ)
    return {key: value for key, value in CONNECTION_DEFAULTS.items() if key not in given}


def _unreachable(url: str, exc: Exception) -> DatabaseUnreachable:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseUnreachable(f"cannot connect to the pgjobs database at {redact(url)}: {reason}")


class PooledConnection(psycopg.Connection[TupleRow]):
    """A connection of a :class:`Database`'s pool: a psycopg connection that keeps one cursor
    for :meth:`Database.checkout` (a single enqueue's statement), made on first use.

    psycopg's ``conn.execute`` makes a cursor per statement: ~20 µs of the client's CPU of a
    ~400 µs single enqueue, measured against a kept cursor on the same statement.
    """

    statement_cursor: psycopg.Cursor[TupleRow] | None = None


class Database:
    """One pgjobs database and the pooled connections to it."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        application_name: str = "pgjobs",
        direct_url: str | None = None,
        transaction_pooling: bool = False,
    ) -> None:
        self.url = psycopg_url(url)
        self.schema = schema
        # Behind a pooler in transaction mode (PgBouncer): no server-side prepared statements and
        # no session state on ``url``; what needs a session (LISTEN) uses ``direct_url``, a
        # direct connection to PostgreSQL, or does without (see docs/deployment.md).
        self.transaction_pooling = transaction_pooling
        self.direct_url = psycopg_url(direct_url) if direct_url else None
        self.pool_size = pool_size
        self.application_name = application_name
        self._pool: ConnectionPool[PooledConnection] | None = None
        self._async_pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] | None = None
        self._lock = threading.Lock()
        # When each pooled connection was last handed back (weak: closed ones drop out).  Kept
        # by connection() itself, not by a pool reset callback: psycopg_pool runs a reset in a
        # worker thread, a thread hand-off on every return that cost single enqueues ~25 %.
        self._used: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()

    def _idle_too_long(self, conn: object) -> bool:
        return time.monotonic() - self._used.get(conn, 0.0) > CHECK_AFTER_IDLE

    def _check(self, conn: psycopg.Connection[TupleRow]) -> None:
        """Test a connection that sat idle (the server may have restarted meanwhile)."""
        if self._idle_too_long(conn):
            ConnectionPool.check_connection(conn)

    async def _check_async(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        if self._idle_too_long(conn):
            await AsyncConnectionPool.check_connection(conn)

    def renamed(self, application_name: str, *, pool_size: int | None = None) -> Database:
        """The same database (URLs, schema, pooling) for another user, named in
        ``pg_stat_activity`` as ``application_name``, with pools of its own."""
        return Database(
            self.url,
            schema=self.schema,
            pool_size=self.pool_size if pool_size is None else pool_size,
            application_name=application_name,
            direct_url=self.direct_url,
            transaction_pooling=self.transaction_pooling,
        )

    def __repr__(self) -> str:
        return f"Database({redact(self.url)!r}, schema={self.schema!r})"

    def sql(self, template: str) -> str:
        """A statement template with this database's table names filled in (cached)."""
        return sql(template, self.schema)

    def runner(
        self, conn: psycopg.Connection[Any]
    ) -> Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]:
        """``run(template, params) -> rows`` on ``conn`` (for helpers that take a runner)."""

        def run(template: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
            cur = conn.execute(self.sql(template), params)
            return cur.fetchall() if cur.description else []

        return run

    def _kwargs(self, url: str | None = None) -> dict[str, Any]:
        # Pooled connections are in autocommit: a one-statement operation is one round trip;
        # several statements that belong together use ``with conn.transaction():``.
        kwargs: dict[str, Any] = {
            **connection_defaults(url or self.url),
            "application_name": self.application_name,
            "autocommit": True,
        }
        if self.transaction_pooling and url is None:
            # psycopg prepares a statement run 5 times on one connection; behind a pooler in
            # transaction mode the next transaction may run on another server connection, which
            # does not have it (or has another client's of the same name).
            kwargs["prepare_threshold"] = None
        return kwargs

    @property
    def session_url(self) -> str | None:
        """Where a session can be held (LISTEN, a session advisory lock): the direct URL, or
        the URL itself unless it is pooled per transaction; None when there is nowhere."""
        return self.direct_url or (None if self.transaction_pooling else self.url)

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[TupleRow]:
        """A dedicated connection outside the pool (listeners, heartbeats, supervisors)."""
        try:
            return psycopg.connect(self.url, **{**self._kwargs(), "autocommit": autocommit})
        except psycopg.OperationalError as exc:
            raise _unreachable(self.url, exc) from exc

    def _session_target(self) -> tuple[str, dict[str, Any]]:
        url = self.session_url
        if url is None:
            raise RuntimeError("no connection that keeps a session: set direct_database_url")
        return url, self._kwargs(url if url != self.url else None)

    def connect_session(
        self, *, application_name: str | None = None
    ) -> psycopg.Connection[TupleRow]:
        """A dedicated autocommit connection that keeps its session (for LISTEN): on the direct
        URL behind a pooler.  Callers check :attr:`session_url` first."""
        url, kwargs = self._session_target()
        if application_name:
            kwargs["application_name"] = application_name
        try:
            return psycopg.connect(url, **kwargs)
        except psycopg.OperationalError as exc:
            raise _unreachable(url, exc) from exc

    async def connect_session_async(self) -> psycopg.AsyncConnection[TupleRow]:
        url, kwargs = self._session_target()
        try:
            return await psycopg.AsyncConnection.connect(url, **kwargs)
        except psycopg.OperationalError as exc:
            raise _unreachable(url, exc) from exc

    async def connect_async(self, *, autocommit: bool = True) -> psycopg.AsyncConnection[TupleRow]:
        try:
            return await psycopg.AsyncConnection.connect(
                self.url, **{**self._kwargs(), "autocommit": autocommit}
            )
        except psycopg.OperationalError as exc:
            raise _unreachable(self.url, exc) from exc

    @property
    def pool(self) -> ConnectionPool[PooledConnection]:
        with self._lock:
            if self._pool is None:
                pool: ConnectionPool[PooledConnection] = ConnectionPool(
                    self.url,
                    connection_class=PooledConnection,
                    min_size=1,
                    max_size=self.pool_size,
                    kwargs=self._kwargs(),
                    open=False,
                    name="pgjobs",
                    check=self._check,
                )
                try:
                    pool.open(wait=True, timeout=10)
                except psycopg.OperationalError as exc:
                    pool.close()
                    raise _unreachable(self.url, exc) from exc
                except Exception as exc:  # PoolTimeout: the server never answered
                    pool.close()
                    raise _unreachable(self.url, exc) from exc
                self._pool = pool
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A pooled autocommit connection (use ``conn.transaction()`` for several statements)."""
        with self.pool.connection() as conn:
            try:
                yield conn
            finally:
                self._used[conn] = time.monotonic()

    def checkout(self) -> tuple[PooledConnection, psycopg.Cursor[TupleRow]]:
        """A pooled autocommit connection and its kept cursor, for one statement on the hot path
        (a single enqueue); give it back with :meth:`checkin`, in a ``finally``.

        What :meth:`connection` does, minus its two context managers and psycopg's
        ``with conn`` (a no-op on an idle autocommit connection): ~4 µs less per call.  A
        connection handed back in a transaction or broken is rolled back or replaced by the pool,
        as with :meth:`connection`.
        """
        conn = (self._pool or self.pool).getconn()
        cursor = conn.statement_cursor
        if cursor is None or cursor.closed:
            cursor = conn.statement_cursor = conn.cursor()
        return conn, cursor

    def checkin(self, conn: PooledConnection) -> None:
        self._used[conn] = time.monotonic()
        (self._pool or self.pool).putconn(conn)

    @asynccontextmanager
    async def async_connection(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        if self._async_pool is None:
            pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs=self._kwargs(),
                open=False,
                check=self._check_async,
            )
            try:
                await pool.open(wait=True, timeout=10)
            except Exception as exc:
                await pool.close()
                raise _unreachable(self.url, exc) from exc
            self._async_pool = pool
        async with self._async_pool.connection() as conn:
            try:
                yield conn
            finally:
                self._used[conn] = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    async def close_async(self) -> None:
        self.close()
        if self._async_pool is not None:
            await self._async_pool.close()
            self._async_pool = None
