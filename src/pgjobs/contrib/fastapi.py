"""FastAPI: pgjobs in the application's lifespan, enqueueing inside the request's transaction, and
the dashboard behind the application's own auth.  ``pip install "pgjobs[fastapi,web]"``.

::

    from typing import Annotated

    from fastapi import Depends, FastAPI
    from pgjobs.contrib.fastapi import Enqueuer, enqueuer, lifespan, mount_dashboard

    app = FastAPI(lifespan=lifespan())  # pgjobs.configure() at start-up, its pools closed at exit


    async def get_session() -> AsyncIterator[AsyncSession]:
        async with SessionLocal() as session:  # async_sessionmaker on postgresql+psycopg://
            yield session


    @app.post("/users")
    async def sign_up(
        email: str,
        session: Annotated[AsyncSession, Depends(get_session)],
        enqueue: Annotated[Enqueuer, Depends(enqueuer(get_session))],
    ) -> dict[str, int]:
        user = User(email=email)
        session.add(user)
        await session.flush()  # the user has its id: the job can refer to it
        await enqueue(SendWelcome, user)  # written in the session's transaction
        await session.commit()  # the user and the job, or neither
        return {"id": user.id}


    mount_dashboard(app, "/jobs", dependencies=[Depends(require_admin)])

FastAPI caches a dependency per request, so ``enqueuer(get_session)`` and the route share one
session.  The job is written on the session's connection, inside its transaction: it exists if
and only if that transaction commits (a request that fails or never commits leaves no job).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session
from starlette.types import ASGIApp, Receive, Scope, Send

from pgjobs.contrib.sqlalchemy import Enqueueable, bind
from pgjobs.enqueue.core import perform_all_later_async
from pgjobs.enqueue.handle import EnqueuedJob
from pgjobs.errors import ConfigurationError
from pgjobs.jobs.base import Job
from pgjobs.runtime import configure

__all__ = ["Enqueuer", "enqueuer", "lifespan", "mount_dashboard"]

AsyncTarget: TypeAlias = AsyncSession | AsyncConnection | async_scoped_session[AsyncSession]


def lifespan(
    url: str | None = None,
    *,
    schema: str | None = None,
    pool_size: int | None = None,
    config_path: str | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan: ``pgjobs.configure(url, ...)`` at start-up, its pool opened there (an
    unreachable database fails the start-up, not the first request), closed at shutdown.

    Arguments as for :func:`pgjobs.configure` (default: ``PGJOBS_DATABASE_URL``, queue.yml, ...).
    ``FastAPI(lifespan=lifespan())``; inside a lifespan of your own,
    ``async with lifespan()(app): yield``.
    """

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        # In a thread: without a URL, configure() may start the embedded server and migrate it.
        database = await run_in_threadpool(
            lambda: configure(url, schema=schema, pool_size=pool_size, config_path=config_path)
        )
        try:
            async with database.async_connection():
                pass  # opens the pool: a database that is down fails the start-up
            yield
        finally:
            await database.close_async()

    return run


class Enqueuer:
    """Enqueues jobs on one SQLAlchemy ``AsyncSession`` (or ``AsyncConnection``), inside its
    transaction: they commit or roll back with it.  Got from :func:`enqueuer` in a route.

    ``await enqueue(SendWelcome, user)`` enqueues a job class, a ``@pgjobs.job`` function or
    ``Job.set(...)`` with the arguments of ``perform``, or a built job (``SendWelcome(user)``)
    alone; ``await enqueue.all([...])`` enqueues built jobs in bulk
    (:func:`pgjobs.perform_all_later`).
    """

    def __init__(self, connection: AsyncTarget) -> None:
        self.connection = connection

    async def __call__(self, job: Enqueueable, /, *args: Any, **kwargs: Any) -> EnqueuedJob:
        return await bind(self.connection, job, args, kwargs).enqueue_async()

    async def all(self, jobs: Sequence[Job]) -> list[EnqueuedJob]:
        """Enqueue built jobs in a few statements, inside the session's transaction."""
        return await perform_all_later_async(jobs, connection=self.connection)


def enqueuer(
    session_dependency: Callable[..., Any],
) -> Callable[..., Coroutine[Any, Any, Enqueuer]]:
    """A dependency giving an :class:`Enqueuer` bound to the request's session, the one that
    ``session_dependency`` (your ``get_session``) gives the route:
    ``Depends(enqueuer(get_session))``.

    The session must be an ``AsyncSession`` (or ``AsyncConnection``) on the
    ``postgresql+psycopg`` driver.  With a sync ``Session``, enqueue directly:
    ``SendWelcome.set(connection=session).perform_later(user)``.
    """
    name = getattr(session_dependency, "__qualname__", repr(session_dependency))

    async def dependency(session: Any = Depends(session_dependency)) -> Enqueuer:  # noqa: B008
        if not isinstance(session, AsyncSession | AsyncConnection | async_scoped_session):
            raise ConfigurationError(
                f"enqueuer({name}): the dependency gave {type(session).__qualname__}, not a "
                "SQLAlchemy AsyncSession or AsyncConnection (with a sync Session, enqueue with "
                "Job.set(connection=session).perform_later(...))"
            )
        return Enqueuer(session)

    dependency.__name__ = f"pgjobs_enqueuer_{getattr(session_dependency, '__name__', 'session')}"
    return dependency


# -- the dashboard --------------------------------------------------------------------------------


class _Forward(Response):
    """A route's answer that hands the request over to the dashboard (an ASGI app) under
    ``root``: how the dashboard runs behind FastAPI dependencies, which a mount cannot have."""

    def __init__(self, app: ASGIApp, root: str) -> None:
        super().__init__()
        self.app, self.root = app, root

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = {k: v for k, v in scope.items() if k not in ("router", "route", "endpoint")}
        inner["root_path"] = self.root  # as a Mount would set it: links and cookies use it
        inner["path_params"] = {}
        await self.app(inner, receive, send)


def mount_dashboard(
    app: FastAPI,
    path: str = "/jobs",
    *,
    dependencies: Sequence[Any] = (),
    **options: Any,
) -> ASGIApp:
    """Serve the dashboard (:func:`pgjobs.web.create_app`) under ``path``, behind
    ``dependencies``: the application's own auth, e.g. ``[Depends(require_admin)]``.

    Every request to the dashboard (pages, actions, static files) runs them first, as for any
    route: one that raises ``HTTPException(401)`` or ``(403)`` refuses it, and
    ``app.dependency_overrides`` apply.  With dependencies, the dashboard's own basic auth is off
    unless ``username=``/``password=`` are given too; without, ``options`` must open it as
    :func:`~pgjobs.web.create_app` requires (``username=``/``password=``, ``authorize=``,
    ``no_auth=True``, or ``PGJOBS_WEB_USERNAME``/``PGJOBS_WEB_PASSWORD``).  ``options`` go to
    ``create_app`` (``read_only``, ``secret_key`` — give one when several processes serve the
    app —, ``database``, ...).  Returns the dashboard app.
    """
    from pgjobs.web import create_app

    if not path.startswith("/") or path == "/" or path.endswith("/"):
        raise ConfigurationError(
            f"mount_dashboard(app, path={path!r}): path must start with '/' and not end with "
            "one, e.g. '/jobs'"
        )
    if dependencies and not {"authorize", "no_auth", "username", "password"} & set(options):
        options["authorize"] = _allowed  # the dependencies have decided already
    try:
        dashboard = create_app(**options)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc}; or, with mount_dashboard, dependencies=[Depends(...)] (your own auth)"
        ) from None

    async def forward(request: Request) -> Response:
        root = str(request.scope.get("root_path", "")).rstrip("/") + path
        return _Forward(dashboard, root)

    async def add_slash(request: Request) -> Response:
        return RedirectResponse(request.url.replace(path=request.url.path + "/"), 307)

    methods = ["GET", "HEAD", "POST"]
    shared: dict[str, Any] = {"dependencies": list(dependencies), "include_in_schema": False}
    app.add_api_route(path, add_slash, methods=methods, **shared)
    app.add_api_route(path + "/{path:path}", forward, methods=methods, **shared)
    return dashboard


def _allowed(request: Any) -> bool:
    return True
