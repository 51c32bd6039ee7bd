"""Reading batches and workflows: :func:`get_batch`, what a callback receives, a job's
dependencies' results."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import psycopg

from pgjobs.db.database import Database
from pgjobs.errors import BatchNotFound, DeserializationError
from pgjobs.serialization import loads_value, register_records
from pgjobs.store import batches as store

BatchState = Literal["running", "succeeded", "failed"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class BatchInfo:
    """A batch or workflow as the database has it now: what its callbacks receive.

    Counts are exact (kept in the statement that ends each job): ``pending`` jobs have not
    ended yet (including held ones and failed ones retried); a failed job counts in ``failed``
    until it is retried (pending again) or discarded.  A nested batch counts as one job of its
    parent.  ``state``: ``running`` while jobs are pending, then ``succeeded`` (every job
    succeeded) or ``failed``; a failed batch whose failed jobs are retried and succeed becomes
    ``succeeded`` (and its on_success runs then).
    """

    id: int
    batch_id: uuid.UUID
    kind: str  # batch | workflow
    parent_id: uuid.UUID | None
    description: str | None
    properties: dict[str, Any]
    on_failure: str | None
    total: int
    pending: int
    succeeded: int
    failed: int
    discarded: int
    cancelled: int
    created_at: datetime
    finished_at: datetime | None
    succeeded_at: datetime | None
    discarded_at: datetime | None
    callbacks: dict[str, uuid.UUID]  # finish/success/discard: the callback job's id

    @property
    def state(self) -> BatchState:
        if self.finished_at is None:
            return "running"
        return "succeeded" if self.succeeded_at is not None else "failed"

    @property
    def done(self) -> int:
        """Jobs that have ended (succeeded, failed, discarded or cancelled)."""
        return self.total - self.pending

    @property
    def fraction(self) -> float:
        """How much has ended, 0.0 to 1.0 (1.0 for an empty batch)."""
        return self.done / self.total if self.total else 1.0


def info_from_row(row: tuple[Any, ...]) -> BatchInfo:
    (id_, batch_id, kind, parent, description, properties, on_failure, total, pending, succeeded,
     failed, discarded, cancelled, created_at, finished_at, succeeded_at, discarded_at,
     callbacks) = row  # fmt: skip
    return BatchInfo(
        id_, batch_id, kind, parent, description, properties or {}, on_failure, total, pending,
        succeeded, failed, discarded, cancelled, created_at, finished_at, succeeded_at,
        discarded_at, {what: uuid.UUID(cb["job_id"]) for what, cb in (callbacks or {}).items()},
    )  # fmt: skip


def _database(database: Database | None) -> Database:
    if database is not None:
        return database
    from pgjobs.runtime import get_database

    return get_database()


def _uuid(value: uuid.UUID | str, what: str = "batch") -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BatchNotFound(f"no {what} {value!r}: not a batch id (a UUID)") from None


def read(conn: psycopg.Connection[Any], schema: str | None, batch_id: uuid.UUID) -> BatchInfo:
    from pgjobs.db.names import sql

    row = conn.execute(sql(store.GET, schema), {"batch_id": batch_id}).fetchone()
    if row is None:
        raise BatchNotFound(f"no batch or workflow {batch_id} in this database")
    return info_from_row(row)


# Reading again after a lost connection: a pooled connection used in the last second is handed
# out untested, and may have died with a PostgreSQL restart or a terminated backend since.  A
# callback reads its batch while its arguments are decoded, where such an error would fail it
# for good without running it (found by the chaos suite).  Reads only: safe to repeat.
RETRY_LOST = (0.05, 0.2, 0.5, 1.0, 2.0)


def _read_again(read_once: Callable[[], _T]) -> _T:
    for pause in RETRY_LOST:
        try:
            return read_once()
        except (psycopg.OperationalError, psycopg.InterfaceError):
            time.sleep(pause)  # the pool discards the broken connection: the next is another
    return read_once()


def get_batch(batch_id: uuid.UUID | str, *, database: Database | None = None) -> BatchInfo:
    """The batch or workflow ``batch_id`` as it is now; :class:`~pgjobs.BatchNotFound` if none."""
    db = _database(database)
    found = _uuid(batch_id)

    def read_once() -> BatchInfo:
        with db.connection() as conn:
            return read(conn, db.schema, found)

    return _read_again(read_once)


def wait_batch(
    batch_id: uuid.UUID | str, *, timeout: float | None = None, database: Database | None = None
) -> BatchInfo:
    """Block until every job of the batch has ended (its on_finish moment) and return it;
    ``TimeoutError`` after ``timeout`` seconds.  It reads the batch's row, 20 times a second at
    first and every half second after the first two seconds."""
    db, found = _database(database), _uuid(batch_id)
    started = time.monotonic()
    pause = 0.05
    with db.connection() as conn:
        while True:
            info = read(conn, db.schema, found)
            if info.finished_at is not None:
                return info
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise TimeoutError(
                    f"batch {found} has {info.pending} of {info.total} jobs pending after "
                    f"{timeout}s"
                )
            if waited > 2:
                pause = 0.5
            left = None if timeout is None else timeout - waited
            time.sleep(pause if left is None else max(0.0, min(pause, left)))


def _load(reference: Any) -> BatchInfo:
    try:
        return get_batch(reference)
    except BatchNotFound as exc:
        raise DeserializationError(str(exc)) from exc


def _reference(batch: Any) -> str:
    return str(batch.batch_id)


# A BatchInfo in a job's arguments (what a callback receives first) is stored as a reference and
# read afresh when the job runs.  BatchRef is what the callbacks are written with.
@dataclass(frozen=True)
class BatchRef:
    batch_id: uuid.UUID


register_records(
    "pgjobs_batch",
    match=lambda t: t is BatchInfo or t is BatchRef,
    reference=_reference,
    load=_load,
)


@dataclass(frozen=True)
class Dependency:
    """One dependency of a workflow's job, as the job sees it when it runs."""

    job_id: uuid.UUID | None  # None once its row is gone (state "cleared")
    state: str  # finished | failed | discarded | cancelled | pending | cleared
    result: Any  # its return value (None if it stored none, did not succeed, or was cleared)


def dependencies(job_id: uuid.UUID, database: Database | None = None) -> list[Dependency]:
    db = _database(database)
    from pgjobs.db.names import sql

    def read_once() -> list[tuple[Any, ...]]:
        with db.connection() as conn:
            return conn.execute(sql(store.DEPENDENCIES, db.schema), {"job_id": job_id}).fetchall()

    rows = _read_again(read_once)
    return [
        Dependency(job, state, loads_value(text) if text is not None else None)
        for job, state, text in rows
    ]
