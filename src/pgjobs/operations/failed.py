"""Failed jobs, for operators: list and inspect them, retry or discard them, one or in bulk.

::

    failed = pgjobs.FailedJobs()
    for job in failed.list(job_class=ProcessPayment, error="GatewayError", limit=50):
        print(job.job_id, job.exception_class, job.message)
    failed.retry(job.job_id)
    failed.retry_all(queue="payments")            # in batches of 1,000, one transaction each
    failed.discard_all(failed_before=a_week_ago)

A failed job is one whose last execution ended with an error no rule retried or discarded; it
stays in ``pgjobs_failed_executions`` until an operator acts (``clear_finished`` never touches
it).  Retrying puts it back to ready — or scheduled, if its ``scheduled_at`` is still in the
future — like a new job, keeping its ``executions`` count (so ``retry_on`` attempts continue
from there) and its error history; its ``interruptions`` start over.  Discarding deletes the job
with its failed row and error history.  Only failed jobs are retried or discarded: a job that is
running, ready or scheduled is left alone.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from pgjobs import clock, events
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError
from pgjobs.operations import concurrency
from pgjobs.store import failed as store
from pgjobs.store import jobs as jobs_store

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job, JobFunction

DEFAULT_BATCH_SIZE = 1000


class Filters(TypedDict, total=False):
    """The filters every :class:`FailedJobs` method takes (all optional, combined with AND)."""

    job_class: str | type[Job] | JobFunction[..., Any] | None
    queue: str | None
    error: str | type[BaseException] | None
    failed_before: datetime | None
    failed_after: datetime | None
    text: str | None


@dataclass(frozen=True)
class JobErrorRecord:
    """One error in a job's history (``pgjobs_job_errors``): every attempt that raised."""

    attempt: int
    exception_class: str
    message: str
    backtrace: str
    process_id: int | None
    hostname: str | None
    pid: int | None
    created_at: datetime


@dataclass(frozen=True)
class FailedJob:
    """A failed job with its last error; ``errors`` (its whole history) is filled by ``get``."""

    id: int
    job_id: uuid.UUID
    class_name: str
    queue_name: str
    priority: int
    arguments: Any
    executions: int
    scheduled_at: datetime | None
    enqueued_at: datetime
    exception_class: str
    message: str
    backtrace: str
    attempt: int
    process_id: int | None
    hostname: str | None
    pid: int | None
    failed_at: datetime
    errors: tuple[JobErrorRecord, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (ids and times as strings)."""
        data = asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, datetime | uuid.UUID):
                data[key] = str(value) if isinstance(value, uuid.UUID) else value.isoformat()
        data["errors"] = [{**e, "created_at": e["created_at"].isoformat()} for e in data["errors"]]
        return data


def _class_name(job_class: str | type[Job] | JobFunction[..., Any] | None) -> str | None:
    if job_class is None or isinstance(job_class, str):
        return job_class
    # A Job class has its job_name; a @job function, its job class.  (By attribute: operations
    # do not import the job definitions.)
    target = getattr(job_class, "job_class", job_class)
    name = getattr(target, "job_name", None) if isinstance(target, type) else None
    if isinstance(name, str) and name:
        return name
    raise ConfigurationError(f"job_class must be a job class or its name, got {job_class!r}")


def _error_name(error: str | type[BaseException] | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    if isinstance(error, type) and issubclass(error, BaseException):
        return f"{error.__module__}.{error.__qualname__}"
    raise ConfigurationError(f"error must be an exception class or its name, got {error!r}")


def filter_params(
    job_class: str | type[Job] | JobFunction[..., Any] | None = None,
    queue: str | None = None,
    text: str | None = None,
    job_ids: builtins.list[uuid.UUID] | None = None,
) -> dict[str, Any]:
    """The statement parameters of the filters every operator listing shares (failed jobs,
    waiting jobs): class, queue, a substring of the arguments, job ids."""
    return {
        "class_name": _class_name(job_class),
        "queue": queue,
        "text": f"%{escape_like(text)}%" if text else None,
        "job_ids": job_ids,
    }


class OnDatabase:
    """What an operator's job set needs: a database (the default one, resolved at first use,
    unless given) and the size of the batches it acts in."""

    def __init__(
        self, database: Database | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
        self._database = database
        self.batch_size = batch_size

    @property
    def database(self) -> Database:
        if self._database is None:
            from pgjobs.runtime import get_database

            self._database = get_database()
        return self._database


def _uuid(job_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        raise ConfigurationError(f"{job_id!r} is not a job id (a UUID)") from None


class FailedJobs(OnDatabase):
    """The failed jobs of a database (the default one unless given).

    Every method takes the same filters, all optional and combined with AND: ``job_class`` (a
    job class, a ``@pgjobs.job`` function or a stored class name), ``queue``, ``error`` (an
    exception class, or its name with or without the module), ``failed_before`` and
    ``failed_after`` (timezone-aware datetimes), ``text`` (a case-insensitive substring of the
    job's stored arguments, JSON).
    """

    def _params(
        self,
        *,
        job_class: str | type[Job] | JobFunction[..., Any] | None = None,
        queue: str | None = None,
        error: str | type[BaseException] | None = None,
        failed_before: datetime | None = None,
        failed_after: datetime | None = None,
        text: str | None = None,
        job_ids: builtins.list[uuid.UUID] | None = None,
    ) -> dict[str, Any]:
        for name, moment in (("failed_before", failed_before), ("failed_after", failed_after)):
            if moment is not None and moment.tzinfo is None:
                raise ConfigurationError(f"{name} must be a timezone-aware datetime")
        return {
            **filter_params(job_class, queue, text, job_ids),
            "error": _error_name(error),
            "failed_before": failed_before,
            "failed_after": failed_after,
        }

    def _rows(self, template: str, params: dict[str, Any]) -> builtins.list[tuple[Any, ...]]:
        database = self.database
        with database.connection() as conn:
            return conn.execute(database.sql(template), params).fetchall()

    # -- reading ------------------------------------------------------------------------------

    def list(
        self, limit: int = 100, after_id: int | None = None, **filters: Unpack[Filters]
    ) -> builtins.list[FailedJob]:
        """Up to ``limit`` failed jobs in id order, after the internal id ``after_id`` (keyset
        paging: pass the last job's ``.id`` to get the next page)."""
        params = {**self._params(**filters), "limit": limit, "after_id": after_id or 0}
        return [FailedJob(*row) for row in self._rows(store.LIST, params)]

    def __iter__(self) -> Iterator[FailedJob]:
        return self.iterate()

    def iterate(self, **filters: Unpack[Filters]) -> Iterator[FailedJob]:
        """Every matching failed job, fetched a batch at a time."""
        after = 0
        while page := self.list(self.batch_size, after, **filters):
            yield from page
            after = page[-1].id

    def count(self, **filters: Unpack[Filters]) -> int:
        return int(self._rows(store.COUNT_FILTERED, self._params(**filters))[0][0])

    def get(self, job_id: uuid.UUID | str) -> FailedJob | None:
        """The failed job with this public id and its error history, or None if it is not failed."""
        params = {**self._params(job_ids=[_uuid(job_id)]), "limit": 1, "after_id": 0}
        rows = self._rows(store.LIST, params)
        if not rows:
            return None
        found = FailedJob(*rows[0])
        history = self._rows(store.ERRORS, {"id": found.id})
        return FailedJob(**{**vars(found), "errors": tuple(JobErrorRecord(*r) for r in history)})

    def state(self, job_id: uuid.UUID | str) -> str | None:
        """Where a job is (ready, scheduled, claimed, blocked, held, failed) or how it ended
        (cancelled, discarded, finished); None if it is gone."""
        database = self.database
        with database.connection() as conn:
            row = conn.execute(
                database.sql(jobs_store.FIND_BY_JOB_ID), {"job_id": _uuid(job_id)}
            ).fetchone()
            if row is None:
                return None
            found = conn.execute(database.sql(jobs_store.STATE_OF), {"id": row[0]}).fetchone()
        return str(found[0]) if found else None

    # -- acting, in batches -------------------------------------------------------------------

    def _batches(
        self,
        template: str,
        params: dict[str, Any],
        limit: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Run a pick-and-act statement batch after batch; returns how many jobs it acted on."""
        database = self.database
        statement = database.sql(template)
        batch = limit or self.batch_size
        params = {
            **params,
            "limit": batch,
            "after_id": 0,
            "channel": jobs_store.notify_channel(database.schema),
        }
        total = 0
        while True:
            params["now"] = clock.now()
            with database.connection() as conn:  # autocommit: one short transaction a batch
                row = conn.execute(statement, params).fetchone()
                assert row is not None
                keys = row[-1] if len(row) > 2 else None
                if keys:  # retried jobs of limited classes wait in blocked; discarded jobs of
                    # ordered keys gave their slots back
                    concurrency.unblock(database.runner(conn), keys, channel=params["channel"])
            total += int(row[0])
            if progress is not None:
                progress(total)
            if row[1] is None or limit is not None:
                return total
            params["after_id"] = int(row[1])

    def retry(self, job_id: uuid.UUID | str) -> bool:
        """Retry one failed job; False when it is not failed (or does not exist)."""
        done = self._batches(store.RETRY_FAILED, self._params(job_ids=[_uuid(job_id)]), 1)
        if done and "retry_failed" in events.active:
            events.emit("retry_failed", count=done, job_id=_uuid(job_id))
        return done == 1

    def retry_all(
        self, progress: Callable[[int], None] | None = None, **filters: Unpack[Filters]
    ) -> int:
        """Retry every failed job matching the filters; returns how many.  ``progress`` is
        called after each batch with the running total."""
        done = self._batches(store.RETRY_FAILED, self._params(**filters), progress=progress)
        if "retry_failed" in events.active:
            events.emit("retry_failed", count=done, **_shown(filters))
        return done

    def discard(self, job_id: uuid.UUID | str) -> bool:
        """Delete one failed job (with its history); False when it is not failed."""
        done = self._batches(store.DISCARD_FAILED, self._params(job_ids=[_uuid(job_id)]), 1)
        if done and "discard_failed" in events.active:
            events.emit("discard_failed", count=done, job_id=_uuid(job_id))
        return done == 1

    def discard_all(
        self, progress: Callable[[int], None] | None = None, **filters: Unpack[Filters]
    ) -> int:
        """Delete every failed job matching the filters; returns how many.  ``progress`` is
        called after each batch with the running total."""
        done = self._batches(store.DISCARD_FAILED, self._params(**filters), progress=progress)
        if "discard_failed" in events.active:
            events.emit("discard_failed", count=done, **_shown(filters))
        return done


def escape_like(text: str) -> str:
    """``text`` matched literally by ``ILIKE`` (its ``%``, ``_`` and ``\\`` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _shown(filters: Filters) -> dict[str, Any]:
    """The filters as an event shows them (names, not classes)."""
    shown: dict[str, Any] = {**filters}
    if "job_class" in filters:
        shown["job_class"] = _class_name(filters["job_class"])
    if "error" in filters:
        shown["error"] = _error_name(filters["error"])
    return shown
