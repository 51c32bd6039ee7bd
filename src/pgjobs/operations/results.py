"""Any job, from any process: read it (:func:`get_job`), wait for its result, cancel it.

::

    job = Report.perform_later(2026)
    rows = job.result(timeout=10)          # or: await job.result_async(timeout=10)
    pgjobs.get_job(job.job_id).progress    # Progress(done=40, total=100, ...)
    pgjobs.cancel(job.job_id)              # "cancelled", or "cancelling" when it runs

Waiting LISTENs on the schema's *done* channel (:func:`pgjobs.store.jobs.done_channel`), on a
connection of its own, and re-reads the job when a notification names it — or every
:data:`POLL` seconds at most, the fallback for endings that send none (a job that returned
``None`` is finished by its worker's claim statement, which notifies nobody).

Cancelling: a waiting job (ready, scheduled, blocked) is cancelled at once — its execution row
deleted ``FOR UPDATE SKIP LOCKED``, so a worker claiming it right now wins, and a job whose
cancel returned ``"cancelled"`` never starts.  Otherwise (it runs, or a worker is claiming it)
the job is asked to stop: ``cancel_requested_at`` is set and the workers are notified; the one
running it sees the request within about a second, and a worker that claims a job with a
request cancels it instead of running it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

import psycopg
from psycopg import sql

from pgjobs import clock, events
from pgjobs.db.database import Database
from pgjobs.errors import JobCancelled, JobFailed, JobNotFound, ResultError
from pgjobs.operations.failed import JobErrorRecord, _uuid
from pgjobs.serialization import loads_value
from pgjobs.store import batches as batches_store
from pgjobs.store import control as control_store
from pgjobs.store import failed as failed_store
from pgjobs.store import jobs as jobs_store

POLL = 0.5  # seconds: the longest a waiter goes without re-reading the job
_NOT_FOUND = (
    "no job {} in this database: never enqueued, enqueued in a transaction not committed yet "
    "(another connection cannot see it: commit first), or deleted (finished jobs are deleted "
    "at once with preserve_finished_jobs: false, and later by clear-finished)"
)
_FIRST_POLL = 0.05

State = Literal[
    "held",
    "ready",
    "scheduled",
    "blocked",
    "running",
    "failed",
    "finished",
    "discarded",
    "cancelled",
    "unknown",
]
CancelState = Literal["cancelled", "cancelling", "finished", "failed", "discarded"]


@dataclass(frozen=True)
class Progress:
    """A running job's last progress report (``self.progress(done, total, message)``)."""

    done: float
    total: float | None
    message: str | None
    updated_at: datetime | None

    @property
    def fraction(self) -> float | None:
        """``done / total`` between 0 and 1, None without a total."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


@dataclass(frozen=True)
class JobInfo:
    """A job as :func:`get_job` reads it.

    ``state``: ready, scheduled, blocked, running, failed, finished, discarded or cancelled.
    ``attempts``: executions that ended (a running attempt is not counted yet).  ``result``:
    what ``perform`` returned (decoded on first access; None when nothing was stored).
    ``errors``: the job's error history, oldest first.  ``steps_completed`` / ``step`` /
    ``cursor``: a resumable job's checkpoint.  ``arguments``: as stored (JSON:
    ``{"args": [...], "kwargs": {...}}``, values in pgjobs' tagged encoding), not decoded.
    """

    id: int
    job_id: uuid.UUID
    class_name: str
    queue_name: str
    priority: int
    state: State
    attempts: int
    interruptions: int
    arguments: Any
    progress: Progress | None
    steps_completed: tuple[str, ...]
    step: str | None
    cancel_requested_at: datetime | None
    cancelled_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime | None
    enqueued_at: datetime
    error_class: str | None = None
    error_message: str | None = None
    backtrace: str | None = None
    errors: tuple[JobErrorRecord, ...] = ()
    _result: str | None = field(default=None, repr=False)
    _cursor: Any = field(default=None, repr=False)

    @cached_property
    def result(self) -> Any:
        """What ``perform`` returned; raises :class:`pgjobs.ResultError` when it could not be
        stored (the job finished all the same)."""
        if self._result is None:
            return None
        if control_store.RESULT_ERROR in self._result:
            found = json.loads(self._result)
            if isinstance(found, dict) and set(found) == {control_store.RESULT_ERROR}:
                raise ResultError(str(found[control_store.RESULT_ERROR]))
        return loads_value(self._result)

    @cached_property
    def cursor(self) -> Any:
        return None if self._cursor is None else loads_value(self._cursor)

    @property
    def done(self) -> bool:
        """It has ended: finished, failed, discarded or cancelled."""
        return self.state in ("finished", "failed", "discarded", "cancelled")


def _database(database: Database | None) -> Database:
    if database is not None:
        return database
    from pgjobs.runtime import get_database

    return get_database()


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _progress(data: Any) -> Progress | None:
    """A stored progress report; None when there is none (or it is not one pgjobs wrote)."""
    if not isinstance(data, dict) or not _number(data.get("done")):
        return None
    total, message, at = data.get("total"), data.get("message"), data.get("at")
    return Progress(
        done=data["done"],
        total=total if _number(total) else None,
        message=message if isinstance(message, str) else None,
        updated_at=_time(at),
    )


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def parse_progress(data: Any) -> Progress | None:
    """A ``progress`` column's value (JSON) as a :class:`Progress` (the dashboard, the CLI)."""
    return _progress(data)


def _info(row: tuple[Any, ...], errors: tuple[JobErrorRecord, ...]) -> JobInfo:
    (internal, job_id, class_name, queue, priority, executions, interruptions, arguments) = row[:8]
    result, progress, checkpoint, cancel_requested_at, cancelled_at = row[8:13]
    _discarded_at, finished_at, scheduled_at, created_at, state = row[13:18]
    error_class, message, backtrace = row[18:21]
    checkpoint = checkpoint if isinstance(checkpoint, dict) else {}
    if error_class is None and errors and state in ("discarded", "failed"):
        last = errors[-1]
        error_class, message, backtrace = last.exception_class, last.message, last.backtrace
    return JobInfo(
        id=internal,
        job_id=job_id,
        class_name=class_name,
        queue_name=queue,
        priority=priority,
        state=state,
        attempts=executions,
        interruptions=interruptions,
        arguments=arguments,
        progress=_progress(progress),
        steps_completed=tuple(checkpoint.get("completed", ())),
        step=checkpoint.get("step"),
        cancel_requested_at=cancel_requested_at,
        cancelled_at=cancelled_at,
        finished_at=finished_at,
        scheduled_at=scheduled_at,
        enqueued_at=created_at,
        error_class=error_class,
        error_message=message,
        backtrace=backtrace,
        errors=errors,
        _result=result,
        _cursor=None if checkpoint.get("cursor") is None else checkpoint["cursor"],
    )


def _read(database: Database, conn: psycopg.Connection[Any], job_id: uuid.UUID) -> JobInfo:
    row = conn.execute(database.sql(control_store.INFO), {"job_id": job_id}).fetchone()
    if row is None:
        raise JobNotFound(_NOT_FOUND.format(job_id))
    history = conn.execute(database.sql(failed_store.ERRORS), {"id": row[0]}).fetchall()
    return _info(row, tuple(JobErrorRecord(*r) for r in history))


async def _read_async(
    database: Database, conn: psycopg.AsyncConnection[Any], job_id: uuid.UUID
) -> JobInfo:
    cur = await conn.execute(database.sql(control_store.INFO), {"job_id": job_id})
    row = await cur.fetchone()
    if row is None:
        raise JobNotFound(_NOT_FOUND.format(job_id))
    cur = await conn.execute(database.sql(failed_store.ERRORS), {"id": row[0]})
    history = await cur.fetchall()
    return _info(row, tuple(JobErrorRecord(*r) for r in history))


def get_job(job_id: uuid.UUID | str, *, database: Database | None = None) -> JobInfo:
    """Everything about one job: state, attempts, result, progress, errors (``JobNotFound``
    when there is no such job)."""
    database = _database(database)
    with database.connection() as conn:
        return _read(database, conn, _uuid(job_id))


async def get_job_async(job_id: uuid.UUID | str, *, database: Database | None = None) -> JobInfo:
    database = _database(database)
    async with database.async_connection() as conn:
        return await _read_async(database, conn, _uuid(job_id))


def _settled(info: JobInfo) -> bool:
    """True when the job has ended; raises what ``result()`` raises for a job that did not
    finish (failed, discarded, cancelled)."""
    if info.state == "finished":
        return True
    if info.state == "cancelled":
        raise JobCancelled(f"job {info.job_id} was cancelled", job_id=info.job_id)
    if info.state in ("failed", "discarded"):
        raise JobFailed(
            info.job_id, info.error_class, info.error_message, info.backtrace, info.state
        )
    return False


def _timed_out(job_id: uuid.UUID, timeout: float | None, state: str) -> TimeoutError:
    return TimeoutError(f"job {job_id} did not finish within {timeout}s (it is {state})")


def wait_result(
    job_id: uuid.UUID | str, timeout: float | None = None, *, database: Database | None = None
) -> Any:
    """Wait for a job to end and return its result; raises ``JobFailed``, ``JobCancelled``,
    ``JobNotFound`` or ``TimeoutError`` (``timeout`` seconds; None waits forever)."""
    database, public = _database(database), _uuid(job_id)
    deadline = time.monotonic() + timeout if timeout is not None else float("inf")
    if database.session_url is None:  # pooled per transaction, no direct URL: poll only
        return _wait(database, public, deadline, timeout, None)
    channel = sql.Identifier(jobs_store.done_channel(database.schema))
    with database.connect_session() as conn:  # the direct URL behind a pooler
        conn.execute(sql.SQL("LISTEN {}").format(channel))
        return _wait(database, public, deadline, timeout, conn)


def _wait(
    database: Database,
    public: uuid.UUID,
    deadline: float,
    timeout: float | None,
    listening: psycopg.Connection[Any] | None,
) -> Any:
    """Re-read the job until it is settled: woken by its notification on ``listening``, or
    (None: no connection that keeps a session) after each poll interval."""
    key, poll = str(public), _FIRST_POLL
    while True:
        if listening is None:
            with database.connection() as conn:
                info = _read(database, conn, public)
        else:
            info = _read(database, listening, public)
        if _settled(info):
            return info.result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(public, timeout, info.state)
        if listening is None:
            time.sleep(min(poll, remaining))
        else:
            for note in listening.notifies(timeout=min(poll, remaining)):
                if note.payload == key:
                    break
        poll = min(poll * 2, POLL)


async def wait_result_async(
    job_id: uuid.UUID | str, timeout: float | None = None, *, database: Database | None = None
) -> Any:
    """:func:`wait_result` for asyncio."""
    database, public = _database(database), _uuid(job_id)
    deadline = time.monotonic() + timeout if timeout is not None else float("inf")
    if database.session_url is None:  # pooled per transaction, no direct URL: poll only
        return await _wait_async(database, public, deadline, timeout, None)
    channel = sql.Identifier(jobs_store.done_channel(database.schema))
    conn = await database.connect_session_async()  # the direct URL behind a pooler
    try:
        await conn.execute(sql.SQL("LISTEN {}").format(channel))
        return await _wait_async(database, public, deadline, timeout, conn)
    finally:
        await conn.close()


async def _wait_async(
    database: Database,
    public: uuid.UUID,
    deadline: float,
    timeout: float | None,
    listening: psycopg.AsyncConnection[Any] | None,
) -> Any:
    """:func:`_wait` for asyncio."""
    key, poll = str(public), _FIRST_POLL
    while True:
        if listening is None:
            async with database.async_connection() as pooled:
                info = await _read_async(database, pooled, public)
        else:
            info = await _read_async(database, listening, public)
        if _settled(info):
            return info.result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(public, timeout, info.state)
        if listening is None:
            await asyncio.sleep(min(poll, remaining))
            poll = min(poll * 2, POLL)
            continue
        try:
            async with asyncio.timeout(min(poll, remaining)):
                async for note in listening.notifies():
                    if note.payload == key:
                        break
        except TimeoutError:
            pass
        poll = min(poll * 2, POLL)


def cancel(job_id: uuid.UUID | str, *, database: Database | None = None) -> CancelState:
    """Cancel a job: ``"cancelled"`` when it was waiting (it will never run), ``"cancelling"``
    when it runs (or a worker is claiming it right now) and was asked to stop; otherwise the
    state it ended in (finished, failed, discarded, cancelled), unchanged.  ``JobNotFound`` when
    there is no such job."""
    from pgjobs.operations.waiting import WaitingJobs

    database, public = _database(database), _uuid(job_id)
    outcome = WaitingJobs(database).cancel(public)
    if outcome.done:
        _emit(public, "cancelled")
        return "cancelled"
    with database.connection() as conn:
        # A workflow's job held for its dependencies: cancelled at once (a trigger counts it
        # and cancels what waits on it, by the workflow's on_failure).
        with conn.transaction():  # its batch's row first, as a finishing worker's trigger does
            conn.execute(database.sql(batches_store.LOCK_HELD_BATCH), {"job_id": public})
            held = conn.execute(
                database.sql(batches_store.CANCEL_HELD), {"job_id": public, "now": clock.now()}
            ).fetchone()
        if held is not None:
            _emit(public, "cancelled")
            return "cancelled"
        asked = conn.execute(
            database.sql(control_store.REQUEST_CANCEL),
            {
                "job_id": public,
                "now": clock.now(),
                "channel": jobs_store.notify_channel(database.schema),
                "payload": control_store.CANCEL_PAYLOAD,
            },
        ).fetchone()
        if asked is not None:
            _emit(public, "cancelling")
            return "cancelling"
        state = _read(database, conn, public).state
    if state in ("finished", "failed", "discarded", "cancelled"):
        return state
    return "cancelling"  # pragma: no cover - it ended between the two statements


def _emit(job_id: uuid.UUID, outcome: str) -> None:
    if "cancel_request" in events.active:
        events.emit("cancel_request", count=1, job_id=job_id, outcome=outcome)
