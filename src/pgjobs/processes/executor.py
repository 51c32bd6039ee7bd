"""Running one claimed job: resolve its class, decode its arguments, perform it, judge its error.

Anything that goes wrong — an unknown class, undecodable arguments, an exception in ``perform``
— becomes the job's :class:`Outcome`, never a worker crash.  An error is judged here, in the job's
thread, by the job's rules (:mod:`pgjobs.jobs.rules`: ``rescue_from``, ``discard_on``, ``retry_on``,
``after_discard``), so the worker's main thread only records the outcome.  An unknown class fails
the job with :class:`~pgjobs.errors.UnknownJobError` (there are no rules to ask); arguments that
cannot be decoded raise :class:`~pgjobs.errors.DeserializationError`, which the job class's
rules may name (``discard_on = [pgjobs.DeserializationError]``), else the job fails.

Async jobs run on the worker's event loop thread; the calling worker thread waits for them, so
the ``threads`` setting bounds sync and async jobs alike.  A job's ``timeout`` is enforced on the
loop by cancellation (``asyncio.timeout``); for a sync job the worker's main loop injects
:class:`TimeoutInterrupt` into the job's thread (see :mod:`pgjobs.processes.worker`).

With a tracing hook installed (:mod:`pgjobs.observability.tracing`), all of it — perform and the
judging of its error — runs inside the hook's ``process``, given the trace context stored with
the job's arguments (parsed once, for both); without one, that costs one ``is None`` check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pgjobs import events, hooks
from pgjobs.errors import JobCancelled, JobTimeout, SerializationError
from pgjobs.jobs import control, rules
from pgjobs.jobs.base import Job, resolve
from pgjobs.observability import logging_context, tracing
from pgjobs.serialization import deserialize_arguments, dumps_value
from pgjobs.store.control import RESULT_ERROR

if TYPE_CHECKING:
    from pgjobs.processes.jobcontrol import Control

FINISHED: Literal["finished"] = "finished"
#: How an execution ended: as its rules judged it, or by job control (cancelled, snoozed, or
#: interrupted at a checkpoint because the worker is stopping); or it never started (a worker
#: that could not be sure it was alive, see Process.safe_until).
Kind = rules.Kind | Literal["cancel", "snooze", "interrupt", "unstarted"]
_active = events.active  # a dict mutated in place: ``name in _active`` is the cost of an event


# Claimed and Outcome are made once per job: plain slotted dataclasses, compared by identity and
# never changed once made.  (frozen=True would make each ~1 µs slower to create — its __init__
# sets every field through object.__setattr__ — about a tenth of a worker's CPU per no-op job.)
@dataclass(slots=True, eq=False)
class Claimed:
    """A job as the claim statement returns it."""

    id: int
    job_id: UUID
    class_name: str
    arguments: Any
    queue_name: str
    priority: int
    executions: int
    created_at: datetime
    scheduled_at: datetime | None
    concurrency_key: str | None = None
    unique_key: str | None = None
    interruptions: int = 0  # > 0: a process running it died; it runs alone (see the worker)
    cancel_requested: bool = False  # asked to stop before it was claimed: not run, cancelled
    rate_key: str | None = None  # rate-limited: runs only with a start token (store/rates.py)
    batch_id: int | None = None  # its batch or workflow (pgjobs.workflows): finished keyed

    @property
    def keyed(self) -> bool:
        """Finishing it gives back a concurrency slot or a unique key, or must keep a period's
        key: it is finished by the statements of :mod:`pgjobs.store.finished` that do that, not
        by the claim statement.  (An until-executing key was released at claim.)"""
        return (
            self.concurrency_key is not None
            or (self.unique_key is not None and not self.unique_key.startswith("x|"))
            or self.batch_id is not None  # kept when finished (its end is counted by a trigger)
        )


@dataclass(slots=True, eq=False)
class Outcome:
    """How an execution ended: ``kind`` says what the worker records."""

    claimed: Claimed
    error: BaseException | None = None
    backtrace: str = ""
    duration: float = 0.0
    kind: Kind = FINISHED
    wait: float | None = None  # retry, snooze: seconds until the job is ready again (0: at once)
    queue: str | None = None  # retry: on this queue instead
    priority: int | None = None  # retry: with this priority instead
    started_at: float = 0.0  # time.time() when it started (0: unknown)
    result: str | None = None  # finished: the return value as JSON text (None: nothing stored)


class TimeoutInterrupt(BaseException):
    """Injected into a sync job's thread when its timeout passes; becomes a JobTimeout.

    A ``BaseException`` so that a job's own ``except Exception:`` does not swallow it.
    """


#: ``watch(claimed, timeout, is_async)``: the worker's hook, called once a job with a timeout
#: starts (after its class is resolved), so the main loop can watch its deadline.
Watch = Callable[[Claimed, float, bool], None]


class EventLoopThread:
    """One asyncio loop in a daemon thread, started on first use, for async jobs."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._run, args=(loop,), name="pgjobs-asyncio", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop if it was started (async jobs ran), without starting it."""
        return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)


def timed_out(claimed: Claimed, timeout: float | None) -> JobTimeout:
    limit = f" of {timeout:g}s" if timeout is not None else ""
    return JobTimeout(f"{claimed.class_name} ran longer than its timeout{limit}")


def perform(
    claimed: Claimed,
    loop: EventLoopThread,
    watch: Watch | None = None,
    default_timeout: float | None = None,
    runtime: Control | None = None,
) -> Outcome:
    """Run ``claimed`` to its outcome; inside the integrations' job wrappers
    (:func:`pgjobs.hooks.wrap_jobs`) and the tracing hook's ``process`` when they are set.
    ``runtime``: the worker's job control (progress, checkpoints, cancel requests)."""
    if tracing.tracer is None and not hooks.job_wrappers:
        return _perform(claimed, claimed.arguments, loop, watch, default_timeout, runtime)
    wrappers = ExitStack()
    try:
        for wrap in hooks.job_wrappers:
            wrappers.enter_context(wrap(claimed))
    except Exception as exc:  # the integration could not set the job up: the job fails
        _leave(wrappers)
        return _failed(claimed, exc, time.perf_counter())
    try:
        return _traced_perform(claimed, loop, watch, default_timeout, runtime)
    finally:
        _leave(wrappers)


def _leave(wrappers: ExitStack) -> None:
    try:
        wrappers.close()
    except Exception as exc:  # the outcome stands
        events.thread_error(exc, "a job wrapper (pgjobs.hooks.wrap_jobs)")


def _traced_perform(
    claimed: Claimed,
    loop: EventLoopThread,
    watch: Watch | None,
    default_timeout: float | None,
    runtime: Control | None,
) -> Outcome:
    hook = tracing.tracer
    if hook is None:
        return _perform(claimed, claimed.arguments, loop, watch, default_timeout, runtime)
    arguments, carrier = _traced(claimed.arguments)
    with hook.process(claimed, carrier) as processed:
        outcome = _perform(claimed, arguments, loop, watch, default_timeout, runtime)
        processed(outcome)
    return outcome


def _traced(arguments: Any) -> tuple[Any, tracing.Carrier | None]:
    """The stored arguments parsed once, for the job and for the trace context stored with them
    (``None`` if there is none).  Text that is no JSON object is left for the job to report."""
    data = arguments
    if isinstance(arguments, str):
        try:
            data = json.loads(arguments)
        except (ValueError, RecursionError):  # deserialize_arguments fails the job with it
            return arguments, None
    if not isinstance(data, dict):
        return arguments, None
    trace = data.get("trace")
    return data, trace if isinstance(trace, dict) else None


def _perform(
    claimed: Claimed,
    arguments: Any,
    loop: EventLoopThread,
    watch: Watch | None,
    default_timeout: float | None,
    runtime: Control | None = None,
) -> Outcome:
    started = time.perf_counter()
    timeout: float | None = None
    try:
        try:
            job_class = resolve(claimed.class_name)
        except Exception as exc:  # UnknownJobError, or an import that failed
            return _failed(claimed, exc, started)
        try:
            args, kwargs = deserialize_arguments(arguments)
        except Exception as exc:  # DeserializationError
            job = _restore(job_class, claimed, (), {})
            logging_context.enter(claimed, job)
            return _judged(claimed, job, exc, started, loop)
        job = _restore(job_class, claimed, args, kwargs)
        if runtime is not None:
            job._runtime, job._internal_id = runtime, claimed.id
            if claimed.batch_id is not None:
                job._batch = claimed.batch_id
        logging_context.enter(claimed, job)  # log records carry its identity until leave()
        timeout = job_class._timeout_seconds or default_timeout
        if "perform_start" in _active:
            events.emit("perform_start", **_fields(claimed))
        is_async = job_class.is_async()
        if timeout is not None and watch is not None:
            watch(claimed, timeout, is_async)
        try:
            if is_async:
                value = asyncio.run_coroutine_threadsafe(
                    _bounded(job, claimed, timeout, runtime), loop.loop
                ).result()
            else:
                value = job.perform_with_callbacks()
            if "_control_state" in job.__dict__:
                control.flush_progress(job)  # the last report, written before the ending
            keep = value is not None and (
                runtime is None or runtime.keeps_results or claimed.batch_id is not None
            )
            stored = _stored(claimed, job_class, value) if keep else None
        except TimeoutInterrupt:
            error: BaseException = timed_out(claimed, timeout)
        except (control.Snooze, control.JobInterrupted) as exc:
            return _controlled(claimed, job, exc, started, loop)
        except JobCancelled as exc:
            if exc.job_id not in (None, claimed.job_id):  # another job's (its result()): an error
                error = exc
            else:
                return _controlled(claimed, job, exc, started, loop)
        except concurrent.futures.CancelledError as exc:
            if runtime is not None and claimed.id in runtime.cancelled:
                return _controlled(claimed, job, JobCancelled(str(exc) or None), started, loop)
            error = exc
        except BaseException as exc:
            error = exc
        else:
            if "perform" in _active:
                _performed(claimed, started, FINISHED, None)
            duration = time.perf_counter() - started
            return Outcome(
                claimed, None, "", duration, started_at=time.time() - duration, result=stored
            )
        if "_control_state" in job.__dict__:
            control.flush_progress(job)  # its last report, whatever the error's fate
        return _judged(claimed, job, error, started, loop)
    except TimeoutInterrupt:  # landed outside perform: in an error handler, or in pgjobs
        return _failed(claimed, timed_out(claimed, timeout), started)
    except BaseException as exc:  # SystemExit from a handler, …: still only this job's failure
        return _failed(claimed, exc, started)
    finally:
        logging_context.leave()


def _restore(
    job_class: type[Job], claimed: Claimed, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Job:
    return job_class.restore(
        job_id=claimed.job_id,
        args=args,
        kwargs=kwargs,
        queue_name=claimed.queue_name,
        priority=claimed.priority,
        executions=claimed.executions + 1,
        enqueued_at=claimed.created_at,
        scheduled_at=claimed.scheduled_at,
    )


async def _bounded(
    job: Job, claimed: Claimed, timeout: float | None, runtime: Control | None = None
) -> Any:
    """Perform an async job, cancelled once ``timeout`` passes (then a JobTimeout)."""
    # The task copied the calling thread's context already; set it in the task all the same, so
    # that it does not depend on how the loop schedules the coroutine.  It dies with the task.
    logging_context.enter(claimed, job)
    if runtime is not None:  # a cancel request cancels this task (pgjobs.processes.jobcontrol)
        task = asyncio.current_task()
        assert task is not None
        runtime.tasks[claimed.id] = task
        try:
            if claimed.id in runtime.cancelled:
                task.cancel()  # asked before it started: cancelled at its first await
            return await _timed(job, claimed, timeout)
        finally:
            runtime.tasks.pop(claimed.id, None)
    return await _timed(job, claimed, timeout)


async def _timed(job: Job, claimed: Claimed, timeout: float | None) -> Any:
    if timeout is None:
        return await job.perform_with_callbacks_async()
    try:
        async with asyncio.timeout(timeout) as scope:
            return await job.perform_with_callbacks_async()
    except TimeoutError as exc:
        if scope.expired():  # its cause's context shows where the job was cancelled
            raise timed_out(claimed, timeout) from exc
        raise


def _stored(claimed: Claimed, job_class: type[Job], value: Any) -> str | None:
    """A return value as stored: JSON text, or None when the class does not store results.

    A value that cannot be stored (not serializable, or over ``max_result_bytes``) does not fail
    the job — its work is done, and retrying it would do it again: the job finishes with the
    error stored in place of its result (``result()`` raises it as :class:`ResultError`), and a
    ``result_error`` event (a warning) says why."""
    if not job_class.store_result:
        return None
    what = f"the result of {job_class.job_name}"
    try:
        text = dumps_value(value, context=what)
    except SerializationError as exc:
        return _result_error(claimed, f"{exc} (or set store_result = False on the job class)")
    size = len(text.encode())
    if size > job_class.max_result_bytes:
        return _result_error(
            claimed,
            f"{what} is {size:,} bytes of JSON, over its max_result_bytes of "
            f"{job_class.max_result_bytes:,}: return less (store large data elsewhere and return "
            "its key), raise max_result_bytes, or set store_result = False",
        )
    return text


def _result_error(claimed: Claimed, message: str) -> str:
    if "result_error" in _active:
        events.emit("result_error", **_fields(claimed), error=message)
    return json.dumps({RESULT_ERROR: message})


def _controlled(
    claimed: Claimed, job: Job, signal: BaseException, started: float, loop: EventLoopThread
) -> Outcome:
    """An ending by job control: cancelled (after_cancel runs), snoozed, or interrupted."""
    if "_control_state" in job.__dict__:
        control.flush_progress(job)
    duration = time.perf_counter() - started
    kind: Kind
    wait = None
    if isinstance(signal, control.Snooze):
        kind, wait = "snooze", signal.seconds
    elif isinstance(signal, JobCancelled):
        kind = "cancel"
        _after_cancel(job, loop)
    else:
        kind = "interrupt"
    if "perform" in _active:
        _performed(claimed, started, kind, None)
    return Outcome(claimed, signal, "", duration, kind, wait, started_at=time.time() - duration)


def _after_cancel(job: Job, loop: EventLoopThread) -> None:
    try:
        if inspect.iscoroutinefunction(job.after_cancel):
            asyncio.run_coroutine_threadsafe(job.after_cancel(), loop.loop).result()
        else:
            job.after_cancel()
    except Exception as exc:  # reported; the job is recorded as cancelled all the same
        events.thread_error(exc, f"{type(job).job_name}.after_cancel")


def _judged(
    claimed: Claimed, job: Job, error: BaseException, started: float, loop: EventLoopThread
) -> Outcome:
    """Ask the job's rules what ``error`` means; the handlers run in the job's thread/loop."""
    if job.is_async():
        decision = asyncio.run_coroutine_threadsafe(rules.decide_async(job, error), loop.loop)
        judged = decision.result()
    else:
        judged = rules.decide(job, error)
    duration = time.perf_counter() - started
    if "perform" in _active:
        _performed(claimed, started, "rescued" if judged.rescued else judged.kind, judged.error)
    if judged.kind == FINISHED:
        return Outcome(claimed, None, "", duration, started_at=time.time() - duration)
    return Outcome(
        claimed,
        judged.error,
        judged.backtrace,
        duration,
        judged.kind,
        judged.wait,
        judged.queue,
        judged.priority,
        time.time() - duration,
    )


def _failed(claimed: Claimed, error: BaseException, started: float) -> Outcome:
    backtrace = "".join(traceback.format_exception(error))
    duration = time.perf_counter() - started
    if "perform" in _active:
        _performed(claimed, started, "fail", error)
    return Outcome(claimed, error, backtrace, duration, "fail", started_at=time.time() - duration)


def _fields(claimed: Claimed) -> dict[str, Any]:
    return events.job_fields(
        claimed.job_id, claimed.class_name, claimed.queue_name, claimed.executions + 1
    )


def _performed(claimed: Claimed, started: float, outcome: str, error: BaseException | None) -> None:
    duration = time.perf_counter() - started
    events.emit(
        "perform",
        **_fields(claimed),
        duration_ms=round(duration * 1000, 3),
        outcome=outcome,
        error_class=None if error is None else error_name(error),
        wait_ms=_wait_ms(claimed, time.time() - duration),
    )


def _wait_ms(claimed: Claimed, started_at: float) -> float | None:
    """A first attempt's wait: from when it was due (enqueued, or its scheduled time) to its
    start, in ms.  ``None`` for a later attempt: its due time (the end of a retry's wait) is not
    in the job row, and a retry's wait is the back-off its rules chose."""
    if claimed.executions or claimed.interruptions:
        return None
    due = claimed.scheduled_at or claimed.created_at
    return round(max(0.0, started_at - due.timestamp()) * 1000, 3)


def error_name(error: BaseException) -> str:
    """How an error class is recorded: ``module.QualName``."""
    return f"{type(error).__module__}.{type(error).__qualname__}"
