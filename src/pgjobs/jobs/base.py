"""Defining jobs: the :class:`Job` base class, the :func:`job` decorator and the job registry.

A job is stored by a stable name — ``module:QualName`` by default, or the ``job_name`` class
attribute (an alias that survives moving the class) — and resolved by that name in any worker.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar, overload

from pgjobs.enqueue.core import (
    enqueue,
    enqueue_async,
    perform_all_later_args,
    perform_all_later_args_async,
)
from pgjobs.enqueue.handle import EnqueuedJob
from pgjobs.enqueue.ids import new_job_id
from pgjobs.errors import ConfigurationError, UnknownJobError
from pgjobs.jobs import callbacks, control, limits, rules
from pgjobs.observability import logging_context

if TYPE_CHECKING:
    from pgjobs.enqueue.core import Connectionish

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
_registry: dict[str, type[Job]] = {}


@dataclass(frozen=True)
class Options:
    """Options given with ``Job.set(...)``; ``None`` means "the job's default"."""

    wait: float | timedelta | None = None
    wait_until: datetime | None = None
    queue: str | None = None
    priority: int | None = None
    connection: Connectionish | None = None

    def merged(self, other: Options) -> Options:
        values = {k: v for k, v in vars(other).items() if v is not None}
        return Options(**{**vars(self), **values})


#: The options of a job enqueued without any (shared: Options is immutable, and a worker restores
#: a job per execution).
NO_OPTIONS = Options()


class Job:
    """Base class for jobs.  Subclass it and implement ``perform`` (``def`` or ``async def``).

    Class attributes: ``queue_as`` (a queue name, or a method computing it from ``self.args``),
    ``priority`` (lower runs first, default 0), ``job_name`` (a stable alias), ``timeout``
    (seconds or a timedelta; a worker fails the job with :class:`pgjobs.JobTimeout` past it),
    ``retry_on`` and ``discard_on`` (lists of :func:`pgjobs.retry_on` / :func:`pgjobs.discard_on`
    rules, inherited; see ``docs/errors.md``), ``limits_concurrency`` (:func:`pgjobs.limit`),
    ``unique`` (:func:`pgjobs.unique`; see ``docs/concurrency.md``), ``ordered``
    (:func:`pgjobs.ordered`) and ``rate_limit`` (:func:`pgjobs.rate_limit`; see
    ``docs/flow-control.md``).
    Inside ``perform``: ``self.job_id``, ``self.executions``, ``self.queue_name``,
    ``self.priority``, ``self.enqueued_at``, ``self.scheduled_at``, ``self.args``, ``self.kwargs``,
    and job control (``docs/jobs.md``): :meth:`progress`, :attr:`cancel_requested`,
    :meth:`check_cancelled`, :meth:`step` and :meth:`snooze`.

    What ``perform`` returns is stored (``store_result = False`` opts out; ``None`` stores
    nothing; at most ``max_result_bytes`` of JSON, else the job finishes with the error in place
    of its result: ``result()`` raises :class:`pgjobs.errors.ResultError`) and read with
    ``perform_later(...).result()``.
    """

    queue_as: ClassVar[str | Callable[[Any], str]] = DEFAULT_QUEUE
    priority: int = 0
    job_name: ClassVar[str] = ""
    timeout: ClassVar[float | timedelta | None] = None
    retry_on: ClassVar[Sequence[Any]] = ()
    discard_on: ClassVar[Sequence[Any]] = ()
    limits_concurrency: ClassVar[limits.ConcurrencyLimit | None] = None
    unique: ClassVar[limits.Uniqueness | None] = None
    ordered: ClassVar[limits.Ordered | None] = None
    rate_limit: ClassVar[limits.RateLimit | None] = None
    _callbacks: ClassVar[dict[tuple[callbacks.Kind, callbacks.Phase], tuple[str, ...]]] = {}
    _rules: ClassVar[tuple[rules.Rule, ...]] = ()
    _retry_request: rules.RetryRequest | None = None
    # Set by a tracing hook around an enqueue (pgjobs.observability.tracing): the trace context
    # stored with the job.  The class default keeps it off the instances when tracing is off.
    _trace_carrier: Mapping[str, str] | None = None
    _timeout_seconds: ClassVar[float | None] = None
    store_result: ClassVar[bool] = True
    max_result_bytes: ClassVar[int] = 1024 * 1024
    # Set by the worker running the job (pgjobs.processes.jobcontrol): None under perform_now.
    _runtime: control.Runtime | None = None
    _internal_id: int = 0
    _batch: int | None = None  # set by the worker for a job of a batch or workflow (its row id)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "job_name" not in vars(cls) or not vars(cls)["job_name"]:
            cls.job_name = f"{cls.__module__}:{cls.__qualname__}"
        cls._callbacks = callbacks.collect(cls)
        cls._rules = rules.collect(cls)
        cls.timeout = cls._timeout_seconds = _timeout(cls.timeout, cls.job_name)
        limits.check_declarations(cls)
        if cls.is_async():
            for name in cls._callbacks.get(("around", "perform"), ()):
                if not inspect.iscoroutinefunction(getattr(cls, name)):
                    raise ConfigurationError(
                        f"{cls.job_name}: around_perform callback {name!r} must be `async def` "
                        "because perform is async (it has to await proceed())"
                    )
        register(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        self.args: tuple[Any, ...] = args
        self.kwargs: dict[str, Any] = kwargs
        self.job_id: uuid.UUID = new_job_id()
        self.executions: int = 0
        self.priority = cls.priority
        queue = cls.queue_as  # a plain name needs no call: one job of a bulk enqueue is ~1 µs
        self.queue_name: str = queue if type(queue) is str and queue else self._queue_from_class()
        self.enqueued_at: datetime | None = None
        self.scheduled_at: datetime | None = None
        self.options = NO_OPTIONS

    def _queue_from_class(self) -> str:
        queue = type(self).queue_as
        if callable(queue):
            queue = queue(self)
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(
                f"{type(self).job_name}: queue_as must be a non-empty string, got {queue!r}"
            )
        return queue

    def perform(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must implement perform()")

    def after_discard(self, error: BaseException) -> Any:
        """Hook: the job ended for good with ``error`` (discarded, retries exhausted, or failed).

        Override it for a dead-letter step (record, alert).  May be ``async def`` on an async
        job.  What it raises fails the job with that error instead.
        """
        return None

    def retry_job(
        self,
        *,
        wait: float | timedelta | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> None:
        """From a ``@rescue_from`` handler (or ``on_exhausted``): retry this job ``wait`` later.

        The retry is recorded when the handler returns, like a ``retry_on`` retry (same job,
        attempt counted, error kept in its history).  Under ``perform_now`` nothing is
        rescheduled: the error is raised to the caller.
        """
        self._retry_request = rules.RetryRequest(wait, queue, priority)

    def after_cancel(self) -> Any:
        """Hook: the job was cancelled while it ran (it raised :class:`pgjobs.JobCancelled`, or
        its task was cancelled).  Override it to clean up; may be ``async def`` on an async job.
        Its errors are reported, and the job is recorded as cancelled all the same."""
        return None

    # -- job control (pgjobs.jobs.control) ---------------------------------------------------------

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress: visible through ``pgjobs.get_job``, ``pgjobs jobs show`` and the
        dashboard.  Written at most about once a second; the last report is always written."""
        control.report_progress(self, done, total, message)

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked to cancel this job while it runs (``pgjobs.cancel``)."""
        return control.cancel_requested(self)

    def check_cancelled(self) -> None:
        """A cancellation point: raises :class:`pgjobs.JobCancelled` if a cancel was asked for;
        the job is then recorded as cancelled (``after_cancel`` runs first)."""
        control.check_cancelled(self)

    def step(
        self, name: str, fn: Callable[..., Any] | None = None, /, *args: Any, **kwargs: Any
    ) -> Any:
        """Run ``fn(step, *args, **kwargs)`` as the resumable step ``name``, unless it completed
        in an earlier run of this job; returns what ``fn`` returns (``None`` when skipped).

        As a decorator, the step runs at once: ``@self.step("fetch")`` over
        ``def fetch(step): ...``.  ``step.cursor`` is where the step resumes, ``step.advance(c)``
        checkpoints it.  In an async job, ``fn`` is ``async def`` and ``step`` is awaited.
        """
        if fn is None:
            if self.is_async():
                raise TypeError(
                    f"{type(self).job_name}: an async job awaits its steps: "
                    f"`await self.step({name!r}, fn)`, not the decorator form"
                )
            return _StepDecorator(self, name, args, kwargs)
        if self.is_async():
            return control.run_step_async(self, name, fn, args, kwargs)
        return control.run_step(self, name, fn, args, kwargs)

    def add_to_batch(self, *jobs: Job, connection: Any = None) -> list[EnqueuedJob]:
        """Add jobs to the batch (or workflow) this job belongs to, while it runs: fan-out from
        inside (docs/workflows.md).  They count before this job ends, so the batch cannot
        finish in between; written in one transaction (``connection``'s, if given)."""
        if self._batch is None:
            raise ConfigurationError(
                f"{type(self).job_name}: add_to_batch() needs a job of a batch or workflow, "
                "run by a worker"
            )
        from pgjobs.workflows.write import add_to_batch

        return add_to_batch(self._batch, jobs, connection)

    def dependencies(self) -> list[Any]:
        """This workflow job's dependencies, in ``after=`` order: each one's ``job_id``,
        ``state`` and ``result`` (:class:`pgjobs.Dependency`)."""
        from pgjobs.workflows.info import dependencies

        return list(dependencies(self.job_id))

    def dependency_results(self) -> list[Any]:
        """What this workflow job's dependencies returned, in ``after=`` order (``None`` for
        one that stored nothing, or did not succeed: see ``on_failure="run"``)."""
        return [dependency.result for dependency in self.dependencies()]

    def snooze(self, delay: float | timedelta) -> None:
        """Put the job back as scheduled ``delay`` from now, without counting an attempt
        (raises :class:`pgjobs.Snooze`; code after it does not run)."""
        raise control.Snooze(delay)

    @classmethod
    def is_async(cls) -> bool:
        return inspect.iscoroutinefunction(cls.perform)

    def __repr__(self) -> str:
        return f"<{type(self).job_name} {self.job_id} args={self.args!r} kwargs={self.kwargs!r}>"

    # -- enqueueing -------------------------------------------------------------------------

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Job:
        """The job with these arguments, not enqueued: for ``perform_all_later``, batches and
        workflows (the same as ``cls(*args, **kwargs)``)."""
        return cls(*args, **kwargs)

    @classmethod
    def set(
        cls,
        *,
        wait: float | timedelta | None = None,
        wait_until: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        connection: Connectionish | None = None,
    ) -> ConfiguredJob:
        """Options for the next enqueue: ``MyJob.set(wait=60).perform_later(...)``."""
        options = Options(wait, wait_until, queue, priority, connection)
        return ConfiguredJob(cls, options)

    @classmethod
    def perform_later(cls, *args: Any, **kwargs: Any) -> EnqueuedJob:
        """Enqueue the job; returns its handle (``.job_id``)."""
        return cls(*args, **kwargs).enqueue()

    @classmethod
    async def perform_later_async(cls, *args: Any, **kwargs: Any) -> EnqueuedJob:
        return await cls(*args, **kwargs).enqueue_async()

    @classmethod
    def perform_now(cls, *args: Any, **kwargs: Any) -> Any:
        """Run the job inline, callbacks included; returns what ``perform`` returns."""
        return cls(*args, **kwargs).perform_inline()

    @classmethod
    def perform_all_later_args(
        cls, rows: Iterable[Sequence[Any]], *, connection: Connectionish | None = None
    ) -> int:
        """Enqueue one job of this class per row, ``perform(*row)``: the fast path for many
        jobs of one class (``docs/jobs.md``).  Returns how many were written, and no handles.

        The jobs share the class's queue and priority (or those of ``set(...)``), are written
        in one transaction (the caller's with ``connection``) by one statement per 10,000, and
        no ``Job`` object is made.  Refused for a class with a concurrency limit, unique key,
        ordered key or rate limit.  Enqueue callbacks are not run (as by ``perform_all_later``).
        """
        return perform_all_later_args(cls, rows, NO_OPTIONS, connection)

    @classmethod
    async def perform_all_later_args_async(
        cls, rows: Iterable[Sequence[Any]], *, connection: Connectionish | None = None
    ) -> int:
        """:meth:`perform_all_later_args` for asyncio."""
        return await perform_all_later_args_async(cls, rows, NO_OPTIONS, connection)

    def with_options(self, options: Options) -> Job:
        self.options = self.options.merged(options)
        if options.queue is not None:
            self.queue_name = options.queue
        if options.priority is not None:
            self.priority = options.priority
        return self

    def enqueue(self, **options: Any) -> EnqueuedJob:
        return enqueue(self.with_options(Options(**options)) if options else self)

    async def enqueue_async(self, **options: Any) -> EnqueuedJob:
        return await enqueue_async(self.with_options(Options(**options)))

    # -- performing --------------------------------------------------------------------------

    def perform_inline(self) -> Any:
        """``perform_now``: ``perform`` with its callbacks and error rules, in this thread (an
        event loop for async jobs).

        ``rescue_from`` handlers and ``discard_on`` apply as in a worker (a discarded or rescued
        job returns ``None``); an error that a worker would retry is raised here, since there is
        nothing to reschedule.
        """
        with logging_context.inline(self):  # its log records carry it, as in a worker
            if self.is_async():
                return asyncio.run(self.perform_inline_async())
            try:
                return self.perform_with_callbacks()
            except Exception as error:
                return _inline_outcome(rules.decide(self, error), error)

    async def perform_inline_async(self) -> Any:
        if not self.is_async():
            return await asyncio.to_thread(self.perform_inline)
        with logging_context.inline(self):
            try:
                return await self.perform_with_callbacks_async()
            except Exception as error:
                return _inline_outcome(await rules.decide_async(self, error), error)

    def perform_with_callbacks(self) -> Any:
        """``perform`` wrapped in its callbacks, errors raised as they are (no rules)."""
        return callbacks.run(self, "perform", lambda: self.perform(*self.args, **self.kwargs))

    async def perform_with_callbacks_async(self) -> Any:
        def body() -> Awaitable[Any]:
            result: Awaitable[Any] = self.perform(*self.args, **self.kwargs)
            return result

        return await callbacks.run_async(self, "perform", body)

    @classmethod
    def restore(
        cls,
        *,
        job_id: uuid.UUID,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        queue_name: str,
        priority: int,
        executions: int,
        enqueued_at: datetime | None,
        scheduled_at: datetime | None,
    ) -> Job:
        """Rebuild a job read from the database (``__init__`` is not called again)."""
        job = cls.__new__(cls)
        job.args, job.kwargs = args, kwargs
        job.job_id, job.queue_name, job.priority = job_id, queue_name, priority
        job.executions, job.enqueued_at, job.scheduled_at = executions, enqueued_at, scheduled_at
        job.options = NO_OPTIONS
        return job


class _StepDecorator:
    """What ``self.step(name)`` returns: a decorator that runs the function it decorates as the
    step.  It is not a context manager — Python cannot skip a ``with`` block's body (PEP 377
    was rejected), so a completed step could not be skipped — and says so when used as one."""

    __slots__ = ("_args", "_job", "_kwargs", "_name")

    def __init__(self, job: Job, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._job, self._name, self._args, self._kwargs = job, name, args, kwargs

    def __call__(self, fn: Callable[..., Any]) -> Any:
        return self._job.step(self._name, fn, *self._args, **self._kwargs)

    def __enter__(self) -> None:
        name = self._name
        raise TypeError(
            f"{type(self._job).job_name}: `with self.step({name!r})` is not supported: Python "
            "cannot skip a with block's body, so a completed step could not be skipped. Pass the "
            f"step's function, `self.step({name!r}, fn, *args)`, or decorate it with "
            f"`@self.step({name!r})`"
        )

    def __exit__(self, *exc: object) -> None:  # pragma: no cover - __enter__ always raises
        return None


def _inline_outcome(decision: rules.Decision, error: Exception) -> None:
    """``perform_now``'s answer to an error: ``None`` when rescued or discarded, else raise."""
    if decision.kind in ("finished", "discard"):
        return None
    if decision.kind == "retry" or decision.error is error:
        raise error
    assert decision.error is not None
    raise decision.error


def _timeout(value: Any, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        expected = "a positive number of seconds, a timedelta or None"
        raise ConfigurationError(f"{name}: timeout must be {expected}, got {value!r}")
    return float(seconds)


class ConfiguredJob:
    """A job class with enqueue options, from ``Job.set(...)``."""

    def __init__(self, job_class: type[Job], options: Options) -> None:
        self.job_class = job_class
        self.options = options

    def set(self, **options: Any) -> ConfiguredJob:
        return ConfiguredJob(self.job_class, self.options.merged(Options(**options)))

    def build(self, *args: Any, **kwargs: Any) -> Job:
        return self.job_class(*args, **kwargs).with_options(self.options)

    def perform_later(self, *args: Any, **kwargs: Any) -> EnqueuedJob:
        return self.build(*args, **kwargs).enqueue()

    async def perform_later_async(self, *args: Any, **kwargs: Any) -> EnqueuedJob:
        return await self.build(*args, **kwargs).enqueue_async()

    def perform_now(self, *args: Any, **kwargs: Any) -> Any:
        return self.build(*args, **kwargs).perform_inline()

    def perform_all_later_args(
        self, rows: Iterable[Sequence[Any]], *, connection: Connectionish | None = None
    ) -> int:
        """:meth:`Job.perform_all_later_args` with these options (queue, priority, wait,
        wait_until, connection): the same for every job."""
        return perform_all_later_args(self.job_class, rows, self.options, connection)

    async def perform_all_later_args_async(
        self, rows: Iterable[Sequence[Any]], *, connection: Connectionish | None = None
    ) -> int:
        return await perform_all_later_args_async(self.job_class, rows, self.options, connection)


class JobFunction(Generic[P, R]):
    """A function turned into a job by :func:`job`; calling it still calls the function."""

    def __init__(self, fn: Callable[P, R], job_class: type[Job]) -> None:
        self.fn = fn
        self.job_class = job_class
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "job")
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def build(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """A job instance for :func:`pgjobs.perform_all_later`."""
        return self.job_class(*args, **kwargs)

    def set(self, **options: Any) -> ConfiguredJob:
        return ConfiguredJob(self.job_class, Options(**options))

    def perform_later(self, *args: P.args, **kwargs: P.kwargs) -> EnqueuedJob:
        return self.job_class(*args, **kwargs).enqueue()

    async def perform_later_async(self, *args: P.args, **kwargs: P.kwargs) -> EnqueuedJob:
        return await self.job_class(*args, **kwargs).enqueue_async()

    def perform_now(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.job_class(*args, **kwargs).perform_inline()

    def perform_all_later_args(
        self, rows: Iterable[Sequence[Any]], *, connection: Connectionish | None = None
    ) -> int:
        """One job per row of positional arguments, in bulk: :meth:`Job.perform_all_later_args`."""
        return perform_all_later_args(self.job_class, rows, NO_OPTIONS, connection)

    async def perform_all_later_args_async(
        self, rows: Iterable[Sequence[Any]], *, connection: Connectionish | None = None
    ) -> int:
        return await perform_all_later_args_async(self.job_class, rows, NO_OPTIONS, connection)


@overload
def job(fn: Callable[P, R], /) -> JobFunction[P, R]: ...


@overload
def job(
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    name: str | None = None,
    timeout: float | timedelta | None = None,
    retry_on: Sequence[Any] = (),
    discard_on: Sequence[Any] = (),
    limits_concurrency: limits.ConcurrencyLimit | None = None,
    unique: limits.Uniqueness | None = None,
    ordered: limits.Ordered | None = None,
    rate_limit: limits.RateLimit | None = None,
    store_result: bool = True,
    max_result_bytes: int = 1024 * 1024,
) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...


def job(
    fn: Callable[P, R] | None = None,
    /,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    name: str | None = None,
    timeout: float | timedelta | None = None,
    retry_on: Sequence[Any] = (),
    discard_on: Sequence[Any] = (),
    limits_concurrency: limits.ConcurrencyLimit | None = None,
    unique: limits.Uniqueness | None = None,
    ordered: limits.Ordered | None = None,
    rate_limit: limits.RateLimit | None = None,
    store_result: bool = True,
    max_result_bytes: int = 1024 * 1024,
) -> JobFunction[P, R] | Callable[[Callable[P, R]], JobFunction[P, R]]:
    """Turn a function into a job: ``@pgjobs.job(queue="mailers")``; same API as a Job class.

    ``timeout``, ``retry_on``, ``discard_on``, ``limits_concurrency``, ``unique``, ``ordered``,
    ``rate_limit``, ``store_result`` and ``max_result_bytes`` are the job class attributes of
    those names.
    """

    def wrap(func: Callable[P, R]) -> JobFunction[P, R]:
        is_async = inspect.iscoroutinefunction(func)
        attrs: dict[str, Any] = {
            "queue_as": queue,
            "priority": priority,
            "timeout": timeout,
            "retry_on": list(retry_on),
            "discard_on": list(discard_on),
            "limits_concurrency": limits_concurrency,
            "unique": unique,
            "ordered": ordered,
            "rate_limit": rate_limit,
            "store_result": store_result,
            "max_result_bytes": max_result_bytes,
            "job_name": name or f"{func.__module__}:{func.__qualname__}",
            "__module__": func.__module__,
            "__qualname__": func.__qualname__,
            "__doc__": func.__doc__,
        }
        if is_async:

            async def perform_async(self: Job, *args: Any, **kwargs: Any) -> Any:
                return await func(*args, **kwargs)  # type: ignore[misc]

            attrs["perform"] = perform_async
        else:

            def perform(self: Job, *args: Any, **kwargs: Any) -> Any:
                return func(*args, **kwargs)

            attrs["perform"] = perform
        job_class = type(func.__name__, (Job,), attrs)
        return JobFunction(func, job_class)

    return wrap(fn) if fn is not None else wrap


# -- registry -----------------------------------------------------------------------------------


def register(cls: type[Job]) -> None:
    _registry[cls.job_name] = cls


def registered() -> Mapping[str, type[Job]]:
    return dict(_registry)


def resolve(name: str) -> type[Job]:
    """The job class stored under ``name``: registered, or importable as ``module:QualName``."""
    found = _registry.get(name)
    if found is not None:
        return found
    module_name, sep, qualname = name.partition(":")
    if sep:
        try:
            importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownJobError(
                f"job class {name!r}: module {module_name!r} cannot be imported ({exc})"
            ) from exc
        found = _registry.get(name)
        if found is not None:
            return found
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, JobFunction):
            return obj.job_class
        if isinstance(obj, type) and issubclass(obj, Job):
            return obj
    raise UnknownJobError(
        f"no job class is registered as {name!r}: import the module that defines it in the "
        "worker (`pgjobs start --app myapp.jobs`) or check its job_name"
    )
