"""The running job's identity in every log record: job_id, job_class, queue and attempt.

Guarantees:

- While a worker performs a job — a ``def perform`` in its job thread, an ``async def perform``
  in its task on the worker's event loop, with their callbacks and error handlers —
  :func:`current_job` returns that job, and :class:`JobContextFilter` adds the four fields to
  every record it sees, whichever logger emitted it (pgjobs' or the application's).
- Outside a job :func:`current_job` is ``None`` and the filter adds nothing.  The worker clears the
  context after every job, and an async job sets it in its own task (whose context dies with
  it), so the next job on the same thread or loop never inherits the previous one's.
- Threads a job starts itself do not inherit the context (``threading`` copies no context
  variables); ``asyncio`` tasks, ``asyncio.to_thread`` and ``contextvars.copy_context().run`` do.
- It is set once the job is restored (its class resolved, its arguments decoded) and cleared
  when its outcome is judged; a job whose class is unknown never gets it (pgjobs' own lines about
  it are events, which carry the job's fields themselves).
- ``perform_now`` sets it too, around the inline run (:func:`inline`): the fields are the job
  instance's (its own ``job_id``, ``attempt`` 1), and the job it ran inside of, if any, is
  current again afterwards.
- Cost: the worker sets one context variable when a job starts and again when it ends.  The
  fields are derived only when a record reaches a handler that has the filter, so a job that logs
  nothing pays nothing more.

The fields come from the job as it was claimed (not from the ``Job`` object, which a job may
change): ``job_id`` is the public UUID as a string, ``job_class`` the stored name (the events'
``class``), ``attempt`` the execution number (1 for the first run).  The filter never overwrites
an attribute a record already has (an ``extra={"queue": ...}`` of the application's wins).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the worker's types; nothing here imports the engine
    from pgjobs.jobs.base import Job
    from pgjobs.processes.executor import Claimed

FIELDS = ("job_id", "job_class", "queue", "attempt")

# One variable, one set when a job starts and one when it ends: the tuple costs less than a
# second variable would (each ``set`` copies the context's mapping).  No Claimed: perform_now.
_running: ContextVar[tuple[Claimed | None, Job] | None] = ContextVar("pgjobs_running", default=None)


def current_job() -> Job | None:
    """The job being performed in this thread or task (its ``self``), or ``None`` outside a job."""
    running = _running.get()
    return None if running is None else running[1]


def enter(claimed: Claimed, job: Job) -> None:
    """The worker performs ``job`` (restored from ``claimed``) in this thread or task."""
    _running.set((claimed, job))


def leave() -> None:
    """The job of this thread ended: clear the context (the thread's next job starts clean)."""
    _running.set(None)


@contextmanager
def inline(job: Job) -> Iterator[None]:
    """``perform_now``: ``job`` runs in this thread until the block ends; then whatever ran
    before (a worker's job that performs another inline) is current again."""
    token = _running.set((None, job))
    try:
        yield
    finally:
        _running.reset(token)


class JobContextFilter(logging.Filter):
    """Adds ``job_id``, ``job_class``, ``queue`` and ``attempt`` to records emitted during a job.

    Install it on a **handler** (``handler.addFilter(pgjobs.JobContextFilter())``): a logger's
    own filters do not see the records its child loggers propagate to it.  It lets every record
    through; outside a job it changes nothing.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        running = _running.get()
        if running is not None:
            claimed, fields = running[0], record.__dict__
            if claimed is None:  # perform_now: the job as it is
                job = running[1]
                fields.setdefault("job_id", str(job.job_id))
                fields.setdefault("job_class", type(job).job_name)
                fields.setdefault("queue", job.queue_name)
                fields.setdefault("attempt", job.executions or 1)
                return True
            fields.setdefault("job_id", str(claimed.job_id))
            fields.setdefault("job_class", claimed.class_name)
            fields.setdefault("queue", claimed.queue_name)
            fields.setdefault("attempt", claimed.executions + 1)
        return True
