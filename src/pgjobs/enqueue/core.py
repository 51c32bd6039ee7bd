"""Enqueueing: ``perform_later``, delayed jobs, bulk ``perform_all_later``, transactional enqueue.

A job is written on the connection the caller hands over (``Job.set(connection=...)`` or
``perform_all_later(..., connection=...)``) inside the caller's transaction, so it exists if and
only if the caller commits.  Accepted: psycopg ``Connection`` / ``AsyncConnection``, and
SQLAlchemy ``Connection`` / ``Session`` / ``AsyncConnection`` / ``AsyncSession`` (scoped ones too,
such as Flask-SQLAlchemy's ``db.session``) on the ``postgresql+psycopg`` driver.  Without one,
pgjobs uses its own pool and the job is committed before the call returns.

Sync and async share everything but the few lines that execute: :func:`_plan` builds the
statement and parameters once, for both.

Tracing (:mod:`pgjobs.observability.tracing`): each enqueue that writes runs inside the hook's
``send`` (a bulk one inside ``send_bulk``, each job's row built inside its ``create``) when a hook
is installed; the trace context it sets on the job is stored in the job's arguments.  Off, the
cost is one ``is None`` check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import psycopg

from pgjobs import clock, events
from pgjobs.db.database import Database
from pgjobs.enqueue import keyed as enqueue_keyed
from pgjobs.enqueue.handle import MAX_PRIORITY, MIN_PRIORITY, EnqueuedJob
from pgjobs.errors import ConfigurationError
from pgjobs.jobs import callbacks, limits
from pgjobs.observability import tracing
from pgjobs.serialization import dumps_arguments
from pgjobs.store import jobs as store

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job

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


def _database() -> Database:
    from pgjobs.runtime import get_database

    return get_database()


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
    options = job.options
    if options.wait_until is not None:
        when = options.wait_until
        if when.tzinfo is None:
            raise ConfigurationError(f"{type(job).job_name}: wait_until must be timezone-aware")
    elif options.wait is not None:
        wait = options.wait
        when = now + (wait if isinstance(wait, timedelta) else timedelta(seconds=wait))
    else:
        return None
    return when if when > now else None


def _row(job: Job, now: datetime, channel: str) -> _Row:
    cls = type(job)
    if not isinstance(job.priority, int) or isinstance(job.priority, bool):
        raise ConfigurationError(f"{cls.job_name}: priority must be an int, got {job.priority!r}")
    if not MIN_PRIORITY <= job.priority <= MAX_PRIORITY:
        raise ConfigurationError(
            f"{cls.job_name}: priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, "
            f"got {job.priority}"
        )
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
    from pgjobs.db.names import sql

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


def _write(
    conn: psycopg.Connection[Any], schema: str | None, job: Job, now: datetime
) -> EnqueuedJob:
    """The one statement that writes a job and its ready or scheduled row, on ``conn`` (a few,
    in a transaction, for a job with a concurrency limit or a unique key)."""
    return _write_row(conn, schema, _row(job, now, store.notify_channel(schema)))


async def _write_async(
    conn: psycopg.AsyncConnection[Any], schema: str | None, job: Job, now: datetime
) -> EnqueuedJob:
    row = _row(job, now, store.notify_channel(schema))
    if row.keys.special:
        written = await enqueue_keyed.run_async(
            conn, schema, _keyed_steps(row), atomic=_atomic(row)
        )
        return _result(row, written.id, written.created_at, written)
    found = await (await conn.execute(_statement(schema, row), row.params)).fetchone()
    assert found is not None
    return _result(row, found[0], found[1])


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
    with database.connection() as conn:
        return _write(conn, database.schema, job, now)


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


# -- bulk enqueue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bulk:
    rows: list[_Row]  # jobs without keys: COPYed
    ready: list[_Row]
    scheduled: list[_Row]
    queues: list[str]
    keyed: list[tuple[int, _Row]]  # (position, row) of jobs with keys, in semaphore-lock order
    size: int


def _plan_bulk(jobs: Iterable[Job], channel: str, create: tracing.Create | None) -> _Bulk:
    now = clock.now()
    if create is None:
        every = [_row(job, now, channel) for job in jobs]
    else:  # tracing: each row is built inside its job's create span
        every = [_created(create, job, now, channel) for job in jobs]
    rows = [r for r in every if not r.keys.special]
    # Jobs with keys are written one by one (each locks its unique key's index entry and its
    # semaphore row until commit): in key order, so that two bulk enqueues of the same keys take
    # the locks in the same order.  An ordered key's jobs keep their list order (the sort is
    # stable, and their unique keys are left out of it): ids, and so their order, are given as
    # they are written.  (Two bulk enqueues of such jobs sharing unique keys across ordered
    # keys could deadlock; PostgreSQL detects it and one of them fails, writing nothing.)
    keyed = sorted(
        ((i, r) for i, r in enumerate(every) if r.keys.special),
        key=lambda item: (
            item[1].keys.concurrency_key or "",
            ""
            if str(item[1].keys.concurrency_on_conflict).startswith("ordered")
            else item[1].keys.unique_key or "",
        ),
    )
    ready = [r for r in rows if r.scheduled_at is None]
    scheduled = [r for r in rows if r.scheduled_at is not None]
    queues = sorted({r.params["queue_name"] for r in ready})
    return _Bulk(rows, ready, scheduled, queues, keyed, len(every))


def _created(create: tracing.Create, job: Job, now: datetime, channel: str) -> _Row:
    with create(job):
        return _row(job, now, channel)


def _copies(
    schema: str | None, plan: _Bulk, ids: list[int]
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The COPY statements of a bulk enqueue with their records, once the ids are reserved."""
    from pgjobs.db.names import sql

    jobs: list[tuple[Any, ...]] = []
    ready: list[tuple[Any, ...]] = []
    scheduled: list[tuple[Any, ...]] = []
    for row, id_ in zip(plan.rows, ids, strict=True):
        p = row.params
        jobs.append((id_, p["job_id"], p["queue_name"], p["class_name"], p["arguments"],
                     p["priority"], p["concurrency_key"], row.scheduled_at))  # fmt: skip
        if row.scheduled_at is None:
            ready.append((id_, p["queue_name"], p["priority"]))
        else:
            scheduled.append((id_, p["queue_name"], p["priority"], row.scheduled_at))
    copies = [(store.COPY_JOBS, jobs), (store.COPY_READY, ready), (store.COPY_SCHEDULED, scheduled)]
    return [(sql(stmt, schema), records) for stmt, records in copies if records]


def _reserve(schema: str | None, n: int) -> tuple[str, dict[str, Any]]:
    from pgjobs.db.names import names

    return store.RESERVE_IDS, {"jobs_table": names(schema)["jobs"], "n": n}


def _notify(schema: str | None, plan: _Bulk, ids: list[int]) -> tuple[str, dict[str, Any]]:
    """One notification per queue, naming the queue's first new job in claim order."""
    first: dict[str, tuple[int, int]] = {}
    for row, id_ in zip(plan.rows, ids, strict=True):
        if row.scheduled_at is None:
            queue, key = row.params["queue_name"], (row.params["priority"], id_)
            if queue not in first or key < first[queue]:
                first[queue] = key
    payloads = [f"{q}\t{priority}\t{id_}" for q, (priority, id_) in sorted(first.items())]
    return store.NOTIFY_QUEUES, {"channel": store.notify_channel(schema), "payloads": payloads}


def _bulk_results(plan: _Bulk, ids: list[int]) -> list[EnqueuedJob | None]:
    results: list[EnqueuedJob | None] = [None] * plan.size
    plain = iter(zip(plan.rows, ids, strict=True))
    keyed = {i for i, _ in plan.keyed}
    for i in range(plan.size):
        if i not in keyed:
            row, id_ = next(plain)
            results[i] = _result(row, id_, None)
    return results


def _bulk_sync(
    conn: psycopg.Connection[Any], schema: str | None, plan: _Bulk
) -> list[EnqueuedJob | None]:
    ids: list[int] = []
    if plan.rows:
        ids = [r[0] for r in conn.execute(*_reserve(schema, len(plan.rows))).fetchall()]
    with conn.cursor() as cur:
        for statement, records in _copies(schema, plan, ids):
            with cur.copy(statement) as copy:
                for record in records:
                    copy.write_row(record)
        if plan.queues:
            cur.execute(*_notify(schema, plan, ids))
    results = _bulk_results(plan, ids)
    for i, row in plan.keyed:  # inside the bulk's transaction already
        written = enqueue_keyed.run(conn, schema, _keyed_steps(row), atomic=False)
        results[i] = _result(row, written.id, written.created_at, written)
    return results


async def _bulk_async(
    conn: psycopg.AsyncConnection[Any], schema: str | None, plan: _Bulk
) -> list[EnqueuedJob | None]:
    ids: list[int] = []
    if plan.rows:
        reserved = await conn.execute(*_reserve(schema, len(plan.rows)))
        ids = [r[0] for r in await reserved.fetchall()]
    async with conn.cursor() as cur:
        for statement, records in _copies(schema, plan, ids):
            async with cur.copy(statement) as copy:
                for record in records:
                    await copy.write_row(record)
        if plan.queues:
            await cur.execute(*_notify(schema, plan, ids))
    results = _bulk_results(plan, ids)
    for i, row in plan.keyed:
        written = await enqueue_keyed.run_async(conn, schema, _keyed_steps(row), atomic=False)
        results[i] = _result(row, written.id, written.created_at, written)
    return results


def _done(results: list[EnqueuedJob | None]) -> list[EnqueuedJob]:
    return [r for r in results if r is not None]


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
        if driver.autocommit:  # no caller transaction to join: make the batch atomic ourselves
            with driver.transaction():
                results = _bulk_sync(driver, schema, plan)
        else:  # inside the caller's transaction: it commits or rolls back the jobs with its data
            results = _bulk_sync(driver, schema, plan)
    else:
        database = _database()
        plan = _plan_bulk(jobs, store.notify_channel(database.schema), create)
        with database.connection() as conn, conn.transaction():
            results = _bulk_sync(conn, database.schema, plan)
    return _done(results)


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
        if driver.autocommit:
            async with driver.transaction():
                results = await _bulk_async(driver, schema, plan)
        else:
            results = await _bulk_async(driver, schema, plan)
    else:
        database = _database()
        plan = _plan_bulk(jobs, store.notify_channel(database.schema), create)
        async with database.async_connection() as conn, conn.transaction():
            results = await _bulk_async(conn, database.schema, plan)
    return _done(results)
