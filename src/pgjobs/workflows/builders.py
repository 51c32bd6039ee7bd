"""Batches, workflows and chains as applications write them.

::

    with pgjobs.batch(on_finish=Report, on_success=Notify, description="import 42") as batch:
        for row_ids in chunks:
            batch.add(ImportRows.build(row_ids))

    with pgjobs.workflow(on_failure="cancel") as wf:
        fetch = wf.add(Fetch.build(url))
        parse = wf.add(Parse.build(), after=[fetch])
        wf.add(Store.build(), after=[parse])

    pgjobs.chain(A.build(1), B.build(), C.build())

Nothing is written until the outermost ``with`` block ends without an error (or
:meth:`Batch.enqueue` is called); then the batch and all its jobs are written in one
transaction: the caller's, when ``connection=`` is given (like ``perform_later`` on a
connection), else one of pgjobs' own.  An ``async with`` block writes with an async connection.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Self

from pgjobs.enqueue.handle import EnqueuedJob
from pgjobs.errors import ConfigurationError
from pgjobs.jobs.base import ConfiguredJob, Job, JobFunction
from pgjobs.serialization import dumps_arguments
from pgjobs.workflows import write
from pgjobs.workflows.info import BatchInfo, BatchRef, get_batch, wait_batch

OnFailure = Literal["cancel", "run", "wait"]
ON_FAILURE: tuple[str, ...] = ("cancel", "run", "wait")
Callback = type[Job] | JobFunction[Any, Any] | ConfiguredJob | Job | None


def _each(items: Sequence[Job | Iterable[Job]]) -> Iterable[Any]:
    """Jobs, and the jobs of iterables among them (anything else is left to _node to refuse)."""
    for item in items:
        if isinstance(item, Job | type) or not isinstance(item, Iterable):
            yield item
        else:
            yield from item


def _callback(value: Callback, batch_id: uuid.UUID, what: str) -> dict[str, Any] | None:
    """The callback job, prepared now and written by the trigger when its moment comes: its
    first argument is the batch (read afresh when it runs), then the arguments it was built
    with."""
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, Job):
        job = value()
    elif isinstance(value, JobFunction | ConfiguredJob):
        job = value.build()
    elif isinstance(value, Job):
        job = value
    else:
        raise ConfigurationError(
            f"on_{what}: give a job class, a @pgjobs.job function or a built job "
            f"(X.build(...)), not {value!r}"
        )
    name = type(job).job_name
    arguments = dumps_arguments(
        (BatchRef(batch_id), *job.args), job.kwargs, context=f"{name} (on_{what} of a batch)"
    )
    return {
        # Its own id: the same built job may be the callback of several batches (or of two
        # moments of one), and each written callback is a job of its own.
        "job_id": str(uuid.uuid4()),
        "class_name": name,
        "queue_name": job.queue_name,
        "priority": job.priority,
        "arguments": json.loads(arguments),
    }


class Batch:
    """A group of jobs with callbacks: ``on_finish`` once every job has ended (succeeded, or
    failed, discarded or cancelled for good), ``on_success`` once every job has succeeded (later,
    if a failed job is retried and succeeds), ``on_discard`` at the first job that did not
    succeed.  Each callback is an ordinary job whose ``perform`` receives the batch
    (:class:`pgjobs.BatchInfo`) first.  ``batch_id`` is known before anything is written.
    """

    kind = "batch"

    def __init__(
        self,
        *,
        on_finish: Callback = None,
        on_success: Callback = None,
        on_discard: Callback = None,
        description: str | None = None,
        properties: dict[str, Any] | None = None,
        connection: Any = None,
        _parent: Batch | None = None,
        _into: int | None = None,
        _on_failure: str | None = None,
    ) -> None:
        self.batch_id = uuid.uuid4()
        callbacks = {
            what: spec
            for what, value in (
                ("finish", on_finish),
                ("success", on_success),
                ("discard", on_discard),
            )
            if (spec := _callback(value, self.batch_id, what)) is not None
        }
        try:
            json.dumps(properties or {})
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"properties must be JSON (str keys): {exc}") from exc
        self._group = write.Group(
            self.batch_id,
            self.kind,
            description=description,
            properties=dict(properties or {}),
            on_failure=_on_failure,
            callbacks=callbacks,
            into=_into,
        )
        self._connection = connection
        self._parent = _parent
        self._jobs: list[Job] = []
        self._written = False
        self._children: list[Batch] = []
        self.enqueued: list[EnqueuedJob] = []  # set when written, one per job added, in order

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.batch_id} jobs={len(self._jobs)}>"

    def add(self, *jobs: Job | Iterable[Job]) -> None:
        """Add jobs (built with ``X.build(...)``), or iterables of them."""
        for job in _each(jobs):
            self._node(job)

    def _node(self, job: Any, after: Sequence[Job] = ()) -> Job:
        if self._written:
            raise ConfigurationError(
                f"{self!r} was written already: add jobs before its with block ends (or before "
                "enqueue()); from one of its running jobs, use self.add_to_batch(...)"
            )
        if not isinstance(job, Job):
            raise ConfigurationError(
                f"add() takes built jobs (X.build(...), or X(...) for a Job class), not {job!r}"
            )
        self._group.nodes.append(write.Node(job, list(after)))
        self._jobs.append(job)
        return job

    def batch(self, **options: Any) -> Batch:
        """A batch nested in this one, written with it: it counts as one job of this batch
        (succeeded if all its jobs succeeded, else failed)."""
        child = Batch(**options, _parent=self)
        self._group.children.append(child._group)
        self._children.append(child)
        return child

    # -- writing ------------------------------------------------------------------------------

    def enqueue(self) -> list[EnqueuedJob]:
        """Write the batch and its jobs (once); returns one result per job added."""
        self._writing()
        self.enqueued = write.write_group(self._group, self._connection)
        return self.enqueued

    def _writing(self) -> None:
        if self._parent is not None:
            raise ConfigurationError("a nested batch is written with its parent's enqueue()")
        if self._written:
            raise ConfigurationError(f"{self!r} was written already")
        self._written = True
        for child in self._children:
            child._written = True

    async def enqueue_async(self) -> list[EnqueuedJob]:
        self._writing()
        self.enqueued = await write.write_group_async(self._group, self._connection)
        return self.enqueued

    def wait(self, timeout: float | None = None) -> BatchInfo:
        """Block until every job of this (written) batch has ended; see
        :func:`pgjobs.wait_batch`."""
        return wait_batch(self.batch_id, timeout=timeout)

    def info(self) -> BatchInfo:
        """The batch as the database has it now (:func:`pgjobs.get_batch`)."""
        return get_batch(self.batch_id)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and self._parent is None:
            self.enqueue()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and self._parent is None:
            await self.enqueue_async()

    @classmethod
    def of(cls, jobs: Iterable[Job], **options: Any) -> Self:
        """Write a batch of ``jobs`` at once: ``pgjobs.Batch.of([...], on_finish=...)``."""
        batch = cls(**options)
        batch.add(jobs)
        batch.enqueue()
        return batch


class Workflow(Batch):
    """Jobs with dependencies (a DAG): ``add(job, after=[...])`` runs ``job`` once every job it
    names has succeeded.  When one of them fails for good, ``on_failure`` decides: ``"cancel"``
    (default) cancels every job that waits on it, directly or not; ``"run"`` runs them anyway;
    ``"wait"`` keeps them held while the failed job may still be retried, and cancels them
    if it is discarded.  A workflow is a batch too: callbacks and counts work the same."""

    kind = "workflow"

    def __init__(self, *, on_failure: OnFailure = "cancel", **options: Any) -> None:
        if on_failure not in ON_FAILURE:
            raise ConfigurationError(
                f"on_failure={on_failure!r}: choose one of {', '.join(map(repr, ON_FAILURE))}"
            )
        super().__init__(**options, _on_failure=on_failure)

    def add(self, *jobs: Job | Iterable[Job], after: Sequence[Job] = ()) -> Any:
        """Add a job (returned, to name it in later ``after=``) to run after ``after``; with
        several jobs (or iterables of them), each runs after ``after``."""
        if len(jobs) == 1 and isinstance(jobs[0], Job):
            return self._node(jobs[0], after)
        for job in _each(jobs):
            self._node(job, after)
        return None


def batch(**options: Any) -> Batch:
    """A new :class:`Batch` (``with pgjobs.batch(...) as b:``)."""
    return Batch(**options)


def workflow(**options: Any) -> Workflow:
    """A new :class:`Workflow` (``with pgjobs.workflow(...) as wf:``)."""
    return Workflow(**options)


def chain(*steps: Job | Iterable[Job], **options: Any) -> Workflow:
    """Write jobs that run one after the other, each once the previous one succeeded (a
    workflow; ``options`` as for :func:`workflow`).  A step may be several jobs (a list): they
    run side by side, after all of the previous step, and the next step runs after all of them
    (``chain(fetch, [resize_small, resize_large], publish)``)."""
    wf = Workflow(**options)
    previous: list[Job] = []
    for step in steps:
        jobs = [step] if isinstance(step, Job) else list(_each([step]))
        if not jobs:
            raise ConfigurationError("chain(): a step with no job")
        previous = [wf._node(job, previous) for job in jobs]
    wf.enqueue()
    return wf
