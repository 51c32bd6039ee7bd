"""The tracing hook: where a tracer (:mod:`pgjobs.observability.otel`) plugs into enqueue and
perform.  This module imports no tracing library.

Guarantees:

- With no hook installed (``tracer is None``, the default) enqueue and perform pay one ``is None``
  check each, and the job row is exactly what it is without tracing.
- With a hook, every enqueue that writes a job runs inside :meth:`Tracing.send` (one job) or
  :meth:`Tracing.send_bulk` (``perform_all_later``, each job's row built inside its ``create``);
  the hook may set ``job._trace_carrier``, which is then stored in the job's arguments under
  ``"trace"`` (see :func:`pgjobs.serialization.dumps_arguments`).  An error raised by the enqueue
  passes through the hook's context manager and is raised to the caller.
- Every job a worker performs runs inside :meth:`Tracing.process`, given the carrier stored with
  it (``None`` when there is none); the function it yields is called once with the job's
  :class:`~pgjobs.processes.executor.Outcome`, before the context manager exits.
- ``perform_now`` and the test adapter (:mod:`pgjobs.testing`) write no row: no hook is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:  # types only: nothing here imports the engine
    from pgjobs.jobs.base import Job
    from pgjobs.processes.executor import Claimed, Outcome

__all__ = ["Carrier", "Create", "Processed", "Tracing", "install", "tracer"]

#: The propagated context, as text fields (W3C ``traceparent``, ``tracestate``, ...).
Carrier: TypeAlias = Mapping[str, str]
#: ``create(job)``: entered around building one job's row in a bulk enqueue.
Create: TypeAlias = "Callable[[Job], AbstractContextManager[None]]"
#: ``processed(outcome)``: tells the process span how the job ended.
Processed: TypeAlias = "Callable[[Outcome], None]"


class Tracing(Protocol):
    """What enqueue and perform ask of a tracer."""

    def send(self, job: Job) -> AbstractContextManager[None]:
        """Around writing one job (``perform_later``, ``enqueue_on``)."""
        ...

    def send_bulk(self, jobs: Sequence[Job]) -> AbstractContextManager[Create]:
        """Around writing many jobs at once (``perform_all_later``); yields ``create``."""
        ...

    def process(
        self, claimed: Claimed, carrier: Carrier | None
    ) -> AbstractContextManager[Processed]:
        """Around performing a claimed job (its rules' judging included); yields ``processed``."""
        ...


#: The installed hook; ``None``: tracing is off.  Read on every enqueue and perform.
tracer: Tracing | None = None


def install(hook: Tracing | None) -> Tracing | None:
    """Install ``hook`` (``None``: tracing off) in this process; returns the previous one."""
    global tracer
    previous, tracer = tracer, hook
    return previous
