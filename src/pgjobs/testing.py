"""Helpers for testing applications that enqueue jobs, in the style of ``ActiveJob::TestHelper``.

No database is involved: while a :class:`TestAdapter` is installed (``with capture_jobs():``,
``with inline_jobs():`` or the pytest fixtures of :mod:`pgjobs.pytest_plugin`), ``perform_later``,
``perform_later_async`` and ``perform_all_later(_async)`` hand their jobs to it instead of
writing them.  Enqueue callbacks still run (except for ``perform_all_later``, as in production),
and arguments are serialized to JSON and back exactly as they would be stored, so an
unserializable argument raises :class:`pgjobs.SerializationError` in tests too, and the job that
is later performed receives the round-tripped arguments, as a worker's would.

Two modes:

- ``"capture"`` (default): jobs are recorded in :attr:`TestAdapter.enqueued`, not run.  Assert on
  them, then run them with :meth:`TestAdapter.perform_enqueued_jobs`.
- ``"inline"``: each job is performed (callbacks included, like ``perform_now``) before
  ``perform_later`` returns.  Jobs enqueued *by* a running job are performed right after it
  finishes, in enqueue order, before the outermost ``perform_later`` returns.  The jobs' scheduled
  times are ignored; their exceptions propagate to the caller of ``perform_later``.

Batches and workflows are the database's work (their callbacks and dependencies are kept by
triggers), so they are always written to the database, adapter or not; :func:`work_off` runs
pgjobs' own worker and dispatcher in the test's process until nothing is left to do.

Async jobs are run with ``asyncio.run``; when an event loop is already running in the thread (an
async test), they run on a fresh loop in a helper thread.  To run captured jobs on the caller's
loop, ``await adapter.perform_enqueued_jobs_async()``.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias
from uuid import UUID

from pgjobs import clock
from pgjobs.enqueue.core import set_adapter
from pgjobs.enqueue.handle import EnqueuedJob
from pgjobs.errors import ConfigurationError
from pgjobs.jobs.base import Job, JobFunction
from pgjobs.serialization import deserialize_arguments, dumps_arguments

__all__ = [
    "AT_TOLERANCE",
    "EnqueuedRecord",
    "TestAdapter",
    "TooManyJobsError",
    "capture_jobs",
    "inline_jobs",
    "work_off",
]

JobLike: TypeAlias = "type[Job] | JobFunction[..., Any] | str"
"""A job class, a ``@pgjobs.job`` function, or a ``job_name`` / class ``__qualname__``."""
Only: TypeAlias = "JobLike | Iterable[JobLike] | Callable[[EnqueuedRecord], bool] | None"
Mode: TypeAlias = Literal["capture", "inline"]

AT_TOLERANCE = timedelta(seconds=1)
"""How far a job's ``scheduled_at`` may be from ``assert_enqueued_with(at=...)``."""
MAX_JOBS = 10_000


class TooManyJobsError(RuntimeError):
    """More than ``max_jobs`` jobs ran in one go: probably jobs that enqueue each other forever."""


@dataclass(frozen=True)
class EnqueuedRecord:
    """One job handed to the adapter; ``job`` is rebuilt from the round-tripped arguments."""

    job: Job
    job_class: type[Job]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    scheduled_at: datetime | None
    job_id: UUID

    def __str__(self) -> str:
        params = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        text = f"{self.job_class.__qualname__}({', '.join(params)}) queue={self.queue!r}"
        if self.priority:
            text += f" priority={self.priority}"
        if self.scheduled_at is not None:
            text += f" at={self.scheduled_at.isoformat()}"
        return text


def _is(record: EnqueuedRecord, job: JobLike) -> bool:
    if isinstance(job, str):
        return job in (record.job_class.job_name, record.job_class.__qualname__)
    return record.job_class is (job.job_class if isinstance(job, JobFunction) else job)


def _name(job: JobLike) -> str:
    if isinstance(job, str):
        return job
    return (job.job_class if isinstance(job, JobFunction) else job).__qualname__


def _selector(only: Only) -> Callable[[EnqueuedRecord], bool]:
    if only is None:
        return lambda record: True
    if isinstance(only, str | type | JobFunction):
        single: JobLike = only
        return lambda record: _is(record, single)
    if callable(only):
        return only
    choices = list(only)
    return lambda record: any(_is(record, job) for job in choices)


def _perform_now(job: Job) -> Any:
    """``job.perform_inline()``, on a helper thread if it needs ``asyncio.run`` inside a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return job.perform_inline()  # no loop running in this thread
    if not job.is_async():
        return job.perform_inline()
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="pgjobs-testing") as pool:
        return pool.submit(context.run, job.perform_inline).result()


def _criteria(**criteria: Any) -> str:
    shown = [
        f"job={_name(v)}" if k == "job" else f"{k}={v!r}"
        for k, v in criteria.items()
        if v is not None
    ]
    return f" ({', '.join(shown)})" if shown else ""


def _listing(title: str, records: list[EnqueuedRecord]) -> str:
    if not records:
        return f"No jobs were {title}."
    lines = "\n".join(f"  {record}" for record in records)
    return f"Jobs {title} ({len(records)}):\n{lines}"


class TestAdapter:
    """Records (``"capture"``) or performs (``"inline"``) jobs instead of storing them."""

    __test__ = False  # not a pytest test class

    def __init__(self, mode: Mode = "capture", *, max_jobs: int = MAX_JOBS) -> None:
        if mode not in ("capture", "inline"):
            raise ValueError(f"mode must be 'capture' or 'inline', not {mode!r}")
        self.mode: Mode = mode
        self.max_jobs = max_jobs
        self.enqueued: list[EnqueuedRecord] = []
        self.performed: list[EnqueuedRecord] = []
        self._pending: list[EnqueuedRecord] | None = None  # set while an inline chain runs

    # -- the Adapter protocol ------------------------------------------------------------------

    def enqueue(self, job: Job, scheduled_at: datetime | None) -> EnqueuedJob:
        record = self._record(job, scheduled_at)
        if self.mode == "capture":
            self.enqueued.append(record)
        elif self._pending is not None:
            self._pending.append(record)
        else:
            self._run_inline(record)
        return EnqueuedJob(
            job_id=record.job_id,
            class_name=record.job_class.job_name,
            queue_name=record.queue,
            priority=record.priority,
            scheduled_at=scheduled_at,
        )

    def _record(self, job: Job, scheduled_at: datetime | None) -> EnqueuedRecord:
        cls = type(job)
        if not isinstance(job.priority, int) or isinstance(job.priority, bool):
            raise ConfigurationError(
                f"{cls.job_name}: priority must be an int, got {job.priority!r}"
            )
        text = dumps_arguments(job.args, job.kwargs, context=f"{cls.job_name}.perform_later")
        args, kwargs = deserialize_arguments(json.loads(text))
        job.enqueued_at, job.scheduled_at = clock.now(), scheduled_at
        copy = cls.restore(
            job_id=job.job_id,
            args=args,
            kwargs=kwargs,
            queue_name=job.queue_name,
            priority=job.priority,
            executions=0,
            enqueued_at=job.enqueued_at,
            scheduled_at=scheduled_at,
        )
        return EnqueuedRecord(
            copy, cls, args, kwargs, job.queue_name, job.priority, scheduled_at, job.job_id
        )

    def _run_inline(self, first: EnqueuedRecord) -> None:
        self._pending = [first]
        try:
            for record in self._drain(self._pending, lambda r: True):
                _perform_now(record.job)
        finally:
            self._pending = None

    def _drain(
        self, records: list[EnqueuedRecord], wanted: Callable[[EnqueuedRecord], bool]
    ) -> Iterator[EnqueuedRecord]:
        """Pop and yield the first wanted record (into ``performed``) until none is left."""
        for count in itertools.count(1):
            index = next((i for i, r in enumerate(records) if wanted(r)), None)
            if index is None:
                return
            if count > self.max_jobs:
                raise TooManyJobsError(
                    f"more than {self.max_jobs} jobs were performed in one go (next: "
                    f"{records[index]}): do jobs enqueue each other endlessly? If not, pass "
                    "a higher max_jobs to the adapter."
                )
            self.performed.append(records.pop(index))
            yield self.performed[-1]

    # -- running captured jobs -----------------------------------------------------------------

    @contextmanager
    def installed(self) -> Iterator[TestAdapter]:
        """Install this adapter for the ``with`` block, then restore the previous one."""
        previous = set_adapter(self)
        try:
            yield self
        finally:
            set_adapter(previous)

    def _take(self, only: Only, at: datetime | None) -> Iterator[EnqueuedRecord]:
        selected = _selector(only)

        def wanted(r: EnqueuedRecord) -> bool:
            return selected(r) and (at is None or r.scheduled_at is None or r.scheduled_at <= at)

        return self._drain(self.enqueued, wanted)

    def perform_enqueued_jobs(self, *, only: Only = None, at: datetime | None = None) -> list[Any]:
        """Perform the captured jobs in enqueue order, then those they enqueue, until none is left.

        ``only`` (a job, a list of jobs, or a predicate on :class:`EnqueuedRecord`) and ``at``
        (perform only jobs due by then; by default scheduled jobs run too) select jobs; the others
        stay in :attr:`enqueued`.  Returns what each ``perform`` returned, in order.
        """
        with self.installed():
            return [_perform_now(record.job) for record in self._take(only, at)]

    async def perform_enqueued_jobs_async(
        self, *, only: Only = None, at: datetime | None = None
    ) -> list[Any]:
        """:meth:`perform_enqueued_jobs`, running async jobs on the caller's event loop."""
        with self.installed():
            return [await record.job.perform_inline_async() for record in self._take(only, at)]

    def clear(self) -> None:
        self.enqueued.clear()
        self.performed.clear()

    # -- assertions ----------------------------------------------------------------------------

    def assert_enqueued_jobs(
        self, n: int, *, job: JobLike | None = None, queue: str | None = None
    ) -> list[EnqueuedRecord]:
        """Exactly ``n`` jobs (of ``job``, on ``queue``) are enqueued; returns them."""
        return _assert_count(n, "enqueued", self.enqueued, job=job, queue=queue)

    def assert_no_enqueued_jobs(
        self, *, job: JobLike | None = None, queue: str | None = None
    ) -> None:
        _assert_count(0, "enqueued", self.enqueued, job=job, queue=queue)

    def assert_performed_jobs(
        self, n: int, *, job: JobLike | None = None, queue: str | None = None
    ) -> list[EnqueuedRecord]:
        return _assert_count(n, "performed", self.performed, job=job, queue=queue)

    def assert_enqueued_with(
        self,
        *,
        job: JobLike | None = None,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        at: datetime | None = None,
    ) -> EnqueuedRecord:
        """The first enqueued job matching every given criterion (``None``: any).

        ``args`` and ``kwargs`` must equal the job's (round-tripped) arguments; ``at`` matches a
        ``scheduled_at`` within :data:`AT_TOLERANCE` (1 s) of it, so ``set(wait=...)`` can be
        checked against ``datetime.now(UTC) + wait``; jobs due at once never match ``at``.
        """
        criteria: dict[str, Any] = {"job": job, "args": None if args is None else tuple(args)}
        criteria.update(kwargs=kwargs, queue=queue, priority=priority, at=at)
        found = _matching(self.enqueued, **criteria)
        if not found:
            raise AssertionError(
                f"no enqueued job matches{_criteria(**criteria)}.\n"
                + _listing("enqueued", self.enqueued)
            )
        return found[0]


def _matching(records: list[EnqueuedRecord], **criteria: Any) -> list[EnqueuedRecord]:
    job, at = criteria.pop("job", None), criteria.pop("at", None)
    return [
        r
        for r in records
        if (job is None or _is(r, job))
        and all(v is None or getattr(r, k) == v for k, v in criteria.items())
        and (
            at is None or (r.scheduled_at is not None and abs(r.scheduled_at - at) <= AT_TOLERANCE)
        )
    ]


def _assert_count(
    n: int, title: str, records: list[EnqueuedRecord], **criteria: Any
) -> list[EnqueuedRecord]:
    found = _matching(records, **criteria)
    if len(found) != n:
        raise AssertionError(
            f"expected {n} {title} job{'s' * (n != 1)}{_criteria(**criteria)}, found "
            f"{len(found)}.\n{_listing(title, records)}"
        )
    return found


@contextmanager
def capture_jobs(*, max_jobs: int = MAX_JOBS) -> Iterator[TestAdapter]:
    """Record jobs instead of storing them for the ``with`` block; yields the adapter."""
    with TestAdapter("capture", max_jobs=max_jobs).installed() as adapter:
        yield adapter


@contextmanager
def inline_jobs(*, max_jobs: int = MAX_JOBS) -> Iterator[TestAdapter]:
    """Perform jobs as they are enqueued for the ``with`` block; yields the adapter."""
    with TestAdapter("inline", max_jobs=max_jobs).installed() as adapter:
        yield adapter


# -- the real engine, in this process -----------------------------------------------------------

# Nothing for work_off to do now (its own worker holding nothing: checked first): no job ready,
# due, or waiting for a concurrency slot or a rate limit's turn.
_IDLE = """
SELECT NOT EXISTS (SELECT 1 FROM {ready})
   AND NOT EXISTS (SELECT 1 FROM {scheduled} WHERE scheduled_at <= %(now)s)
   AND NOT EXISTS (SELECT 1 FROM {blocked})
"""


def work_off(
    *,
    timeout: float = 30.0,
    queues: Iterable[str] = ("*",),
    threads: int = 4,
    database: Any = None,
) -> None:
    """Run pgjobs' worker and dispatcher in this process, on the database (pgjobs' default, or
    ``database``), until nothing is left to do now: no job ready, none running, none due.  Jobs
    scheduled for later stay scheduled, and a workflow's job held by a dependency that cannot
    end (failed, with ``on_failure="wait"``) stays held; jobs waiting for a concurrency slot or
    a rate limit's turn are waited for.  Jobs run as a worker runs them: with
    their retry rules, results, batch callbacks and dependents.  ``TimeoutError`` if work is
    still left after ``timeout`` seconds (a job that keeps failing and retrying, say).

    For tests of code that writes batches and workflows (``Batch``, ``pgjobs.chain``, ...) and
    of jobs that need the database: it commits, so use it on a database the test may write to.
    """
    import time

    from pgjobs import runtime
    from pgjobs.config.queue import Config, DispatcherConfig, WorkerConfig
    from pgjobs.processes.dispatcher import Dispatcher
    from pgjobs.processes.worker import Worker

    db = database if database is not None else runtime.get_database()
    config = Config(heartbeat_interval=30)
    worker = Worker(
        db.renamed("pgjobs-worker"),
        config,
        WorkerConfig(queues=tuple(queues), threads=threads, polling_interval=0.05),
    )
    dispatcher = Dispatcher(
        db.renamed("pgjobs-dispatcher"),
        config,
        DispatcherConfig(polling_interval=0.05, concurrency_maintenance=False),
    )
    idle = db.sql(_IDLE)
    deadline = time.monotonic() + timeout
    previous = runtime.use(db)  # what its jobs use (add_to_batch, dependency_results, ...)
    worker.register()
    dispatcher.register()
    for _ in range(threads):
        worker._start_thread()
    try:
        while True:
            dispatcher.poll()
            delay = worker.poll()
            if not worker.in_flight and not worker.holding():
                with db.connection() as conn:
                    row = conn.execute(idle, {"now": clock.now()}).fetchone()
                if row is not None and row[0]:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"work_off: jobs still to run after {timeout}s")
            worker.wake.wait(min(delay, 0.02))
            worker.wake.clear()
    finally:
        for process in (worker, dispatcher):
            process.stop()
            process.shutdown()
            process.deregister()
            process.close()
        runtime.use(previous)
