"""Enqueueing: ``perform_later``, delayed jobs, bulk ``perform_all_later``, many jobs of one
class (``perform_all_later_args``), transactional enqueue.

A job is written on the connection the caller hands over (``Job.set(connection=...)`` or
``perform_all_later(..., connection=...)``) inside the caller's transaction, so it exists if and
only if the caller commits.  Accepted: psycopg ``Connection`` / ``AsyncConnection``, and
SQLAlchemy ``Connection`` / ``Session`` / ``AsyncConnection`` / ``AsyncSession`` (scoped ones too,
such as Flask-SQLAlchemy's ``db.session``) on the ``postgresql+psycopg`` driver.  Without one,
pgjobs uses its own pool and the job is committed before the call returns.

Sync and async share everything but the few lines that execute: the rows, statements and
parameters are built once, for both (:func:`_record`, :func:`_plan_bulk`, :func:`_plan_many`).

The hot paths make as few Python objects per job as they can (every µs of Python is ~1 % of a
bulk enqueue): a job without keys becomes its row (:data:`Record`) directly, its handle is made
by :func:`pgjobs.enqueue.handle.handle_of`, and many jobs sharing their class, queue, priority
and due time are written by one statement (:data:`pgjobs.store.jobs.ENQUEUE_MANY_READY`).
Jobs with keys keep :class:`_Row` and the statements of :mod:`pgjobs.enqueue.keyed`.

Tracing (:mod:`pgjobs.observability.tracing`): each enqueue that writes runs inside the hook's
``send`` (a bulk one inside ``send_bulk``, each job's row built inside its ``create``) when a hook
is installed; the trace context it sets on the job is stored in the job's arguments.  Off, the
cost is one ``is None`` check.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper

from pgjobs import clock, events
from pgjobs.db.database import Database
from pgjobs.db.names import names, sql
from pgjobs.enqueue import keyed as enqueue_keyed
from pgjobs.enqueue.handle import MAX_PRIORITY, MIN_PRIORITY, EnqueuedJob, handle_of
from pgjobs.enqueue.ids import random_ids
from pgjobs.errors import ConfigurationError
from pgjobs.jobs import callbacks, limits
from pgjobs.observability import tracing
from pgjobs.serialization import dumps_arguments, dumps_plain, dumps_rows, row_type_error
from pgjobs.store import jobs as store

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job, Options

Connectionish: TypeAlias = Any  # psycopg or SQLAlchemy connection/session; see module docstring


class Adapter(Protocol):
    """Replaces the database during application tests (see :mod:`pgjobs.testing`)."""

    def enqueue(self, job: Job, scheduled_at: datetime | None) -> EnqueuedJob: ...


_adapter: Adapter | None = None


def set_adapter(adapter: Adapter | None) -> Adapter | None:
    global _adapter
    previous, _adapter = _adapter, adapter
    return previous


#: ``provider() -> connection or None``: see :func:`set_connection_provider`.
ConnectionProvider = Callable[[], Connectionish | None]
_provider: ConnectionProvider | None = None


def set_connection_provider(provider: ConnectionProvider | None) -> ConnectionProvider | None:
    """Have ``provider()`` choose the connection of a synchronous enqueue that names none.

    For integrations: it returns the connection of the transaction the caller is in (Django's
    inside ``transaction.atomic()``), so the job commits or rolls back with it, or ``None`` for
    pgjobs' own pool (committed at once).  Async enqueues never ask it.  Returns the previous
    provider; costs one ``is None`` check while none is set.
    """
    global _provider
    previous, _provider = _provider, provider
    return previous


_get_database: Callable[[], Database] | None = None


def _database() -> Database:
    global _get_database
    if _get_database is None:  # imported on first use (pgjobs.runtime imports the configuration)
        from pgjobs.runtime import get_database

        _get_database = get_database
    return _get_database()


def current_schema() -> str | None:
    from pgjobs.runtime import current_schema as schema

    return schema()


@dataclass(slots=True, eq=False)
class _Row:  # one per job enqueued: not frozen, whose __init__ costs ~0.5 µs more
    job: Job
    params: dict[str, Any]
    scheduled_at: datetime | None
    keys: limits.Keys
    now: datetime


def scheduled_at_of(job: Job, now: datetime) -> datetime | None:
    """When the job should run, or ``None`` when it is due now."""
    return _scheduled_at(job.options, now, type(job).job_name)


def _scheduled_at(options: Options, now: datetime, name: str) -> datetime | None:
    if options.wait_until is not None:
        when = options.wait_until
        if when.tzinfo is None:
            raise ConfigurationError(f"{name}: wait_until must be timezone-aware")
    elif options.wait is not None:
        wait = options.wait
        when = now + (wait if isinstance(wait, timedelta) else timedelta(seconds=wait))
    else:
        return None
    return when if when > now else None


def _check_priority(cls: type[Job], priority: object) -> None:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ConfigurationError(f"{cls.job_name}: priority must be an int, got {priority!r}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ConfigurationError(
            f"{cls.job_name}: priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, "
            f"got {priority}"
        )


def _row(job: Job, now: datetime, channel: str) -> _Row:
    cls = type(job)
    _check_priority(cls, job.priority)
    when = scheduled_at_of(job, now)
    arguments = dumps_arguments(
        job.args, job.kwargs, context=f"{cls.job_name}.perform_later", trace=job._trace_carrier
    )
    params = {
        "job_id": job.job_id,
        "queue_name": job.queue_name,
        "class_name": cls.job_name,
        "arguments": arguments,
        "priority": job.priority,
        "concurrency_key": None,
        "scheduled_at": when,
        "channel": channel,
    }
    return _Row(job, params, when, limits.keys_for(job, now), now)


#: A job without keys as its COPY row: ``[id, job_id, queue_name, class_name, arguments,
#: priority, scheduled_at]`` (a list: the id is filled in once reserved).
Record: TypeAlias = list[Any]


def _no_keys(cls: type[Job]) -> bool:
    """Whether ``cls`` declares none of the limits that need their own statements
    (:func:`pgjobs.jobs.limits.keys_for` gives it ``NO_KEYS``)."""
    return (
        cls.limits_concurrency is None
        and cls.unique is None
        and cls.ordered is None
        and cls.rate_limit is None
    )


def _record(job: Job, now: datetime) -> Record:
    """The COPY row of a job without keys, checked and serialized as :func:`_row` does it."""
    cls = type(job)
    priority = job.priority
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        _check_priority(cls, priority)
    options = job.options
    when = None
    if options.wait_until is not None or options.wait is not None:
        when = scheduled_at_of(job, now)
    arguments = dumps_plain(job.args, job.kwargs, job._trace_carrier)
    if arguments is None:
        arguments = dumps_arguments(
            job.args, job.kwargs, context=f"{cls.job_name}.perform_later", trace=job._trace_carrier
        )
    return [None, job.job_id, job.queue_name, cls.job_name, arguments, priority, when]


def _result(
    row: _Row,
    id_: int | None,
    created_at: datetime | None,
    written: enqueue_keyed.Written | None = None,
) -> EnqueuedJob:
    job = row.job
    job.enqueued_at, job.scheduled_at = created_at, row.scheduled_at
    state = written.state if written is not None else ""
    result = EnqueuedJob(
        job_id=job.job_id,
        class_name=type(job).job_name,
        queue_name=job.queue_name,
        priority=job.priority,
        scheduled_at=row.scheduled_at,
        id=id_,
        enqueued=state not in ("duplicate", "discarded"),
        state=state,
        duplicate_of=written.duplicate_of if written is not None else None,
        replaced=written.replaced if written is not None else None,
    )
    if not result.enqueued:
        if "enqueue_skipped" in events.active:
            events.emit(
                "enqueue_skipped",
                **events.job_fields(result.job_id, result.class_name, result.queue_name),
                reason=state,
                duplicate_of=result.duplicate_of,
                unique_key=row.keys.unique_key,
                concurrency_key=row.keys.concurrency_key,
            )
        return result
    if "enqueue" in events.active:
        events.emit(
            "enqueue",
            **events.job_fields(
                result.job_id,
                result.class_name,
                result.queue_name,
                priority=result.priority,
                scheduled_at=result.scheduled_at,
            ),
        )
    return result


def _statement(database_schema: str | None, row: _Row) -> str:
    template = store.ENQUEUE_SCHEDULED if row.scheduled_at else store.ENQUEUE_READY
    return sql(template, database_schema)


# -- connections ------------------------------------------------------------------------------


def _not_psycopg(found: object) -> ConfigurationError:
    return ConfigurationError(
        f"pgjobs cannot enqueue on {type(found).__module__}.{type(found).__qualname__}: pass a "
        "psycopg 3 connection, or a SQLAlchemy Connection/Session on the postgresql+psycopg driver "
        "(AsyncConnection/AsyncSession with perform_later_async and perform_all_later_async)"
    )


def sync_driver(conn: Connectionish) -> psycopg.Connection[Any]:
    """The psycopg connection behind ``conn``, inside the caller's (SQLAlchemy) transaction."""
    if isinstance(conn, psycopg.Connection):
        return conn
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session, scoped_session

    if isinstance(conn, scoped_session):
        conn = conn()  # e.g. Flask-SQLAlchemy's db.session: the session of this scope
    if isinstance(conn, Session):
        conn = conn.connection()  # joins (or begins) the session's transaction
    if isinstance(conn, Connection):
        driver = conn.connection.driver_connection
        if not isinstance(driver, psycopg.Connection):
            raise _not_psycopg(driver)  # before beginning anything on the caller's connection
        if not conn.in_transaction():
            conn.begin()  # so the caller's commit() commits the job too
        return driver
    raise _not_psycopg(conn)


async def async_driver(conn: Connectionish) -> psycopg.AsyncConnection[Any]:
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

    if isinstance(conn, async_scoped_session):
        conn = conn()
    if isinstance(conn, AsyncSession):
        conn = await conn.connection()
    if isinstance(conn, AsyncConnection):
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if not isinstance(driver, psycopg.AsyncConnection):
            raise _not_psycopg(driver)
        if not conn.in_transaction():
            await conn.begin()
        return driver
    raise _not_psycopg(conn)


# -- single enqueue ---------------------------------------------------------------------------


def _keyed_steps(row: _Row) -> Any:
    return enqueue_keyed.steps(row.params, row.keys, row.scheduled_at is not None, row.now)


def _atomic(row: _Row) -> bool:
    return enqueue_keyed.needs_transaction(row.keys, row.scheduled_at is not None)


def _write_row(conn: psycopg.Connection[Any], schema: str | None, row: _Row) -> EnqueuedJob:
    if row.keys.special:
        written = enqueue_keyed.run(conn, schema, _keyed_steps(row), atomic=_atomic(row))
        return _result(row, written.id, written.created_at, written)
    found = conn.execute(_statement(schema, row), row.params).fetchone()
    assert found is not None
    return _result(row, found[0], found[1])


def _plain(schema: str | None, record: Record) -> tuple[str, dict[str, Any]]:
    """The statement of a job without keys (:data:`Record`) and its parameters."""
    when = record[6]
    params = {
        "job_id": record[1],
        "queue_name": record[2],
        "class_name": record[3],
        "arguments": record[4],
        "priority": record[5],
        "concurrency_key": None,
        "scheduled_at": when,
        "channel": store.notify_channel(schema),
    }
    return sql(store.ENQUEUE_SCHEDULED if when else store.ENQUEUE_READY, schema), params


def _plain_result(job: Job, record: Record, found: tuple[Any, ...] | None) -> EnqueuedJob:
    """What ``_result`` makes of a job without keys, written by its one statement."""
    assert found is not None
    id_, created_at = found[0], found[1]
    when = record[6]
    job.enqueued_at, job.scheduled_at = created_at, when
    result = handle_of(record[1], record[3], record[2], record[5], when, id_)
    if "enqueue" in events.active:
        fields = events.job_fields(record[1], record[3], record[2])
        events.emit("enqueue", **fields, priority=record[5], scheduled_at=when)
    return result


def _write(
    conn: psycopg.Connection[Any],
    schema: str | None,
    job: Job,
    now: datetime,
    cursor: psycopg.Cursor[Any] | None = None,
) -> EnqueuedJob:
    """The one statement that writes a job and its ready or scheduled row, on ``conn`` (a few,
    in a transaction, for a job with a concurrency limit or a unique key); ``cursor``: one of
    ``conn``'s to run it with (else a new one)."""
    if not _no_keys(type(job)):
        return _write_row(conn, schema, _row(job, now, store.notify_channel(schema)))
    record = _record(job, now)
    found = (cursor or conn).execute(*_plain(schema, record)).fetchone()
    return _plain_result(job, record, found)


async def _write_async(
    conn: psycopg.AsyncConnection[Any], schema: str | None, job: Job, now: datetime
) -> EnqueuedJob:
    if _no_keys(type(job)):
        record = _record(job, now)
        found = await (await conn.execute(*_plain(schema, record))).fetchone()
        return _plain_result(job, record, found)
    row = _row(job, now, store.notify_channel(schema))
    written = await enqueue_keyed.run_async(conn, schema, _keyed_steps(row), atomic=_atomic(row))
    return _result(row, written.id, written.created_at, written)


def enqueue_on(
    conn: psycopg.Connection[Any], job: Job, *, schema: str | None, now: datetime | None = None
) -> EnqueuedJob | None:
    """Write ``job`` on ``conn``, inside its transaction, with the job's enqueue callbacks.

    For pgjobs' own processes (the scheduler), which hold a connection and a schema already.
    ``None`` when an ``around_enqueue`` callback did not proceed.
    """
    when = now or clock.now()

    def body() -> EnqueuedJob:
        hook = tracing.tracer
        if hook is None:
            return _write(conn, schema, job, when)
        with hook.send(job):  # a recurring tick has no active span: a new trace
            return _write(conn, schema, job, when)

    result: EnqueuedJob | None = callbacks.run(job, "enqueue", body)
    return result


def enqueue(job: Job) -> EnqueuedJob:
    """Write one job (with its enqueue callbacks); see :meth:`pgjobs.Job.perform_later`."""

    def body() -> EnqueuedJob:
        now = clock.now()
        if _adapter is not None:
            return _adapter.enqueue(job, scheduled_at_of(job, now))
        hook = tracing.tracer
        if hook is None:
            return _send(job, now)
        with hook.send(job):
            return _send(job, now)

    result: EnqueuedJob | None = callbacks.run(job, "enqueue", body)
    return result if result is not None else _not_enqueued(job)


def _send(job: Job, now: datetime) -> EnqueuedJob:
    connection = job.options.connection
    if connection is None and _provider is not None:
        connection = _provider()
    if connection is not None:
        # The caller's connection: never start or pool anything.
        return _write(sync_driver(connection), current_schema(), job, now)
    database = _database()
    conn, cursor = database.checkout()
    try:
        return _write(conn, database.schema, job, now, cursor)
    finally:
        database.checkin(conn)


async def enqueue_async(job: Job) -> EnqueuedJob:
    async def body() -> EnqueuedJob:
        now = clock.now()
        if _adapter is not None:
            return _adapter.enqueue(job, scheduled_at_of(job, now))
        hook = tracing.tracer
        if hook is None:
            return await _send_async(job, now)
        with hook.send(job):
            return await _send_async(job, now)

    result: EnqueuedJob | None = await callbacks.run_async(job, "enqueue", body)
    return result if result is not None else _not_enqueued(job)


async def _send_async(job: Job, now: datetime) -> EnqueuedJob:
    if job.options.connection is not None:
        driver = await async_driver(job.options.connection)
        return await _write_async(driver, current_schema(), job, now)
    database = _database()
    async with database.async_connection() as conn:
        return await _write_async(conn, database.schema, job, now)


def _not_enqueued(job: Job) -> EnqueuedJob:
    """What perform_later returns when an around_enqueue callback did not call proceed()."""
    return EnqueuedJob(
        job_id=job.job_id,
        class_name=type(job).job_name,
        queue_name=job.queue_name,
        priority=job.priority,
        scheduled_at=None,
        enqueued=False,
    )


# -- many jobs sharing class, queue, priority and due time: one statement ---------------------
# perform_all_later_args' jobs, and perform_all_later's without keys when they share those
# columns: jobs.ENQUEUE_MANY_READY / _SCHEDULED instead of an id reservation, two COPYs and a
# notification (one round trip; the server makes the execution rows from the jobs' rows).

#: Jobs per statement, at most: its parameters stay a few MB whatever the number of jobs (more
#: statements, in one transaction) ...
MANY_PER_STATEMENT = 10_000
#: ... and characters of arguments per statement, at most (a job's own always fit): the JSON
#: array is one jsonb value, which PostgreSQL caps at 256 MB (4 bytes per character at worst).
MANY_CHARACTERS = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Many:
    """Jobs sharing their class, queue, priority and due time, written by one statement per
    MANY_PER_STATEMENT (jobs.ENQUEUE_MANY_READY / _SCHEDULED)."""

    class_name: str
    queue_name: str
    priority: int
    scheduled_at: datetime | None
    arguments: list[str]  # one JSON text per job
    job_ids: bytes | bytearray  # their job ids, 16 bytes each
    chunks: list[tuple[int, int]]  # the jobs (first, last + 1) of each statement


def _chunks(arguments: list[str]) -> list[tuple[int, int]]:
    """The jobs of each statement: at most MANY_PER_STATEMENT, and MANY_CHARACTERS of arguments
    unless a job's arguments alone are more."""
    found: list[tuple[int, int]] = []
    first, size = 0, 0
    for i, text in enumerate(arguments):
        if i > first and (i - first >= MANY_PER_STATEMENT or size + len(text) > MANY_CHARACTERS):
            found.append((first, i))
            first, size = i, 0
        size += len(text)
    if first < len(arguments):
        found.append((first, len(arguments)))
    return found


def _many(
    class_name: str,
    queue_name: str,
    priority: int,
    scheduled_at: datetime | None,
    arguments: list[str],
    job_ids: bytes | bytearray,
) -> _Many:
    return _Many(
        class_name, queue_name, priority, scheduled_at, arguments, job_ids, _chunks(arguments)
    )


class _UuidArray(bytes):
    """A ``uuid[]`` parameter already in PostgreSQL's binary format (:func:`_uuid_array`)."""


class _UuidArrayDumper(Dumper):
    """Sends a :class:`_UuidArray` as it is: no UUID text for the server to parse (~0.3 µs of
    its ~8 µs per job of an ENQUEUE_MANY statement), no ``uuid.UUID`` to make."""

    format = pq.Format.BINARY
    oid = 2951  # uuid[]

    def dump(self, obj: bytes) -> bytes:
        return obj


_ARRAY_HEADER = struct.Struct("!iiIii")  # dimensions, has nulls, element type, length, lower bound
_UUID_LENGTH = (16).to_bytes(4, "big")


def _uuid_array(raw: bytes | bytearray, first: int, last: int) -> _UuidArray:
    """The ids ``first`` to ``last - 1`` of ``raw`` (16 bytes each) as a binary ``uuid[]``."""
    items = [_UUID_LENGTH + raw[i : i + 16] for i in range(16 * first, 16 * last, 16)]
    return _UuidArray(_ARRAY_HEADER.pack(1, 0, 2950, last - first, 1) + b"".join(items))


def _uuid_text_array(raw: bytes | bytearray, first: int, last: int) -> str:
    """The same ids as a ``uuid[]`` literal, for a cursor that binds parameters on the client
    (``psycopg.ClientCursor``: Django's default), which cannot send binary parameters."""
    return "{" + ",".join([raw[i : i + 16].hex() for i in range(16 * first, 16 * last, 16)]) + "}"


def _binds_on_server(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether ``cur`` sends its parameters apart from the statement (so binary ones too); then
    the binary ``uuid[]``'s dumper is registered on it (on this cursor only)."""
    if isinstance(cur, psycopg.ClientCursor | psycopg.AsyncClientCursor):
        return False
    cur.adapters.register_dumper(_UuidArray, _UuidArrayDumper)
    return True


def _many_statements(
    schema: str | None, many: _Many, binary: bool
) -> list[tuple[str, dict[str, Any]]]:
    """The statements that write ``many``, with their parameters (one per MANY_PER_STATEMENT);
    the job ids as a binary ``uuid[]`` (``binary``) or as a literal."""
    statement = sql(
        store.ENQUEUE_MANY_SCHEDULED if many.scheduled_at else store.ENQUEUE_MANY_READY, schema
    )
    shared = {
        "jobs_table": names(schema)["jobs"],
        "queue_name": many.queue_name,
        "class_name": many.class_name,
        "priority": many.priority,
        "scheduled_at": many.scheduled_at,
        "channel": store.notify_channel(schema),
    }
    ids = _uuid_array if binary else _uuid_text_array
    return [
        (
            statement,
            {
                **shared,
                "job_ids": ids(many.job_ids, first, last),
                "arguments": "[" + ",".join(many.arguments[first:last]) + "]",
            },
        )
        for first, last in many.chunks
    ]


def _many_sync(cur: psycopg.Cursor[Any], schema: str | None, many: _Many) -> list[int]:
    """Write ``many`` on ``cur``: the jobs' ids, in order."""
    ids: list[int] = []
    for statement, params in _many_statements(schema, many, _binds_on_server(cur)):
        found = cur.execute(statement, params).fetchone()
        assert found is not None
        ids += found[0]
    return ids


async def _many_async(cur: psycopg.AsyncCursor[Any], schema: str | None, many: _Many) -> list[int]:
    ids: list[int] = []
    for statement, params in _many_statements(schema, many, _binds_on_server(cur)):
        found = await (await cur.execute(statement, params)).fetchone()
        assert found is not None
        ids += found[0]
    return ids


# -- bulk enqueue -----------------------------------------------------------------------------

# The columns of COPY_JOBS_BINARY, COPY_READY_BINARY and COPY_SCHEDULED_BINARY (store.jobs).
_JOB_TYPES = ("int8", "uuid", "text", "text", "jsonb", "int2", "timestamptz")
_READY_TYPES = ("int8", "text", "int2")
_SCHEDULED_TYPES = ("int8", "text", "int2", "timestamptz")


class _JsonbText(Dumper):
    """jsonb in COPY's binary format from JSON text already made (``dumps_arguments``): the
    format's version byte, then the text in the connection's encoding (the server converts it,
    as it does text).  psycopg's own jsonb dumper would encode the text as a JSON string; this
    one is used only by the COPYs it is registered on (``set_types``)."""

    format = pq.Format.BINARY
    oid = 3802  # jsonb

    def __init__(self, cls: type, context: Any = None) -> None:
        super().__init__(cls, context)
        self._encoding = self.connection.info.encoding if self.connection else "utf-8"

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode(self._encoding)


def _binary(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> None:
    cur.adapters.register_dumper(None, _JsonbText)  # by oid only: for set_types, on this cursor


@dataclass(frozen=True, slots=True)
class _Bulk:
    jobs: list[Job]  # the jobs without keys ...
    records: list[Record]  # ... with their rows, in the same order
    keyed: list[tuple[int, _Row]]  # (position, row) of jobs with keys, in semaphore-lock order
    size: int
    group: _Many | None  # the jobs without keys when they share class, queue, priority and time

    @property
    def one_statement(self) -> bool:
        """Whether the whole batch is one statement (atomic without a transaction)."""
        return self.group is not None and not self.keyed and len(self.group.chunks) == 1


def _group(records: list[Record]) -> _Many | None:
    """The jobs without keys as one :class:`_Many` when they share class, queue, priority and
    due time (the usual bulk: ``[X.build(i) for i in ...]``): written by one statement per
    10,000 instead of an id reservation, two COPYs and a notification — ~20 % faster (fewer
    round trips; the server inserts the execution rows from the jobs' rows)."""
    if not records:
        return None
    _id, _job_id, queue, class_name, _arguments, priority, when = records[0]
    for record in records:
        if (
            record[3] != class_name
            or record[2] != queue
            or record[5] != priority
            or record[6] != when
        ):
            return None
    return _many(
        class_name,
        queue,
        int(priority),
        when,
        [record[4] for record in records],
        b"".join([record[1].bytes for record in records]),
    )


def _plan_bulk(jobs: Iterable[Job], channel: str, create: tracing.Create | None) -> _Bulk:
    """Check and serialize every job before anything is written (one bad argument writes
    nothing)."""
    now = clock.now()
    plain: list[Job] = []
    records: list[Record] = []
    every_keyed: list[tuple[int, _Row]] = []
    for position, job in enumerate(jobs):
        if _no_keys(type(job)):
            if create is None:
                records.append(_record(job, now))
            else:  # tracing: each row is built inside its job's create span
                with create(job):
                    records.append(_record(job, now))
            plain.append(job)
        elif create is None:
            every_keyed.append((position, _row(job, now, channel)))
        else:
            every_keyed.append((position, _created(create, job, now, channel)))
    # Jobs with keys are written one by one (each locks its unique key's index entry and its
    # semaphore row until commit): in key order, so that two bulk enqueues of the same keys take
    # the locks in the same order.  An ordered key's jobs keep their list order (the sort is
    # stable, and their unique keys are left out of it): ids, and so their order, are given as
    # they are written.  (Two bulk enqueues of such jobs sharing unique keys across ordered
    # keys could deadlock; PostgreSQL detects it and one of them fails, writing nothing.)
    keyed = sorted(
        every_keyed,
        key=lambda item: (
            item[1].keys.concurrency_key or "",
            ""
            if str(item[1].keys.concurrency_on_conflict).startswith("ordered")
            else item[1].keys.unique_key or "",
        ),
    )
    return _Bulk(plain, records, keyed, len(plain) + len(keyed), _group(records))


def _created(create: tracing.Create, job: Job, now: datetime, channel: str) -> _Row:
    with create(job):
        return _row(job, now, channel)


def _reserve(schema: str | None, n: int) -> tuple[str, dict[str, Any]]:
    return store.RESERVE_IDS, {"jobs_table": names(schema)["jobs"], "n": n}


def _handles(records: list[Record]) -> list[EnqueuedJob]:
    made = handle_of
    return [made(r[1], r[3], r[2], r[5], r[6], r[0]) for r in records]


def _placed(records: list[Record]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The ready rows and the scheduled rows of the COPYed jobs, once their ids are set."""
    ready: list[tuple[Any, ...]] = []
    scheduled: list[tuple[Any, ...]] = []
    for id_, _job_id, queue, _class, _arguments, priority, when in records:
        if when is None:
            ready.append((id_, queue, priority))
        else:
            scheduled.append((id_, queue, priority, when))
    return ready, scheduled


def _notify(schema: str | None, ready: list[tuple[Any, ...]]) -> tuple[str, dict[str, Any]]:
    """One notification per queue, naming the queue's first new job in claim order."""
    first: dict[str, tuple[int, int]] = {}
    for id_, queue, priority in ready:
        found = first.get(queue)
        if found is None or (priority, id_) < found:
            first[queue] = (priority, id_)
    payloads = [f"{q}\t{priority}\t{id_}" for q, (priority, id_) in sorted(first.items())]
    return store.NOTIFY_QUEUES, {"channel": store.notify_channel(schema), "payloads": payloads}


def _settle(plan: _Bulk) -> None:
    """After the COPYs: the jobs' own fields, as ``_result`` sets them, and their events."""
    emit = "enqueue" in events.active
    for job, record in zip(plan.jobs, plan.records, strict=True):
        job.enqueued_at, job.scheduled_at = None, record[6]
        if emit:
            fields = events.job_fields(job.job_id, record[3], record[2])
            events.emit("enqueue", **fields, priority=record[5], scheduled_at=record[6])


def _merged(plan: _Bulk, handles: list[EnqueuedJob], keyed: list[EnqueuedJob]) -> list[EnqueuedJob]:
    """The results in the order of the jobs given."""
    if not plan.keyed:
        return handles
    results: list[EnqueuedJob | None] = [None] * plan.size
    for (i, _kept), result in zip(plan.keyed, keyed, strict=True):
        results[i] = result
    plain = iter(handles)
    return [r if r is not None else next(plain) for r in results]


def _bulk_sync(conn: psycopg.Connection[Any], schema: str | None, plan: _Bulk) -> list[EnqueuedJob]:
    records = plan.records
    handles: list[EnqueuedJob] = []
    if plan.group is not None:
        with conn.cursor() as cur:
            ids = _many_sync(cur, schema, plan.group)
        for record, id_ in zip(records, ids, strict=True):
            record[0] = id_
        handles = _handles(records)
        _settle(plan)
    elif records:
        reserved = conn.execute(*_reserve(schema, len(records))).fetchall()
        with conn.cursor() as cur:
            _binary(cur)
            with cur.copy(sql(store.COPY_JOBS_BINARY, schema)) as copy:
                copy.set_types(_JOB_TYPES)
                for record, (id_,) in zip(records, reserved, strict=True):
                    record[0] = id_
                    copy.write_row(record)
                # While the server still reads the rows (COPY ends at the block's end): the
                # handles, and the execution rows.
                handles = _handles(records)
                ready, scheduled = _placed(records)
            if ready:
                with cur.copy(sql(store.COPY_READY_BINARY, schema)) as copy:
                    copy.set_types(_READY_TYPES)
                    for placed in ready:
                        copy.write_row(placed)
            if scheduled:
                with cur.copy(sql(store.COPY_SCHEDULED_BINARY, schema)) as copy:
                    copy.set_types(_SCHEDULED_TYPES)
                    for placed in scheduled:
                        copy.write_row(placed)
            if ready:
                cur.execute(*_notify(schema, ready))
        _settle(plan)
    keyed: list[EnqueuedJob] = []
    for _i, row in plan.keyed:  # inside the bulk's transaction already
        written_ = enqueue_keyed.run(conn, schema, _keyed_steps(row), atomic=False)
        keyed.append(_result(row, written_.id, written_.created_at, written_))
    return _merged(plan, handles, keyed)


async def _bulk_async(
    conn: psycopg.AsyncConnection[Any], schema: str | None, plan: _Bulk
) -> list[EnqueuedJob]:
    records = plan.records
    handles: list[EnqueuedJob] = []
    if plan.group is not None:
        async with conn.cursor() as cur:
            ids = await _many_async(cur, schema, plan.group)
        for record, id_ in zip(records, ids, strict=True):
            record[0] = id_
        handles = _handles(records)
        _settle(plan)
    elif records:
        reserved = await (await conn.execute(*_reserve(schema, len(records)))).fetchall()
        async with conn.cursor() as cur:
            _binary(cur)
            async with cur.copy(sql(store.COPY_JOBS_BINARY, schema)) as copy:
                copy.set_types(_JOB_TYPES)
                for record, (id_,) in zip(records, reserved, strict=True):
                    record[0] = id_
                    await copy.write_row(record)
                handles = _handles(records)
                ready, scheduled = _placed(records)
            if ready:
                async with cur.copy(sql(store.COPY_READY_BINARY, schema)) as copy:
                    copy.set_types(_READY_TYPES)
                    for placed in ready:
                        await copy.write_row(placed)
            if scheduled:
                async with cur.copy(sql(store.COPY_SCHEDULED_BINARY, schema)) as copy:
                    copy.set_types(_SCHEDULED_TYPES)
                    for placed in scheduled:
                        await copy.write_row(placed)
            if ready:
                await cur.execute(*_notify(schema, ready))
        _settle(plan)
    keyed: list[EnqueuedJob] = []
    for _i, row in plan.keyed:
        written_ = await enqueue_keyed.run_async(conn, schema, _keyed_steps(row), atomic=False)
        keyed.append(_result(row, written_.id, written_.created_at, written_))
    return _merged(plan, handles, keyed)


def _adapted(jobs: Sequence[Job]) -> list[EnqueuedJob]:
    """Bulk enqueue through the test adapter (or nothing to do)."""
    if _adapter is None:
        return []
    now = clock.now()
    return [_adapter.enqueue(job, scheduled_at_of(job, now)) for job in jobs]


def perform_all_later(
    jobs: Sequence[Job], *, connection: Connectionish | None = None
) -> list[EnqueuedJob]:
    """Enqueue many jobs (mixed classes, ready and scheduled) in a handful of statements.

    Like ActiveJob's ``perform_all_later``, enqueue callbacks are not run.  All jobs are written
    in one transaction: the caller's when ``connection`` is given, else pgjobs' own.  Jobs with a
    concurrency limit or a unique key are honoured as by ``perform_later`` (written one by one
    after the others' COPY; a duplicate with ``on_conflict="raise"`` rolls the whole batch back).
    Returns one result per job, in order (see :class:`pgjobs.EnqueuedJob.state`).
    """
    if not jobs or _adapter is not None:
        return _adapted(jobs)
    hook = tracing.tracer
    if hook is None:
        return _all(jobs, connection, None)
    with hook.send_bulk(jobs) as create:
        return _all(jobs, connection, create)


def _all(
    jobs: Sequence[Job], connection: Connectionish | None, create: tracing.Create | None
) -> list[EnqueuedJob]:
    if connection is None and _provider is not None:
        connection = _provider()
    if connection is not None:
        schema = current_schema()
        plan = _plan_bulk(jobs, store.notify_channel(schema), create)
        driver = sync_driver(connection)
        if driver.autocommit and not plan.one_statement:
            with driver.transaction():  # no caller transaction to join: the batch's own
                return _bulk_sync(driver, schema, plan)
        # inside the caller's transaction: it commits or rolls back the jobs with its data
        return _bulk_sync(driver, schema, plan)
    database = _database()
    plan = _plan_bulk(jobs, store.notify_channel(database.schema), create)
    if plan.one_statement:  # atomic on its own (the pool's connections are in autocommit)
        with database.connection() as conn:
            return _bulk_sync(conn, database.schema, plan)
    with database.connection() as conn, conn.transaction():
        return _bulk_sync(conn, database.schema, plan)


async def perform_all_later_async(
    jobs: Sequence[Job], *, connection: Connectionish | None = None
) -> list[EnqueuedJob]:
    if not jobs or _adapter is not None:
        return _adapted(jobs)
    hook = tracing.tracer
    if hook is None:
        return await _all_async(jobs, connection, None)
    with hook.send_bulk(jobs) as create:
        return await _all_async(jobs, connection, create)


async def _all_async(
    jobs: Sequence[Job], connection: Connectionish | None, create: tracing.Create | None
) -> list[EnqueuedJob]:
    if connection is not None:
        schema = current_schema()
        plan = _plan_bulk(jobs, store.notify_channel(schema), create)
        driver = await async_driver(connection)
        if driver.autocommit and not plan.one_statement:
            async with driver.transaction():
                return await _bulk_async(driver, schema, plan)
        return await _bulk_async(driver, schema, plan)
    database = _database()
    plan = _plan_bulk(jobs, store.notify_channel(database.schema), create)
    if plan.one_statement:
        async with database.async_connection() as conn:
            return await _bulk_async(conn, database.schema, plan)
    async with database.async_connection() as conn, conn.transaction():
        return await _bulk_async(conn, database.schema, plan)


# -- many jobs of one class: perform_all_later_args ---------------------------------------------


def _refuse_keys(cls: type[Job]) -> None:
    declared = [
        what
        for what, value in (
            ("a concurrency limit (limits_concurrency)", cls.limits_concurrency),
            ("a unique key (unique)", cls.unique),
            ("ordered keys (ordered)", cls.ordered),
            ("a rate limit (rate_limit)", cls.rate_limit),
        )
        if value is not None
    ]
    if declared:
        raise ConfigurationError(
            f"{cls.job_name} declares {' and '.join(declared)}: perform_all_later_args writes "
            "jobs without keys. Enqueue its jobs with pgjobs.perform_all_later([...]), which "
            "writes each job's keys"
        )


def _plan_many(cls: type[Job], options: Options, rows: Iterable[Any]) -> _Many:
    """Check the class and options once and serialize every row, before anything is written."""
    queue, priority, when = _shared_columns(cls, options)
    arguments = dumps_rows(rows, context=f"{cls.job_name}.perform_all_later_args")
    return _many(cls.job_name, queue, priority, when, arguments, random_ids(len(arguments)))


def _shared_columns(cls: type[Job], options: Options) -> tuple[str, int, datetime | None]:
    """The queue, priority and due time of every job of a perform_all_later_args, checked."""
    _refuse_keys(cls)
    queue = options.queue if options.queue is not None else cls.queue_as
    if callable(queue):
        raise ConfigurationError(
            f"{cls.job_name} chooses each job's queue (queue_as is a method): give the queue, "
            f"{cls.__name__}.set(queue=...).perform_all_later_args(...), or enqueue with "
            "pgjobs.perform_all_later([...])"
        )
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(
            f"{cls.job_name}: queue_as must be a non-empty string, got {queue!r}"
        )
    priority = options.priority if options.priority is not None else cls.priority
    _check_priority(cls, priority)
    return queue, int(priority), _scheduled_at(options, clock.now(), cls.job_name)


def _many_events(many: _Many) -> None:
    """The enqueue events of perform_all_later_args' jobs (perform_all_later's: _settle)."""
    if "enqueue" not in events.active:
        return
    raw = many.job_ids
    for i in range(0, len(raw), 16):
        fields = events.job_fields(
            uuid.UUID(bytes=bytes(raw[i : i + 16])), many.class_name, many.queue_name
        )
        events.emit("enqueue", **fields, priority=many.priority, scheduled_at=many.scheduled_at)


def _written_many(cur: psycopg.Cursor[Any], schema: str | None, many: _Many) -> int:
    count = len(_many_sync(cur, schema, many))
    _many_events(many)
    return count


async def _written_many_async(
    cur: psycopg.AsyncCursor[Any], schema: str | None, many: _Many
) -> int:
    count = len(await _many_async(cur, schema, many))
    _many_events(many)
    return count


def _built(cls: type[Job], options: Options, rows: Iterable[Any]) -> list[Job]:
    """The jobs of the rows, for the paths that need Job objects (test adapter, tracing)."""
    jobs = []
    for i, row in enumerate(rows):
        if type(row) is not tuple and type(row) is not list:
            raise row_type_error(row, i, f"{cls.job_name}.perform_all_later_args")
        jobs.append(cls(*row).with_options(options))
    return jobs


def perform_all_later_args(
    cls: type[Job],
    rows: Iterable[Any],
    options: Options,
    connection: Connectionish | None = None,
) -> int:
    """``cls``'s jobs, one per row of positional arguments, in one statement per 10,000 jobs and
    one transaction; the number of jobs written.  See :meth:`pgjobs.Job.perform_all_later_args`."""
    connection = connection if connection is not None else options.connection
    if _adapter is not None or tracing.tracer is not None:  # they are given Job objects
        _shared_columns(cls, options)  # what the fast path refuses is refused here too
        return len(perform_all_later(_built(cls, options, rows), connection=connection))
    many = _plan_many(cls, options, rows)
    if not many.arguments:
        return 0
    if connection is None and _provider is not None:
        connection = _provider()
    several = len(many.chunks) > 1
    if connection is not None:
        schema = current_schema()
        driver = sync_driver(connection)
        with driver.cursor() as cur:
            if driver.autocommit and several:  # no caller transaction to join: one of our own
                with driver.transaction():
                    return _written_many(cur, schema, many)
            return _written_many(cur, schema, many)  # one statement, or the caller's transaction
    database = _database()
    conn, cursor = database.checkout()
    try:
        if several:
            with conn.transaction():
                return _written_many(cursor, database.schema, many)
        return _written_many(cursor, database.schema, many)  # autocommit: one statement, atomic
    finally:
        database.checkin(conn)


async def perform_all_later_args_async(
    cls: type[Job],
    rows: Iterable[Any],
    options: Options,
    connection: Connectionish | None = None,
) -> int:
    connection = connection if connection is not None else options.connection
    if _adapter is not None or tracing.tracer is not None:
        _shared_columns(cls, options)
        jobs = _built(cls, options, rows)
        return len(await perform_all_later_async(jobs, connection=connection))
    many = _plan_many(cls, options, rows)
    if not many.arguments:
        return 0
    several = len(many.chunks) > 1
    if connection is not None:
        schema = current_schema()
        driver = await async_driver(connection)
        async with driver.cursor() as cur:
            if driver.autocommit and several:
                async with driver.transaction():
                    return await _written_many_async(cur, schema, many)
            return await _written_many_async(cur, schema, many)
    database = _database()
    async with database.async_connection() as conn, conn.cursor() as cur:
        if several:
            async with conn.transaction():
                return await _written_many_async(cur, database.schema, many)
        return await _written_many_async(cur, database.schema, many)
