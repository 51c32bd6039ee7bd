"""The job lists, one per state, newest first, a keyset page at a time: the dashboard's lists
(:mod:`pgjobs.web.pages`) and ``pgjobs jobs list`` (:mod:`pgjobs.cli.waiting`).  Plain SQL on
psycopg: listing jobs needs none of the dashboard's packages.

Every list walks one index backwards from a cursor and reads at most :data:`SEARCH_WINDOW` rows
per page: the primary key of the state's execution table (the failed table by its
``(created_at, job_id)`` index: newest failure first), ``pgjobs_jobs``' primary key for finished
jobs (``finished_at`` is not indexed; most jobs are finished, so they come quickly), or
``(class_name, id)`` for finished jobs of one class.  Without filters a page reads about
``PAGE_SIZE`` rows.  Filters (queue, class, text in the arguments) are applied to the rows of that
window; a rare match may leave a page short, and the page then says how far it looked and offers
to look further (:data:`WINDOW_EDGE`).  So no request ever scans a whole table.

Jobs in progress also show their last progress report and their cancel request, read from the job
row each page row already probes; the finished list marks discarded and cancelled jobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from pgjobs.db.names import sql
from pgjobs.operations.failed import escape_like
from pgjobs.operations.results import Progress, parse_progress

PAGE_SIZE = 50
SEARCH_WINDOW = 10_000
MAX_BEFORE = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

_JOB = """j.id, j.job_id, j.class_name, j.queue_name, j.priority, left(j.arguments::text, 240),
       j.executions, j.created_at"""

_FILTERS = """
  AND (%(queue)s::text IS NULL OR j.queue_name = %(queue)s)
  AND (%(class_name)s::text IS NULL OR j.class_name = %(class_name)s)
  AND (%(text)s::text IS NULL OR j.arguments::text ILIKE %(text)s)"""


# Each window row's job, by primary key.  A LATERAL subquery with LIMIT 1 is never flattened
# into a join, so this is always a nested loop of index probes (at most one per window row):
# the planner may not pick a hash join, which would scan all of pgjobs_jobs.
_JOB_OF_ROW = """
CROSS JOIN LATERAL (
    SELECT id, job_id, class_name, queue_name, priority, arguments, executions, created_at{more}
    FROM {{jobs}} WHERE id = e.job_id LIMIT 1
) j"""


def _by_job_id(window: str, columns: str, joins: str = "", more: str = "") -> str:
    """A page of one execution table's window, with each row's job (and its columns ``more``),
    newest job first."""
    return (
        f"SELECT {_JOB}, {columns}\nFROM ({window}) e{_JOB_OF_ROW.format(more=more)}{joins}"
        f"\nWHERE true{_FILTERS}\nORDER BY e.job_id DESC LIMIT %(limit)s"
    )


# Ready jobs: ready's primary key, backwards.  (at, detail, process) = ready since, -, -.
READY = _by_job_id(
    "SELECT job_id, created_at FROM {ready} WHERE job_id < %(before)s "
    "ORDER BY job_id DESC LIMIT %(window)s",
    "e.created_at, NULL::text, NULL::bigint",
)

# Scheduled jobs: scheduled's primary key, backwards.  at = when it is due.
SCHEDULED = _by_job_id(
    "SELECT job_id, scheduled_at FROM {scheduled} WHERE job_id < %(before)s "
    "ORDER BY job_id DESC LIMIT %(window)s",
    "e.scheduled_at, NULL::text, NULL::bigint",
)

# Running jobs also show their last progress report and their cancel request (from the job's
# row, read by the same primary-key probe).
_RUNNING = (
    "e.created_at, p.kind || ' ' || p.hostname || ':' || p.pid, e.process_id, j.progress, "
    "j.cancel_requested_at",
    "\nLEFT JOIN {processes} p ON p.id = e.process_id",
    ", progress, cancel_requested_at",
)

# Jobs in progress: claimed's primary key, backwards.  at = claimed (started), detail = process.
IN_PROGRESS = _by_job_id(
    "SELECT job_id, process_id, created_at FROM {claimed} WHERE job_id < %(before)s "
    "ORDER BY job_id DESC LIMIT %(window)s",
    *_RUNNING,
)

# Jobs one process is running: claimed (process_id, job_id), backwards.
IN_PROGRESS_BY_PROCESS = _by_job_id(
    "SELECT job_id, process_id, created_at FROM {claimed} "
    "WHERE process_id = %(process)s AND job_id < %(before)s "
    "ORDER BY job_id DESC LIMIT %(window)s",
    *_RUNNING,
)

# Blocked jobs: blocked's primary key, backwards.  detail = the concurrency key.
BLOCKED = _by_job_id(
    "SELECT job_id, concurrency_key, created_at FROM {blocked} WHERE job_id < %(before)s "
    "ORDER BY job_id DESC LIMIT %(window)s",
    "e.created_at, e.concurrency_key, NULL::bigint",
)

# Held jobs (a workflow's, waiting for their dependencies): held's primary key, backwards.
# at = held since, detail = how many of its dependencies have not ended yet.
HELD = _by_job_id(
    "SELECT job_id, pending, created_at FROM {held} WHERE job_id < %(before)s "
    "ORDER BY job_id DESC LIMIT %(window)s",
    "e.created_at, 'waiting for ' || e.pending || CASE WHEN e.pending = 1 THEN ' job' "
    "ELSE ' jobs' END, NULL::bigint",
)

# Failed jobs, newest failure first: failed (created_at, job_id), backwards from the cursor.
# The error filter matches like pgjobs.FailedJobs: the full name or its last dotted parts.
FAILED = (
    f"SELECT {_JOB}, e.created_at, e.exception_class || ': ' || left(e.message, 240), "
    "NULL::bigint\n"
    "FROM (SELECT job_id, created_at, exception_class, message FROM {failed}\n"
    "      WHERE (created_at, job_id) < (%(before_at)s, %(before)s)\n"
    "      ORDER BY created_at DESC, job_id DESC LIMIT %(window)s) e"
    + _JOB_OF_ROW.format(more="")
    + "\nWHERE true"
    + _FILTERS
    + "\n"
    "  AND (%(error)s::text IS NULL OR e.exception_class = %(error)s\n"
    "       OR right(e.exception_class, length(%(error)s) + 1) = '.' || %(error)s)\n"
    "ORDER BY e.created_at DESC, e.job_id DESC LIMIT %(limit)s"
)

_FINISHED = (
    f"SELECT {_JOB}, j.finished_at, CASE WHEN j.cancelled_at IS NOT NULL THEN 'cancelled' "
    "WHEN j.discarded_at IS NOT NULL THEN 'discarded' END, NULL::bigint\n"
    "FROM (SELECT id, job_id, class_name, queue_name, priority, arguments, executions, "
    "created_at, finished_at, discarded_at, cancelled_at FROM {{jobs}}\n      WHERE {where}"
    "id < %(before)s ORDER BY id DESC LIMIT %(window)s) j\n"
    "WHERE j.finished_at IS NOT NULL" + _FILTERS + "\nORDER BY j.id DESC LIMIT %(limit)s"
)
# Finished (and discarded, and cancelled) jobs: pgjobs_jobs' primary key, backwards, skipping
# unfinished ones.
FINISHED = _FINISHED.format(where="")
# Finished jobs of one class: jobs (class_name, id), backwards (the row comparison is what
# that index, and only it, can bound).
FINISHED_BY_CLASS = _FINISHED.format(
    where="class_name = %(class_name)s AND (class_name, id) < (%(class_name)s, %(before)s) AND "
)

# How far a window reached: (rows in it, lowest id), for a filtered page that came back short.
_EDGE_WINDOWS = {
    "ready": "SELECT job_id FROM {ready} WHERE job_id < %(before)s",
    "scheduled": "SELECT job_id FROM {scheduled} WHERE job_id < %(before)s",
    "in_progress": "SELECT job_id FROM {claimed} WHERE job_id < %(before)s",
    "in_progress_by_process": (
        "SELECT job_id FROM {claimed} WHERE process_id = %(process)s AND job_id < %(before)s"
    ),
    "blocked": "SELECT job_id FROM {blocked} WHERE job_id < %(before)s",
    "held": "SELECT job_id FROM {held} WHERE job_id < %(before)s",
    "finished": "SELECT id AS job_id FROM {jobs} WHERE id < %(before)s",
    "finished_by_class": (
        "SELECT id AS job_id FROM {jobs} WHERE class_name = %(class_name)s AND id < %(before)s"
    ),
}
WINDOW_EDGE = {
    key: f"SELECT count(*), min(job_id) FROM ({inner} ORDER BY job_id DESC LIMIT %(window)s) w"
    for key, inner in _EDGE_WINDOWS.items()
}
# The failed window's edge: (rows, lowest (created_at, job_id)).
FAILED_EDGE = """
SELECT count(*), min(created_at), (array_agg(job_id ORDER BY created_at, job_id))[1]
FROM (SELECT created_at, job_id FROM {failed}
      WHERE (created_at, job_id) < (%(before_at)s, %(before)s)
      ORDER BY created_at DESC, job_id DESC LIMIT %(window)s) w
"""

STATEMENTS = {
    "ready": READY,
    "scheduled": SCHEDULED,
    "in_progress": IN_PROGRESS,
    "in_progress_by_process": IN_PROGRESS_BY_PROCESS,
    "blocked": BLOCKED,
    "held": HELD,
    "failed": FAILED,
    "finished": FINISHED,
    "finished_by_class": FINISHED_BY_CLASS,
}


@dataclass(frozen=True)
class Filters:
    queue: str | None = None
    class_name: str | None = None
    text: str | None = None  # a substring of the arguments' JSON, case-insensitive
    error: str | None = None  # failed jobs: exception class, with or without its module
    process: int | None = None  # jobs in progress: the process running them

    @property
    def active(self) -> bool:
        return any(v is not None for v in vars(self).values())


@dataclass(frozen=True)
class Cursor:
    """A keyset position: page rows come strictly after (older than) it."""

    id: int
    at: datetime | None = None  # failed jobs are ordered by (failed at, id)

    def encode(self) -> str:
        if self.at is None:
            return str(self.id)
        return f"{(self.at - _EPOCH) // _MICRO}-{self.id}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        """The cursor in ``text``, None when it is missing or malformed (the first page)."""
        try:
            if not text:
                return None
            if "-" in text:
                micros, _, ident = text.partition("-")
                return cls(int(ident), _EPOCH + int(micros) * _MICRO)
            return cls(int(text))
        except (ValueError, OverflowError, OSError):
            return None


@dataclass(frozen=True)
class JobRow:
    id: int
    job_id: Any  # uuid.UUID
    class_name: str
    queue_name: str
    priority: int
    arguments: str  # the stored JSON, cut at 240 characters
    executions: int
    created_at: datetime
    at: datetime | None  # the state's time: ready since, due, started, blocked, failed, finished
    detail: str | None  # the error, the process, the concurrency key, "discarded", "cancelled"
    process_id: int | None
    progress: Progress | None = None  # jobs in progress: the last progress report
    cancel_requested_at: datetime | None = None  # jobs in progress: asked to stop since


@dataclass(frozen=True)
class Page:
    rows: list[JobRow]
    next: Cursor | None  # where the next (older) page starts; None at the end
    searched: int = 0  # a short filtered page: how many rows its window held
    exhausted: bool = True  # False when a short page's window was full: look further


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def progress(data: Any) -> Progress | None:
    """A job's stored progress report, None when there is none or its count is not a finite
    number (``progress(None)`` or ``progress(float("inf"))`` are accepted by the job); a total
    that is not one is left out."""
    found = parse_progress(data)
    if found is None or not _number(found.done):
        return None
    return found if found.total is None or _number(found.total) else replace(found, total=None)


def _row(*values: Any) -> JobRow:
    """A page row; a running job's (two more columns) with its progress report decoded."""
    if len(values) == 11:
        return JobRow(*values)
    row = JobRow(*values[:11])
    return replace(row, progress=progress(values[11]), cancel_requested_at=values[12])


def _key(state: str, filters: Filters) -> str:
    if state == "in_progress" and filters.process is not None:
        return "in_progress_by_process"
    if state == "finished" and filters.class_name is not None:
        return "finished_by_class"
    return state


def page(
    conn: psycopg.Connection[Any],
    schema: str | None,
    state: str,
    filters: Filters,
    cursor: Cursor | None = None,
    *,
    limit: int = PAGE_SIZE,
    window: int = SEARCH_WINDOW,
) -> Page:
    """One page of ``state``'s jobs matching ``filters``, older than ``cursor``."""
    key = _key(state, filters)
    params: dict[str, Any] = {
        "before": cursor.id if cursor else MAX_BEFORE,
        "before_at": cursor.at if cursor and cursor.at else datetime.max.replace(tzinfo=UTC),
        "window": window,
        "limit": limit,
        "queue": filters.queue,
        "class_name": filters.class_name,
        "text": f"%{escape_like(filters.text)}%" if filters.text else None,
        "error": filters.error if state == "failed" else None,
        "process": filters.process,
    }
    rows = [_row(*row) for row in conn.execute(sql(STATEMENTS[key], schema), params)]
    failed = state == "failed"
    if len(rows) == limit:
        last = rows[-1]
        return Page(rows, Cursor(last.id, last.at if failed else None))
    if not filters.active and state != "finished":
        return Page(rows, None)  # every row of the window matched: the table ended
    edge = conn.execute(sql(FAILED_EDGE if failed else WINDOW_EDGE[key], schema), params)
    found = edge.fetchone()
    assert found is not None
    searched = int(found[0])
    if searched < window:
        return Page(rows, None, searched)
    resume = Cursor(int(found[2]), found[1]) if failed else Cursor(int(found[1]))
    return Page(rows, resume, searched, exhausted=False)
