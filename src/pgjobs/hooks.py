"""Lifecycle hooks, registered from the application module ``pgjobs start --app`` imports::

    @pgjobs.on_worker_start
    def connect_metrics(process): ...

``on_start`` / ``on_stop`` run in the supervisor; ``on_worker_start`` / ``on_worker_stop``,
``on_dispatcher_start`` / ``on_dispatcher_stop`` (and ``on_scheduler_*``) in those processes —
each receives the process object (``kind``, ``name``, ``pid``, ``id``).  A hook that raises is
logged and does not stop the process.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

log = logging.getLogger("pgjobs")
Hook = Callable[[Any], object]
_hooks: defaultdict[str, list[Hook]] = defaultdict(list)


def _register(event: str) -> Callable[[Hook], Hook]:
    def register(fn: Hook) -> Hook:
        _hooks[event].append(fn)
        return fn

    register.__name__ = f"on_{event}"
    return register


on_start = _register("supervisor_start")
on_stop = _register("supervisor_stop")
on_worker_start = _register("worker_start")
on_worker_stop = _register("worker_stop")
on_dispatcher_start = _register("dispatcher_start")
on_dispatcher_stop = _register("dispatcher_stop")
on_scheduler_start = _register("scheduler_start")
on_scheduler_stop = _register("scheduler_stop")


#: ``wrap(claimed) -> context manager``: see :func:`wrap_jobs`.  A tuple, replaced (not
#: mutated) on change, so a worker reads it once per job without a lock.
JobWrapper = Callable[[Any], AbstractContextManager[object]]
job_wrappers: tuple[JobWrapper, ...] = ()


def wrap_jobs(fn: JobWrapper) -> JobWrapper:
    """Run every job this process's worker performs inside the context manager ``fn(claimed)``
    (``claimed``: the job as claimed: ``job_id``, ``class_name``, ``queue_name``, …); returns
    ``fn``.  For integrations: a framework's per-job set-up and tear-down, as its request cycle
    does (Django's stale connections, a database session the job's records load through).

    It is entered in the job's thread before the job's arguments are decoded (model instances
    are loaded then) and left after its outcome is decided (perform, callbacks, error rules);
    for an ``async def perform`` that is the worker thread that waits for it.  An error entering
    it fails the job with that error; an error leaving it is reported (``on_thread_error``) and
    the outcome stands.  Costs nothing while none is registered.
    """
    global job_wrappers
    if fn not in job_wrappers:
        job_wrappers = (*job_wrappers, fn)
    return fn


def unwrap_jobs(fn: JobWrapper) -> None:
    """Undo :func:`wrap_jobs` (nothing happens if ``fn`` was not registered)."""
    global job_wrappers
    job_wrappers = tuple(w for w in job_wrappers if w is not fn)


def registered(register: Callable[[Hook], Hook], fn: Hook) -> bool:
    """Whether ``fn`` is already registered with ``register`` (one of the ``on_*`` above)."""
    return fn in _hooks.get(register.__name__.removeprefix("on_"), ())


def run(event: str, process: object) -> None:
    for fn in _hooks.get(event, ()):
        try:
            fn(process)
        except Exception:
            log.exception("%s hook %r failed", event, getattr(fn, "__name__", fn))


def clear() -> None:
    _hooks.clear()
