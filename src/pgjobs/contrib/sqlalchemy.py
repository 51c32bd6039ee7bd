"""SQLAlchemy mapped instances as job arguments, loaded afresh when the job runs (GlobalID).

::

    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from pgjobs.contrib import sqlalchemy as pgjobs_sqlalchemy

    # in the module `pgjobs start --app` imports (a sync sessionmaker, even in an async app):
    pgjobs_sqlalchemy.use_session(sessionmaker(create_engine("postgresql+psycopg://...")))


    class SendWelcome(pgjobs.Job):
        discard_on = [pgjobs.DeserializationError]  # the user was deleted meanwhile

        def perform(self, user: User) -> None:
            print(user.email, len(user.orders))  # lazy loads work: the session is open
            pgjobs_sqlalchemy.session().commit()  # the job's session, for its own writes


    session.add(user)
    session.flush()  # an instance needs its primary key before it is enqueued
    SendWelcome.set(connection=session).perform_later(user)
    session.commit()  # the user and the job, together

What is stored is a reference, ``{"__pgjobs__": "record", "kind": "sqlalchemy", "v":
["myapp.models:User", [42]]}``: the mapped class (``module:QualName``) and the instance's
identity (``sqlalchemy.inspect(user).identity``, the primary key values).  Importing this module
registers the kind (:func:`pgjobs.register_records`); enqueueing needs nothing else, and never
touches the database.

What is guaranteed, and how it fails:

- An instance without identity (transient, or pending in a session that was not flushed) is
  refused at enqueue with :class:`pgjobs.SerializationError` ("flush the session first"),
  before anything is written; so is a class defined inside a function (not importable).
- When the job runs, the worker loads each instance with ``session.get(cls, identity)`` through
  the *job's session*: one session per job, made by the factory given to :func:`use_session` on
  first use (a job without SQLAlchemy arguments that never calls :func:`session` opens none), and
  closed when the job's outcome is decided, so lazy loads work during ``perform``, callbacks and
  error handlers.  Nothing is committed for the job: it commits its own writes.
- A row deleted since the enqueue raises :class:`pgjobs.DeserializationError` (``discard_on``
  it); so does a model class that no longer imports.
- The worker loads synchronously, also for an application that uses ``AsyncSession``: give
  :func:`use_session` a sync ``sessionmaker`` on a sync engine for the same database.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeAlias

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, Session

from pgjobs.errors import ConfigurationError, DeserializationError
from pgjobs.hooks import unwrap_jobs, wrap_jobs
from pgjobs.jobs.base import ConfiguredJob, Job, JobFunction, Options
from pgjobs.serialization import register_records

__all__ = [
    "KIND",
    "Enqueueable",
    "bind",
    "job_session",
    "session",
    "session_factory",
    "use_session",
]

KIND = "sqlalchemy"

SessionFactory = Callable[[], Session]

_factory: SessionFactory | None = None


class _JobSession:
    """The session of the job being run: made on first use, closed when the job ends."""

    __slots__ = ("factory", "opened")

    def __init__(self, factory: SessionFactory) -> None:
        self.factory = factory
        self.opened: Session | None = None

    def get(self) -> Session:
        if self.opened is None:
            made = self.factory()
            if not isinstance(made, Session):
                raise ConfigurationError(
                    f"the session factory given to pgjobs.contrib.sqlalchemy.use_session returned "
                    f"{type(made).__qualname__}, not a sqlalchemy.orm.Session: give it a sync "
                    "sessionmaker (an AsyncSession cannot load in the worker's thread)"
                )
            self.opened = made
        return self.opened


# A ContextVar, not a thread-local: an async perform runs on the worker's event loop, in a task
# that copies the context of the thread that waits for it, so it sees this job's session too.
_current: ContextVar[_JobSession | None] = ContextVar("pgjobs_sqlalchemy_job", default=None)


def use_session(factory: SessionFactory | None) -> SessionFactory | None:
    """Load records through sessions made by ``factory`` (a sync ``sessionmaker``), one per job.

    Call it at start-up in the module ``pgjobs start --app`` imports; it registers the per-job
    session with :func:`pgjobs.wrap_jobs`.  ``None`` unregisters it.  Returns the previous
    factory.  An ``async_sessionmaker`` is refused (ConfigurationError): the worker loads
    records in the job's thread, synchronously.
    """
    global _factory
    if factory is not None:
        if not callable(factory):
            raise ConfigurationError(
                f"pgjobs.contrib.sqlalchemy.use_session(factory): factory must be a callable "
                f"returning a Session (e.g. sqlalchemy.orm.sessionmaker(engine)), got {factory!r}"
            )
        from sqlalchemy.ext.asyncio import async_sessionmaker

        if isinstance(factory, async_sessionmaker):
            raise ConfigurationError(
                "pgjobs.contrib.sqlalchemy.use_session(factory): an async_sessionmaker cannot "
                "load records in the worker's thread; give a sync sessionmaker on a sync engine "
                "for the same database: sessionmaker(create_engine('postgresql+psycopg://...'))"
            )
    previous, _factory = _factory, factory
    if factory is None:
        unwrap_jobs(_wrap)
    else:
        wrap_jobs(_wrap)
    return previous


def session_factory() -> SessionFactory | None:
    """The factory given to :func:`use_session`, or None."""
    return _factory


@contextmanager
def job_session() -> Iterator[None]:
    """A job's session scope: records load through one session, closed on exit.

    The worker enters it around every job once :func:`use_session` is called; enter it yourself
    to decode records or call :func:`session` outside a worker (``perform_now``, scripts, tests).
    Inside one already, it adds nothing.
    """
    factory = _factory
    if factory is None:
        raise ConfigurationError(
            "no SQLAlchemy session factory: call pgjobs.contrib.sqlalchemy.use_session("
            "sessionmaker(engine)) at start-up (in the module `pgjobs start --app` imports)"
        )
    if _current.get() is not None:
        yield
        return
    scope = _JobSession(factory)
    token = _current.set(scope)
    try:
        yield
    finally:
        _current.reset(token)
        if scope.opened is not None:
            scope.opened.close()  # rolls back what the job did not commit


def _wrap(claimed: object) -> Any:
    return job_session()


def session() -> Session:
    """The current job's session (the one its records were loaded through), opened on first use.

    Only inside a job run by a worker (after :func:`use_session`), or inside
    :func:`job_session`; elsewhere ConfigurationError.
    """
    scope = _current.get()
    if scope is None:
        raise ConfigurationError(
            "pgjobs.contrib.sqlalchemy.session() is only available while a worker runs a job "
            "(after pgjobs.contrib.sqlalchemy.use_session(...)) or inside "
            "`with pgjobs.contrib.sqlalchemy.job_session():`"
        )
    return scope.get()


# -- enqueueing on a session (for the framework integrations) -------------------------------------

Enqueueable: TypeAlias = type[Job] | JobFunction[..., Any] | ConfiguredJob | Job


def bind(connection: Any, job: Enqueueable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Job:
    """The job to write on ``connection`` (a session or connection: see ``Job.set``), from a job
    class, a ``@pgjobs.job`` function or ``Job.set(...)`` with ``perform``'s arguments, or from a
    built job alone."""
    if isinstance(job, Job):
        if args or kwargs:
            raise TypeError(
                f"{job!r} was built with its arguments already: pass its class with the "
                "arguments, or the built job alone"
            )
        return job.with_options(Options(connection=connection))
    if isinstance(job, ConfiguredJob | JobFunction) or (
        isinstance(job, type) and issubclass(job, Job)
    ):
        return job.set(connection=connection).build(*args, **kwargs)
    raise TypeError(
        "the job to enqueue must be a pgjobs.Job subclass, a @pgjobs.job function, Job.set(...) "
        f"or a built job, got {job!r}"
    )


# -- the record kind ------------------------------------------------------------------------------


def _is_mapped(cls: type) -> bool:
    return isinstance(sa_inspect(cls, raiseerr=False), Mapper)


def _reference(instance: object) -> list[Any]:
    cls = type(instance)
    if "<locals>" in cls.__qualname__:
        raise ValueError(
            f"model {cls.__module__}.{cls.__qualname__} is defined in a function: a worker "
            "could not import it; define it at module level"
        )
    state = sa_inspect(instance)
    identity = state.identity
    if identity is None:
        where = "pending in a session, not flushed" if state.pending else "not added to a session"
        raise ValueError(
            f"this {cls.__name__} has no primary key yet ({where}): flush the session first "
            "(session.flush(), or await session.flush()) so the job can refer to its row"
        )
    return [f"{cls.__module__}:{cls.__qualname__}", list(identity)]


def _mapped_class(name: str) -> type:
    module, _, qualname = name.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise DeserializationError(f"cannot import the model class {name!r}: {exc}") from exc
    if not (isinstance(found, type) and _is_mapped(found)):
        raise DeserializationError(f"{name!r} is not a SQLAlchemy mapped class")
    return found


def _load(reference: Any) -> object:
    name, identity = reference
    cls = _mapped_class(name)
    loaded = session().get(cls, tuple(identity))
    if loaded is None:
        key = identity[0] if len(identity) == 1 else tuple(identity)
        raise DeserializationError(f"{cls.__name__} {key!r} no longer exists")
    return loaded


register_records(KIND, match=_is_mapped, reference=_reference, load=_load)
