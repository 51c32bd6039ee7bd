"""Batches and workflows for operators: list them newest first, and show one — its counts, its
nested batches, its callbacks and its jobs a page at a time, by state, with each job's
dependencies.  ``pgjobs batches list|show`` (:mod:`pgjobs.cli.batches`) and the dashboard's
batch pages (:mod:`pgjobs.web.pages`) share it.  Plain SQL on psycopg, like
:mod:`pgjobs.operations.lists`: none of the dashboard's packages.

Every read is bounded.  The list is a keyset page of ``pgjobs_batches``' primary key
(``batches.LIST``).  A batch's jobs are a keyset page of ``ix_pgjobs_jobs_batch_id_id``
(``batches.JOBS``, each job's state from the execution tables' primary keys); a page of one state
reads at most :data:`SEARCH_WINDOW` of the batch's jobs and, when that leaves it short, says
where to look further.  The jobs per state are counted over the batch's first :data:`COUNT_CAP`
jobs (past that, lower bounds).  The batch's own counts (``BatchInfo``) are exact: the triggers
keep them.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgjobs.db.names import sql
from pgjobs.errors import ConfigurationError
from pgjobs.operations.counts import Count
from pgjobs.store import batches as store
from pgjobs.workflows.info import BatchInfo, info_from_row

PAGE_SIZE = 50
SEARCH_WINDOW = 10_000  # jobs of a batch one filtered page looks at
COUNT_CAP = 10_000  # jobs of a batch counted per state
MAX_NESTED = 100  # nested batches shown with a batch
MAX_BEFORE = 2**63 - 1

KINDS = ("batch", "workflow")
# What batches.LIST filters on: running (jobs pending), finished, and of those succeeded or failed.
LIST_STATES = ("running", "finished", "succeeded", "failed")
# A job's state in a batch, as batches.JOBS says it (running: claimed by a worker), in the order
# a job goes through them.
JOB_STATES = (
    "held", "scheduled", "blocked", "ready", "running", "failed", "finished", "discarded",
    "cancelled",
)  # fmt: skip

# batches.JOBS as a table: its page (after=, limit=) of the batch's jobs, columns named.
_JOBS = (
    f"({store.JOBS}) AS x(id, job_id, class_name, queue_name, priority, executions, created_at,"
    " finished_at, state, depends_on)"
)
# The jobs of one state among a window of the batch's jobs (limit= is the window's size).
JOBS_IN_STATE = (
    f"SELECT * FROM {_JOBS}\nWHERE x.state = %(state)s ORDER BY x.id LIMIT %(page_size)s"
)
# How far that window reached: (jobs in it, the last one's id).  Only the ids are computed: the
# planner drops the columns nobody reads (the states and dependencies).
WINDOW_EDGE = f"SELECT count(*), max(x.id) FROM {_JOBS}"
# The batch's first jobs (limit= of them) per state.
STATE_COUNTS = f"SELECT x.state, count(*) FROM {_JOBS}\nGROUP BY x.state"
# Which of these public ids are written jobs (a batch's callbacks, once their moment came);
# ix_pgjobs_jobs_job_id.
WRITTEN = "SELECT job_id FROM {jobs} WHERE job_id = ANY(%(ids)s::uuid[])"


@dataclass(frozen=True)
class BatchesPage:
    batches: list[BatchInfo]
    next: int | None  # the ``before`` of the next (older) page; None at the end


@dataclass(frozen=True)
class BatchJob:
    """A job of a batch, as its page lists it."""

    id: int
    job_id: uuid.UUID
    class_name: str
    queue_name: str
    priority: int
    executions: int
    created_at: datetime
    finished_at: datetime | None
    state: str  # one of JOB_STATES
    depends_on: tuple[uuid.UUID, ...]  # a workflow's job: the jobs it runs after, in order

    def as_dict(self) -> dict[str, Any]:
        return _jsonable({**asdict(self), "depends_on": list(self.depends_on)})


@dataclass(frozen=True)
class JobsPage:
    jobs: list[BatchJob]
    next: int | None  # the ``after`` of the next page; None at the end
    searched: int = 0  # a short page of one state: how many of the batch's jobs it looked at
    exhausted: bool = True  # False when a short page's window was full: look further


@dataclass(frozen=True)
class BatchDetail:
    """A batch with what its page shows besides its jobs."""

    info: BatchInfo
    nested: list[BatchInfo]  # its nested batches (the first MAX_NESTED), oldest first
    more_nested: bool  # it has more than MAX_NESTED
    written: frozenset[uuid.UUID]  # its callbacks' job ids that are written jobs
    counts: dict[str, Count]  # its jobs per state (lower bounds past COUNT_CAP)


def check_filters(kind: str | None, state: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise ConfigurationError(f"kind {kind!r}: choose {' or '.join(KINDS)}")
    if state is not None and state not in LIST_STATES:
        raise ConfigurationError(f"state {state!r}: choose one of {', '.join(LIST_STATES)}")


def list_batches(
    conn: psycopg.Connection[Any],
    schema: str | None,
    *,
    kind: str | None = None,
    state: str | None = None,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> BatchesPage:
    """Batches and workflows newest first, older than the row id ``before``; ``kind``: batch or
    workflow; ``state``: running, finished, succeeded or failed (None: any)."""
    check_filters(kind, state)
    params = {"before": before or MAX_BEFORE, "kind": kind, "state": state, "limit": limit}
    found = [info_from_row(row) for row in conn.execute(sql(store.LIST, schema), params)]
    return BatchesPage(found, found[-1].id if len(found) == limit else None)


def find(
    conn: psycopg.Connection[Any], schema: str | None, batch_id: uuid.UUID
) -> BatchInfo | None:
    """The batch or workflow with this public id, None if there is none."""
    row = conn.execute(sql(store.GET, schema), {"batch_id": batch_id}).fetchone()
    return None if row is None else info_from_row(row)


def detail(conn: psycopg.Connection[Any], schema: str | None, info: BatchInfo) -> BatchDetail:
    """Its nested batches, which of its callbacks are written, its jobs per state."""
    ids = [row[0] for row in conn.execute(sql(store.CHILDREN, schema), {"id": info.id})]
    nested = [found for child in ids[:MAX_NESTED] if (found := find(conn, schema, child))]
    callbacks = list(info.callbacks.values())
    written = {row[0] for row in conn.execute(sql(WRITTEN, schema), {"ids": callbacks})}
    return BatchDetail(
        info, nested, len(ids) > MAX_NESTED, frozenset(written), state_counts(conn, schema, info)
    )


def state_counts(
    conn: psycopg.Connection[Any], schema: str | None, info: BatchInfo, cap: int = COUNT_CAP
) -> dict[str, Count]:
    """The batch's jobs per state (every state of :data:`JOB_STATES`), counted among its first
    ``cap`` jobs: exact below, lower bounds past it."""
    params = {"id": info.id, "after": 0, "limit": cap}
    found = {str(s): int(n) for s, n in conn.execute(sql(STATE_COUNTS, schema), params)}
    capped = sum(found.values()) >= cap
    return {
        state: Count(found.get(state, 0), "at_least" if capped else "exact")
        for state in (*JOB_STATES, *found)
    }


def jobs(
    conn: psycopg.Connection[Any],
    schema: str | None,
    info: BatchInfo,
    *,
    state: str | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
    window: int = SEARCH_WINDOW,
) -> JobsPage:
    """A page of the batch's jobs in the order they were written, after the row id ``after``;
    with ``state``, only the jobs in it (among the next ``window`` jobs of the batch)."""
    if state is not None and state not in JOB_STATES:
        raise ConfigurationError(f"state {state!r}: choose one of {', '.join(JOB_STATES)}")
    params: dict[str, Any] = {"id": info.id, "after": after or 0, "limit": limit}
    if state is None:
        rows = [_job(row) for row in conn.execute(sql(store.JOBS, schema), params)]
        return JobsPage(rows, rows[-1].id if len(rows) == limit else None)
    params.update(state=state, limit=window, page_size=limit)
    rows = [_job(row) for row in conn.execute(sql(JOBS_IN_STATE, schema), params)]
    if len(rows) == limit:
        return JobsPage(rows, rows[-1].id)
    edge = conn.execute(sql(WINDOW_EDGE, schema), params).fetchone()
    searched, reached = (int(edge[0]), edge[1]) if edge else (0, None)
    if searched < window or reached is None:
        return JobsPage(rows, None, searched)
    return JobsPage(rows, int(reached), searched, exhausted=False)


def _job(row: tuple[Any, ...]) -> BatchJob:
    ident, job_id, class_name, queue, priority, executions, created, finished, state, after = row
    return BatchJob(
        ident, job_id, class_name, queue, priority, executions, created, finished, str(state),
        tuple(after or ()),
    )  # fmt: skip


def progress_line(info: BatchInfo) -> str:
    """``7/10 ended: 6 succeeded, 1 failed, 0 discarded, 0 cancelled; 3 pending``."""
    return (
        f"{info.done}/{info.total} ended: {info.succeeded} succeeded, {info.failed} failed, "
        f"{info.discarded} discarded, {info.cancelled} cancelled; {info.pending} pending"
    )


def as_dict(info: BatchInfo) -> dict[str, Any]:
    """A batch as JSON data: its fields, its state and how much has ended; ids and times as
    text."""
    data = {**asdict(info), "state": info.state, "done": info.done, "progress": progress_line(info)}
    data["callbacks"] = {what: str(job) for what, job in info.callbacks.items()}
    return _jsonable(data)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    def value(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, uuid.UUID):
            return str(v)
        if isinstance(v, list):
            return [value(item) for item in v]
        return v

    return {key: value(v) for key, v in data.items()}
