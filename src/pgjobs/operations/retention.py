"""Retention: deleting finished jobs once they are old enough (``pgjobs clear-finished``).

``finished_at`` is not indexed (it is written for every job, on the hot path), so clearing walks
the jobs table by primary key, ``batch_size`` ids at a time, deleting in each range the jobs that
finished (or were discarded) before the cutoff, with their error histories (a range is the next
``batch_size`` existing ids, so gaps left by earlier clearing cost nothing).  Every range is one
short autocommit statement: no long transaction, no lock held for more than a few milliseconds,
and it can be interrupted at any point.  Failed jobs are never cleared (an operator retries or
discards them), nor are jobs waiting or running, nor the holder of a ``period`` unique key whose
window has not ended (its row is the key: deleting it would let a second job into the window);
the window's end is part of the key, so this costs no extra read, and a later run, which walks
from the first id again, deletes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from pgjobs import clock, events
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError
from pgjobs.store import finished as store

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job, JobFunction

DEFAULT_OLDER_THAN = timedelta(days=1)
DEFAULT_BATCH_SIZE = 1000
# The walk stops at the first range of ids all created this long after the cutoff.
CREATED_SLACK = timedelta(hours=1)


def _older_than(value: float | timedelta | str) -> timedelta:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        from pgjobs.config.queue import parse_duration

        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise ConfigurationError(f"older_than {exc}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"older_than must be seconds, a timedelta or a duration such as '1d', got {value!r}"
        )
    if seconds < 0:
        raise ConfigurationError(f"older_than must not be negative, got {value!r}")
    return timedelta(seconds=seconds)


def clear_finished(
    older_than: float | timedelta | str = DEFAULT_OLDER_THAN,
    job_class: str | type[Job] | JobFunction[..., Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    database: Database | None = None,
    progress: Callable[[int], None] | None = None,
    connection: Callable[[], AbstractContextManager[psycopg.Connection[Any]]] | None = None,
) -> int:
    """Delete the jobs that finished (or were discarded) more than ``older_than`` ago.

    ``older_than``: seconds, a timedelta or a duration such as ``"1d"``, ``"12h"``.
    ``job_class``: only this class (a job class, ``@pgjobs.job`` function or stored name).
    ``batch_size``: ids per statement.  ``progress``: called after each range with the running
    total.  ``connection``: where each statement runs (``database.connection`` by default; the
    scheduler passes its supervisor's shared link).  Returns how many jobs were deleted.
    """
    from pgjobs.operations.failed import _class_name

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    if database is None:
        from pgjobs.runtime import get_database

        database = get_database()
    started = time.perf_counter()
    now = clock.now()
    cutoff = now - _older_than(older_than)
    class_name = _class_name(job_class)
    statement = database.sql(store.CLEAR_RANGE)
    connection = connection or database.connection
    with connection() as conn:
        newest = conn.execute(database.sql(store.MAX_ID)).fetchone()
    end = int(newest[0]) if newest and newest[0] is not None else 0
    params: dict[str, Any] = {
        "now": now,  # a period key's holder stays until its window has ended
        "cutoff": cutoff,
        "class_name": class_name,
        "limit": batch_size,
        "after": 0,
    }
    deleted = 0
    while params["after"] < end:
        with connection() as conn:  # autocommit: one short transaction a range
            row = conn.execute(statement, params).fetchone()
        if row is None or row[1] is None:
            break
        deleted += int(row[0])
        if progress is not None:
            progress(deleted)
        params["after"] = int(row[1])
        if row[2] is not None and row[2] > cutoff + CREATED_SLACK:
            # Every job from here on was created after the cutoff, so none can have finished
            # before it: stop, instead of walking the whole retained history every hour.  (Ids
            # follow creation but for transactions open longer than the slack.)
            break
    if class_name is None:  # batches whose jobs are all gone (pgjobs.workflows)
        from pgjobs.store import batches as batches_store

        cleared = database.sql(batches_store.CLEAR)
        with connection() as conn:
            while conn.execute(cleared, {"cutoff": cutoff}).rowcount:
                pass  # again for their parents, whose last nested batch just went
    if "clear_finished" in events.active:
        events.emit(
            "clear_finished",
            count=deleted,
            cutoff=cutoff,
            job_class=class_name,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
    return deleted
