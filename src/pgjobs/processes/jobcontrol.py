"""The worker's side of job control (:mod:`pgjobs.jobs.control`): what running jobs write goes
through the worker's main loop, and cancel requests reach the running jobs.

A job thread never uses the worker's connection itself: it queues a statement here and wakes the
main loop, which runs every queued statement at the start of its next pass — and again before it
records an ending, so whatever a job wrote on its way out (a checkpoint before an interruption,
its last progress) is in the database before the job is finished or given back.  Statements are
run with this process's id (``process_id``): they change a job only while this process holds it.

Cancel requests: the main loop asks the database which of its running jobs have one
(:data:`pgjobs.store.control.CANCEL_REQUESTED`) every :data:`CHECK_CANCELS` seconds while it runs
jobs, and at once when a cancel notification arrives.  A sync job sees the request through
``cancel_requested`` / ``check_cancelled()``; an async job's task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from pgjobs.errors import JobError

log = logging.getLogger("pgjobs")
CHECK_CANCELS = 0.5  # seconds between checks for cancel requests while jobs run
CALL_TIMEOUT = 30.0  # seconds a job thread waits for a statement it needs answered

Execute = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]


class _Request:
    __slots__ = ("done", "error", "params", "rows", "template")

    def __init__(self, template: str, params: dict[str, Any], wait: bool) -> None:
        self.template = template
        self.params = params
        self.rows: list[tuple[Any, ...]] | None = None
        self.error: Exception | None = None
        self.done = threading.Event() if wait else None


class Control:
    """Shared by a worker's main loop and its job threads."""

    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self.stopping = False  # the worker is stopping: stepped jobs stop at their next checkpoint
        self.cancelled: set[int] = set()  # running jobs (internal ids) with a cancel request
        self.tasks: dict[int, asyncio.Task[Any]] = {}  # running async jobs' tasks
        self.keeps_results = True  # preserve_finished_jobs: false deletes jobs, results with them

    # -- job threads ------------------------------------------------------------------------

    def cancel_requested(self, job_id: int) -> bool:
        return job_id in self.cancelled

    def submit(self, template: str, params: dict[str, Any]) -> None:
        """Queue a write; it is done before the job's ending is recorded."""
        self._requests.put(_Request(template, params, wait=False))
        self._wake.set()

    def call(self, template: str, params: dict[str, Any]) -> list[tuple[Any, ...]] | None:
        """Run a statement through the main loop and wait for its rows (``None``: it could not
        be run within :data:`CALL_TIMEOUT`, or failed; the main loop logged why)."""
        request = _Request(template, params, wait=True)
        self._requests.put(request)
        self._wake.set()
        assert request.done is not None
        if not request.done.wait(CALL_TIMEOUT):
            log.warning("job control: no answer from the worker's main loop in %ss", CALL_TIMEOUT)
        if isinstance(request.error, psycopg.DataError | psycopg.ProgrammingError):
            # The write itself is wrong (a NUL in a cursor, ...): every try would fail the same
            # way, so it is the job's error, judged by its rules — not an interruption.
            raise JobError(f"job control could not write: {request.error}") from request.error
        return request.rows

    # -- the main loop ------------------------------------------------------------------------

    def pending(self) -> bool:
        return not self._requests.empty()

    def serve(self, execute: Execute, process_id: int | None) -> None:
        """Run every queued statement (main loop only)."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                request.rows = execute(
                    request.template, {**request.params, "process_id": process_id}
                )
            except Exception as exc:  # a lock, the connection, or the data: the job is told
                request.error = exc
                log.warning(
                    "job control: a write for job %s failed: %s", request.params.get("id"), exc
                )
            finally:
                if request.done is not None:
                    request.done.set()

    def cancel(self, job_id: int, loop: asyncio.AbstractEventLoop | None) -> None:
        """A running job's cancel request arrived: flag it, and cancel an async job's task."""
        self.cancelled.add(job_id)
        task = self.tasks.get(job_id)
        if task is not None and loop is not None:
            loop.call_soon_threadsafe(task.cancel)
