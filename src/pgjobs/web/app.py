"""``create_app``: the dashboard as an ASGI application.

The app is a Starlette application whose routes are the pages (:mod:`pgjobs.web.pages`, and the
batch pages in :mod:`pgjobs.web.batches`) and the actions (:mod:`pgjobs.web.actions`), wrapped in
:class:`pgjobs.web.security.Guard`; what their handlers share is the
:class:`pgjobs.web.state.Dashboard` built here.  Every link and form is built from the request's
``root_path``, so the app works at ``/`` (``pgjobs web``) and mounted under any prefix.  Database
work runs in Starlette's thread pool on pgjobs' own (synchronous) connection pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import jinja2
import psycopg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from pgjobs.config.queue import Config, load_config
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError, DatabaseError
from pgjobs.operations.batches import progress_line
from pgjobs.web import actions, batches, fmt, pages
from pgjobs.web.security import Authorize, BasicAuth, Guard, Signer, derive_secret
from pgjobs.web.state import Dashboard, dashboard

__all__ = ["Dashboard", "create_app", "dashboard"]

HERE = Path(__file__).resolve().parent
CLOSED = (
    "the pgjobs dashboard is closed by default: set PGJOBS_WEB_USERNAME and PGJOBS_WEB_PASSWORD "
    "(or username/password under web: in queue.yml), pass username= and password=, or "
    "authorize=, or no_auth=True to open it to anyone who can reach it"
)


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value from the database is escaped on output
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        count=fmt.count,
        human=fmt.human,
        duration=fmt.duration,
        timestamp=fmt.timestamp,
        amount=fmt.amount,
        percent=fmt.percent,
        short_id=fmt.short_id,
        pretty_json=fmt.pretty_json,
        batch_segments=fmt.batch_segments,
        batch_summary=fmt.batch_summary,
        batch_progress=progress_line,
    )
    return env


def _credentials(
    username: str | None, password: str | None, config: Callable[[], Config]
) -> BasicAuth | None:
    if username is not None or password is not None:
        source = "username= and password="
    elif os.environ.get("PGJOBS_WEB_USERNAME") or os.environ.get("PGJOBS_WEB_PASSWORD"):
        username = os.environ.get("PGJOBS_WEB_USERNAME")
        password = os.environ.get("PGJOBS_WEB_PASSWORD")
        source = "PGJOBS_WEB_USERNAME and PGJOBS_WEB_PASSWORD"
    else:
        web = config().web
        username, password, source = web.username, web.password, "web: in queue.yml"
    if not username and not password:
        return None
    if not username or not password:
        raise ConfigurationError(f"the dashboard needs both a username and a password ({source})")
    return BasicAuth(username, password)


def create_app(
    database: Database | str | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    authorize: Authorize | None = None,
    no_auth: bool = False,
    read_only: bool | None = None,
    secret_key: str | bytes | None = None,
    schema: str | None = None,
    config: Config | None = None,
    process_alive_threshold: float | None = None,
) -> Starlette:
    """The dashboard as an ASGI app, to serve on its own or to mount under a prefix.

    ``database``: a :class:`~pgjobs.db.database.Database`, a URL (with ``schema``), or None
    for pgjobs' default database (``pgjobs.configure`` / ``PGJOBS_DATABASE_URL``), resolved at
    the first request.  Access: HTTP basic auth with ``username``/``password`` (default:
    ``PGJOBS_WEB_USERNAME``/``PGJOBS_WEB_PASSWORD``, else the ``web:`` section of queue.yml);
    or ``authorize(request) -> bool`` (may be async) for an application that has its own login;
    or ``no_auth=True``.  With none of them, ConfigurationError: the dashboard is closed by
    default.  ``read_only`` (default: ``web: read_only`` in queue.yml) hides and refuses every
    action.  ``secret_key`` signs CSRF tokens and flash cookies (default: derived from the
    basic-auth credentials, else random per process: give one when several processes serve
    the dashboard behind ``authorize``).  ``process_alive_threshold`` (default: queue.yml's)
    is when a process without heartbeat is shown as dead.
    """
    loaded: list[Config] = [config] if config is not None else []

    def settings() -> Config:
        if not loaded:
            loaded.append(load_config())
        return loaded[0]

    basic = None if authorize is not None or no_auth else _credentials(username, password, settings)
    if basic is None and authorize is None and not no_auth:
        raise ConfigurationError(CLOSED)
    if isinstance(database, Database):
        given = database
        source: Callable[[], Database] = lambda: given  # noqa: E731
    elif isinstance(database, str):
        url = database

        def source() -> Database:
            # Behind PgBouncer: PGJOBS_TRANSACTION_POOLING / queue.yml apply to this URL too.
            from pgjobs.config import settings as database_settings

            cfg = settings()
            chosen = database_settings.resolve(
                url,
                schema=schema,
                config_schema=cfg.schema,
                config_direct_url=cfg.direct_database_url,
                config_transaction_pooling=cfg.transaction_pooling,
            )
            assert chosen is not None
            return chosen.open(application_name="pgjobs-web")
    else:
        from pgjobs.runtime import get_database

        source = get_database
    state = Dashboard(
        database_source=source,
        read_only=settings().web.read_only if read_only is None else read_only,
        alive_threshold=process_alive_threshold or settings().process_alive_threshold,
        signer=Signer(derive_secret(secret_key, basic)),
        templates=_templates(),
    )
    static = StaticFiles(directory=HERE / "static")
    app = Starlette(
        routes=[
            *pages.ROUTES,
            *batches.ROUTES,
            *actions.ROUTES,
            Mount("/static", app=static, name="static"),
        ],
        middleware=[Middleware(Guard, basic=basic, authorize=authorize)],
        exception_handlers={
            DatabaseError: _unavailable,
            psycopg.OperationalError: _unavailable,
        },
    )
    app.state.dashboard = state
    return app


async def _unavailable(request: Request, exc: Exception) -> Response:
    """The database is down or not migrated: say so instead of a traceback."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return dashboard(request).render(request, "error.html", {"message": message}, 503)
