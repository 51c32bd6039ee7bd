"""Job control inside ``perform``: progress, cancellation points, resumable steps and snoozing.

What a running job writes (progress, checkpoints) goes through its worker's main loop, on the
worker's own connection, guarded by the job's claimed row (:mod:`pgjobs.store.control`): a job
thread never opens a connection of its own.  The worker records a job's ending only after the
writes the job made before it, so a checkpoint written on the way out of an interrupted job is
in the database before the job is given back.

Guarantees of resumable steps (:meth:`pgjobs.Job.step`):

- A step's completion is written before the next step starts (the job thread waits for it), so a
  completed step never runs again, whatever happens to the process afterwards.  If it cannot be
  written (the database is unreachable for :data:`~pgjobs.processes.jobcontrol.CALL_TIMEOUT`, or
  the worker no longer holds the job: it was recovered elsewhere), the job is interrupted and
  given back instead of going on, and it resumes from its last written checkpoint.
- A cursor passed to :meth:`Step.advance` is written at most about once a second (and at once on
  :meth:`Step.checkpoint`, at the step's end, and when the worker stops): after a crash the step
  resumes from the last cursor written; positions after it run again.
- When the worker is stopping (SIGTERM), a stepped job is interrupted at its next checkpoint
  (an ``advance``, or the start of a step): its position is written and the job is given back to
  ready without counting an attempt, instead of being waited for until ``shutdown_timeout``.

Under ``perform_now`` (no worker) everything runs inline: steps run in order, progress and
checkpoints are kept on the instance only.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from pgjobs.errors import JobCancelled
from pgjobs.serialization import dumps_value, loads_value
from pgjobs.store import control as store

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job

THROTTLE = 1.0  # seconds: progress and cursors are written at most this often per job


class Snooze(Exception):
    """Raise it in ``perform`` to put the job back as scheduled ``delay`` from now, without
    counting an attempt: ``raise pgjobs.Snooze(timedelta(seconds=30))`` (or ``self.snooze(30)``).
    Under ``perform_now`` it reaches the caller."""

    def __init__(self, delay: float | timedelta = 0.0) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise TypeError(f"Snooze: delay must be seconds >= 0 or a timedelta, got {delay!r}")
        self.seconds = float(seconds)
        super().__init__(f"snoozed for {self.seconds:g}s")


class JobInterrupted(BaseException):
    """Raised at a stepped job's checkpoint when its worker is stopping: the job is given back
    with its position.  A ``BaseException``, so a job's ``except Exception:`` does not catch it."""


class Runtime(Protocol):
    """The worker's side (:class:`pgjobs.processes.jobcontrol.Control`)."""

    stopping: bool

    def cancel_requested(self, job_id: int) -> bool: ...

    def submit(self, template: str, params: dict[str, Any]) -> None: ...

    def call(self, template: str, params: dict[str, Any]) -> list[tuple[Any, ...]] | None: ...


class _State:
    """A job's control state, created on first use (jobs that use none of it pay nothing)."""

    __slots__ = ("completed", "current", "cursor", "loaded", "progress", "progress_at", "sent")

    def __init__(self) -> None:
        self.loaded = False
        self.completed: list[str] = []
        self.current: str | None = None
        self.cursor: Any = None
        self.progress: dict[str, Any] | None = None
        self.progress_at = float("-inf")
        self.sent = True  # the last progress reported has been sent


def _state(job: Job) -> _State:
    state = job.__dict__.get("_control_state")
    if state is None:
        state = job.__dict__["_control_state"] = _State()
    return state


def _runtime(job: Job) -> tuple[Runtime, int] | None:
    runtime = job._runtime
    return None if runtime is None else (runtime, job._internal_id)


# -- cancellation ----------------------------------------------------------------------------


def cancel_requested(job: Job) -> bool:
    running = _runtime(job)
    return running is not None and running[0].cancel_requested(running[1])


def check_cancelled(job: Job) -> None:
    if cancel_requested(job):
        raise JobCancelled(f"job {job.job_id} was cancelled", job_id=job.job_id)


# -- progress ----------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def report_progress(job: Job, done: float, total: float | None, message: str | None) -> None:
    if not _finite(done):
        raise TypeError(f"progress(): done must be a finite number, got {done!r}")
    if total is not None and not _finite(total):
        raise TypeError(f"progress(): total must be a finite number or None, got {total!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress(): message must be a string, got {message!r}")
    state = _state(job)
    state.progress = {
        "done": done,
        "total": total,
        "message": message,
        "at": datetime.now(UTC).isoformat(),
    }
    state.sent = False
    if time.monotonic() - state.progress_at >= THROTTLE:
        flush_progress(job)


def flush_progress(job: Job) -> None:
    """Send the last progress report if it has not been (the executor calls it at the end)."""
    state = job.__dict__.get("_control_state")
    if state is None or state.sent:
        return
    state.sent, state.progress_at = True, time.monotonic()
    running = _runtime(job)
    if running is not None:
        runtime, internal = running
        payload = json.dumps(state.progress)  # numbers and strings: plain JSON
        runtime.submit(store.PROGRESS, {"id": internal, "progress": payload})


def progress_of(job: Job) -> dict[str, Any] | None:
    state = job.__dict__.get("_control_state")
    return None if state is None else state.progress


# -- resumable steps ---------------------------------------------------------------------------


class Step:
    """One step of a resumable job, handed to the step's function: ``cursor`` is where it
    resumes (``None`` on its first run), :meth:`advance` records progress through it."""

    def __init__(self, job: Job, name: str, cursor: Any) -> None:
        self.job = job
        self.name = name
        self.cursor = cursor
        self.resumed = cursor is not None
        self._written_at = time.monotonic()

    def advance(self, cursor: Any) -> None:
        """The step got this far: its new cursor, written at most about once a second.  Also a
        cancellation point, and where the job is interrupted when its worker stops."""
        self.cursor = cursor
        _state(self.job).cursor = cursor
        interrupt = _must_stop(self.job)
        if interrupt or time.monotonic() - self._written_at >= THROTTLE:
            self._write(wait=False)
        if interrupt:
            _stop(self.job)

    def checkpoint(self) -> None:
        """Write the cursor now (a sync job waits for the write, and is interrupted — given back
        to resume from its last checkpoint — if it could not be written)."""
        self._write(wait=not self.job.is_async())

    def _write(self, *, wait: bool) -> None:
        self._written_at = time.monotonic()
        _write_checkpoint(self.job, wait=wait)

    def __repr__(self) -> str:
        return f"<Step {self.name!r} cursor={self.cursor!r}>"


def _must_stop(job: Job) -> bool:
    running = _runtime(job)
    if running is None:
        return False
    runtime, internal = running
    return runtime.stopping or runtime.cancel_requested(internal)


def _stop(job: Job) -> None:
    check_cancelled(job)
    raise JobInterrupted(f"job {job.job_id} interrupted: its worker is stopping")


def _load(job: Job) -> _State:
    state = _state(job)
    if state.loaded:
        return state
    state.loaded = True
    running = _runtime(job)
    if running is None:
        return state
    runtime, internal = running
    rows = runtime.call(store.LOAD_CHECKPOINT, {"id": internal})
    if rows is None:  # not read (a lock, an outage): starting over would redo completed steps
        state.loaded = False
        raise JobInterrupted(
            f"job {job.job_id}: its checkpoint could not be read; it resumes when it can be"
        )
    if rows and rows[0][0] is not None:
        saved = loads_value(rows[0][0])
        if isinstance(saved, dict):
            state.completed = list(saved.get("completed", []))
            state.current = saved.get("step")
            state.cursor = saved.get("cursor")
    return state


def _write_checkpoint(job: Job, *, wait: bool) -> None:
    """Write the job's checkpoint; with ``wait``, raise :class:`JobInterrupted` unless it was
    written: the job no longer holds its claim (it was recovered elsewhere), or the write could
    not be done — going on could run a step twice, so the job is given back and resumes from
    its last written checkpoint."""
    running = _runtime(job)
    if running is None:
        return
    runtime, internal = running
    state = _state(job)
    data = {"completed": state.completed, "step": state.current, "cursor": state.cursor}
    params = {"id": internal, "checkpoint": dumps_value(data, context=f"step {state.current!r}")}
    if not wait:
        runtime.submit(store.CHECKPOINT, params)
    elif not runtime.call(store.CHECKPOINT, params):
        raise JobInterrupted(
            f"job {job.job_id}: its checkpoint could not be written (the worker lost the job or "
            "the database); it resumes from its last checkpoint"
        )


def _begin(job: Job, name: str) -> Step | None:
    """The step to run, or None when it completed in an earlier run."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"step(): a step needs a non-empty name, got {name!r}")
    state = _load(job)
    if name in state.completed:
        return None
    if _must_stop(job):
        _stop(job)
    cursor = state.cursor if state.current == name else None
    state.current, state.cursor = name, cursor
    return Step(job, name, cursor)


def _complete(job: Job, name: str) -> None:
    state = _state(job)
    state.completed.append(name)
    state.current, state.cursor = None, None


def run_step(
    job: Job, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    step = _begin(job, name)
    if step is None:
        return None
    result = fn(step, *args, **kwargs)
    _complete(job, name)
    _write_checkpoint(job, wait=True)  # done before the next step starts
    return result


async def run_step_async(
    job: Job,
    name: str,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if job._runtime is not None and not _state(job).loaded:
        await asyncio.to_thread(_load, job)  # the read waits off the event loop
    step = _begin(job, name)
    if step is None:
        return None
    result = await fn(step, *args, **kwargs)
    _complete(job, name)
    if job._runtime is not None:  # the write waits off the event loop
        await asyncio.to_thread(_write_checkpoint, job, wait=True)
    return result
