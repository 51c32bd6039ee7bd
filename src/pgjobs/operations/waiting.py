"""Waiting jobs, for operators: discard ready, scheduled or blocked jobs; run scheduled jobs now.

::

    waiting = pgjobs.WaitingJobs()
    outcome = waiting.discard(job_id)             # one job, whichever table holds it
    if not outcome.done:
        print(f"not discarded: it is {outcome.state}")   # e.g. a worker just claimed it
    waiting.discard_all("scheduled", queue="reports")    # in batches of 1,000
    waiting.dispatch_all(job_class=SendDigest)           # scheduled → ready now

Every action is one short statement per batch (``store.ready.DISCARD_READY``,
``store.scheduled.DISCARD_SCHEDULED`` / ``DISPATCH_SCHEDULED``, ``store.blocked.DISCARD_BLOCKED``)
that picks its rows ``FOR UPDATE SKIP LOCKED``: it races the workers, the dispatcher and the
unblockers cleanly.  A row one of them is moving right now is skipped and a row already moved is
gone, so a job a worker just claimed is never discarded — the single-job methods then say which
state the job is in now.  A discarded job is finished with ``discarded_at`` set and its unique
key released (a period's key stays, as everywhere).  A discarded ready job of a limited class
gives its slot back and its key is unblocked; a blocked job holds no slot, so discarding it
leaves the semaphore alone.  A scheduled job run now goes where the dispatcher sends a due one:
to ready, or through blocked to take a slot when its class has a concurrency limit.
"""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

import psycopg

from pgjobs import clock, events
from pgjobs.errors import ConfigurationError
from pgjobs.operations import concurrency
from pgjobs.operations.failed import OnDatabase, _class_name, _uuid, filter_params
from pgjobs.operations.queues import RateLimitInfo, rate_limits
from pgjobs.store import blocked as blocked_store
from pgjobs.store import control as control_store
from pgjobs.store import jobs as jobs_store
from pgjobs.store import pauses as pauses_store
from pgjobs.store import rates as rates_store
from pgjobs.store import ready as ready_store
from pgjobs.store import scheduled as scheduled_store

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job, JobFunction


State = Literal["ready", "scheduled", "blocked"]
STATES: tuple[State, ...] = ("ready", "scheduled", "blocked")
_DISCARD: dict[str, str] = {
    "ready": ready_store.DISCARD_READY,
    "scheduled": scheduled_store.DISCARD_SCHEDULED,
    "blocked": blocked_store.DISCARD_BLOCKED,
}

CANCEL_TRIES, CANCEL_PAUSE = 20, 0.05  # a locked waiting row: tried again for about a second
_CANCEL: dict[str, str] = {
    "ready": control_store.CANCEL_READY,
    "scheduled": control_store.CANCEL_SCHEDULED,
    "blocked": control_store.CANCEL_BLOCKED,
}

Progress = Callable[[int], None]


class Filters(TypedDict, total=False):
    """The filters every bulk :class:`WaitingJobs` method takes (optional, combined with AND)."""

    job_class: str | type[Job] | JobFunction[..., Any] | None
    queue: str | None
    text: str | None


@dataclass(frozen=True)
class Outcome:
    """What a single-job action did: ``done``, and the state the job is in now (None if gone)."""

    done: bool
    state: str | None


@dataclass(frozen=True)
class WaitingFor:
    """What a job waits for (the job page, ``pgjobs jobs show``).

    Scheduled: ``scheduled_at``.  Blocked: ``concurrency_key``, ``limit``, ``slots_taken`` (the
    semaphore's value), ``semaphore_expires_at``, ``blocked_until`` (when the block expires and
    concurrency maintenance looks at the key again) and ``holders`` (public ids of the key's
    running jobs).  Waiting in a rate limit's line (also ``blocked``): ``rate`` (the key as
    :func:`pgjobs.operations.queues.rate_limits` shows it: limit, period, starts in the window,
    jobs in line, when the line moves next).  Ready: ``paused_since`` when its queue is paused.
    """

    state: str
    scheduled_at: datetime | None = None
    concurrency_key: str | None = None
    limit: int | None = None
    slots_taken: int | None = None
    semaphore_expires_at: datetime | None = None
    blocked_until: datetime | None = None
    holders: tuple[str, ...] = ()
    rate: RateLimitInfo | None = None
    paused_since: datetime | None = None


def _state(state: str) -> State:
    if state not in STATES:
        raise ConfigurationError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    return state


class WaitingJobs(OnDatabase):
    """The waiting (ready, scheduled, blocked) jobs of a database (the default one unless given).

    Bulk methods take the filters ``job_class`` (a job class, a ``@pgjobs.job`` function or a
    stored class name), ``queue`` and ``text`` (a case-insensitive substring of the job's stored
    arguments, JSON), all optional and combined with AND, and an optional ``progress`` callback
    called after each batch with the running total.
    """

    @staticmethod
    def _params(
        *,
        job_class: str | type[Job] | JobFunction[..., Any] | None = None,
        queue: str | None = None,
        text: str | None = None,
        job_ids: builtins.list[uuid.UUID] | None = None,
    ) -> dict[str, Any]:
        return filter_params(job_class, queue, text, job_ids)

    def _batches(
        self,
        template: str,
        params: dict[str, Any],
        limit: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Run a pick-and-act statement batch after batch (one short transaction each), unblocking
        the keys each batch returns; returns how many jobs it acted on."""
        database = self.database
        statement = database.sql(template)
        channel = jobs_store.notify_channel(database.schema)
        params = {
            **params,
            "limit": limit or self.batch_size,
            "after_id": 0,
            "channel": channel,
            "done_channel": jobs_store.done_channel(database.schema),
        }
        total = 0
        while True:
            params["now"] = clock.now()
            with database.connection() as conn:  # autocommit: one short transaction a batch
                row = conn.execute(statement, params).fetchone()
                assert row is not None
                keys = row[-1] if len(row) > 2 else None
                if keys:  # slots given back, or jobs sent to blocked to take one
                    concurrency.unblock(database.runner(conn), keys, channel=channel)
            total += int(row[0])
            if progress is not None:
                progress(total)
            if row[1] is None or limit is not None:
                return total
            params["after_id"] = int(row[1])

    def state(self, job_id: uuid.UUID | str) -> str | None:
        """Where a job is (ready, scheduled, claimed, blocked, failed, finished), None if gone."""
        database = self.database
        with database.connection() as conn:
            located = self._locate(conn, job_id)
        return located[1] if located else None

    def _locate(
        self, conn: psycopg.Connection[Any], job_id: uuid.UUID | str
    ) -> tuple[tuple[Any, ...], str | None] | None:
        """The job's row (FIND_BY_JOB_ID) and its state, None when there is no such job."""
        database = self.database
        found = conn.execute(
            database.sql(jobs_store.FIND_BY_JOB_ID), {"job_id": _uuid(job_id)}
        ).fetchone()
        if found is None:
            return None
        row = conn.execute(database.sql(jobs_store.STATE_OF), {"id": found[0]}).fetchone()
        return found, (str(row[0]) if row else None)

    def _one(self, job_id: uuid.UUID | str, act: Callable[[str], str | None]) -> Outcome:
        """Act on one job in the state it is in.  If it moved meanwhile, the statement finds
        nothing: a job that moved to another table the action applies to (the dispatcher made a
        scheduled job ready) is followed there; one that a worker claimed, or whose row another
        process holds locked right now, is left alone and the outcome says where it is."""
        public = _uuid(job_id)
        state = self.state(public)
        for _ in range(3):  # it moved to another waiting table (scheduled → ready): follow it
            template = act(state) if state is not None else None
            if template is None:
                return Outcome(False, state)
            if self._batches(template, self._params(job_ids=[public]), 1) == 1:
                return Outcome(True, self.state(public))
            moved = self.state(public)
            if moved == state:  # still there, locked by whoever is moving it: they win
                return Outcome(False, state)
            state = moved
        return Outcome(False, state)

    # -- discarding ---------------------------------------------------------------------------

    def discard(self, job_id: uuid.UUID | str) -> Outcome:
        """Discard one ready, scheduled or blocked job; ``done`` is False when it is in another
        state (running, failed, finished) or gone, and ``state`` says which."""
        outcome = self._one(job_id, _DISCARD.get)
        if outcome.done and "discard_waiting" in events.active:
            events.emit("discard_waiting", count=1, job_id=_uuid(job_id))
        return outcome

    def discard_all(
        self, state: State, progress: Progress | None = None, **filters: Unpack[Filters]
    ) -> int:
        """Discard every ``state`` job (ready, scheduled or blocked) matching the filters."""
        done = self._batches(_DISCARD[_state(state)], self._params(**filters), progress=progress)
        if "discard_waiting" in events.active:
            events.emit("discard_waiting", count=done, state=state, **_shown(filters))
        return done

    # -- cancelling (pgjobs.cancel covers running jobs too) ---------------------------------

    def cancel(self, job_id: uuid.UUID | str) -> Outcome:
        """Cancel one ready, scheduled or blocked job: it never runs; ``done`` is False when it
        is in another state (``pgjobs.cancel`` then asks a running job to stop).

        A waiting row another statement holds locked right now (an unblock looking for a slot, a
        dispatch) is tried again for up to about a second before giving up on it: those locks
        are brief, and cancelling beats asking a job that waits to stop when it starts."""
        for _ in range(CANCEL_TRIES):
            outcome = self._one(job_id, _CANCEL.get)
            if outcome.done or outcome.state not in STATES:
                return outcome
            time.sleep(CANCEL_PAUSE)
        return outcome

    def cancel_all(
        self, state: State, progress: Progress | None = None, **filters: Unpack[Filters]
    ) -> int:
        """Cancel every ``state`` job (ready, scheduled or blocked) matching the filters."""
        done = self._batches(_CANCEL[_state(state)], self._params(**filters), progress=progress)
        if "cancel_request" in events.active:
            events.emit("cancel_request", count=done, state=state, **_shown(filters))
        return done

    def cancel_running(self, progress: Progress | None = None, **filters: Unpack[Filters]) -> int:
        """Ask every running job matching the filters to stop (cooperatively, within about a
        second: see ``docs/jobs.md``); returns how many were asked."""
        asked = self._batches(
            control_store.REQUEST_CANCEL_RUNNING, self._params(**filters), progress=progress
        )
        if asked:
            database = self.database
            with database.connection() as conn:
                conn.execute(
                    "SELECT pg_notify(%s, %s)",
                    (jobs_store.notify_channel(database.schema), control_store.CANCEL_PAYLOAD),
                )
        if "cancel_request" in events.active:
            events.emit("cancel_request", count=asked, state="running", **_shown(filters))
        return asked

    # -- running scheduled jobs now -----------------------------------------------------------

    def dispatch(self, job_id: uuid.UUID | str) -> Outcome:
        """Run one scheduled job now: to ready, or to blocked for a limited class without a free
        slot (``state`` says which); ``done`` is False when it is not scheduled."""
        outcome = self._one(
            job_id, lambda s: scheduled_store.DISPATCH_SCHEDULED if s == "scheduled" else None
        )
        if outcome.done and "dispatch_now" in events.active:
            events.emit("dispatch_now", count=1, job_id=_uuid(job_id))
        return outcome

    def dispatch_all(self, progress: Progress | None = None, **filters: Unpack[Filters]) -> int:
        """Run every scheduled job matching the filters now; returns how many."""
        done = self._batches(
            scheduled_store.DISPATCH_SCHEDULED, self._params(**filters), progress=progress
        )
        if "dispatch_now" in events.active:
            events.emit("dispatch_now", count=done, **_shown(filters))
        return done

    # -- reading ------------------------------------------------------------------------------

    def waiting_for(self, job_id: uuid.UUID | str) -> WaitingFor | None:
        """What the job waits for, None when there is no such job."""
        database = self.database
        with database.connection() as conn:
            located = self._locate(conn, job_id)
            if located is None:
                return None
            found, state = located[0], located[1] or "unknown"
            internal, queue, scheduled_at = found[0], found[2], found[7]
            if state == "scheduled":
                return WaitingFor(state, scheduled_at=scheduled_at)
            if state == "ready":
                paused = conn.execute(
                    database.sql(pauses_store.PAUSED_SINCE), {"queue": queue}
                ).fetchone()
                return WaitingFor(state, paused_since=paused[0] if paused else None)
            if state == "blocked":
                blocked = conn.execute(
                    database.sql(blocked_store.WAITING_FOR), {"id": internal}
                ).fetchone()
                if blocked is not None and str(blocked[0]).startswith(rates_store.LINE):
                    key = str(blocked[0])[len(rates_store.LINE) :]
                    found_rates = rate_limits(database, key=key, conn=conn)
                    return WaitingFor(state, rate=found_rates[0] if found_rates else None)
                if blocked is not None:
                    key, limit, taken, sem_expires, until, holders = blocked
                    return WaitingFor(
                        state,
                        concurrency_key=key,
                        limit=limit,
                        slots_taken=taken,
                        semaphore_expires_at=sem_expires,
                        blocked_until=until,
                        holders=tuple(holders),
                    )
            return WaitingFor(state)


def _shown(filters: Filters) -> dict[str, Any]:
    """The filters as an event shows them (names, not classes)."""
    shown: dict[str, Any] = {**filters}
    if "job_class" in filters:
        shown["job_class"] = _class_name(filters["job_class"])
    return shown
