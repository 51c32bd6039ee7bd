"""What every handler of the dashboard needs (:class:`Dashboard`: the database, the options, the
templates and the signer) and how it finds it (:func:`dashboard`).

A leaf of :mod:`pgjobs.web`: the pages and the actions import it, :mod:`pgjobs.web.app` builds
the :class:`Dashboard` and imports them, so no module of the dashboard imports its importer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from pgjobs import clock
from pgjobs.db.database import Database
from pgjobs.web import fmt
from pgjobs.web.security import (
    CSRF_COOKIE,
    FLASH_COOKIE,
    Signer,
    cookie_path,
    new_nonce,
    route_path,
)

T = TypeVar("T")


@dataclass
class Dashboard:
    """What every handler needs: the database, the options, the templates and the signer."""

    database_source: Callable[[], Database]
    read_only: bool
    alive_threshold: float  # seconds without a heartbeat after which a process is dead
    signer: Signer
    templates: jinja2.Environment
    batch_size: int = 1000
    _database: Database | None = None
    metrics: Any = None  # the /metrics registry, made at its first request

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = self.database_source()
        return self._database

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        database = self.database
        with database.connection() as conn:
            return fn(conn, database.schema, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, schema, *args)`` on a pooled connection, in the thread pool."""
        return await run_in_threadpool(self._read, fn, *args)

    def render(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        nonce = request.cookies.get(CSRF_COOKIE) or new_nonce()
        flash = self.signer.unseal(request.cookies.get(FLASH_COOKIE))
        root = str(request.scope.get("root_path", "")).rstrip("/")
        now = clock.now()

        def route(name: str, query: dict[str, Any] | None = None, **params: Any) -> str:
            """The path of a page inside the dashboard (what forms send back as return_to)."""
            path = str(request.app.url_path_for(name, **params))
            given = {k: v for k, v in (query or {}).items() if v not in (None, "")}
            return path + (f"?{urlencode(given)}" if given else "")

        def url(name: str, query: dict[str, Any] | None = None, **params: Any) -> str:
            return root + route(name, query, **params)

        html = self.templates.get_template(template).render(
            {
                **context,
                "url": url,
                "route": route,
                "static": lambda name: f"{root}/static/{name}",
                "here": route_path(request.scope)
                + (f"?{request.url.query}" if request.url.query else ""),
                "csrf_token": self.signer.csrf_token(nonce),
                "read_only": self.read_only,
                "flash": flash,
                "now": now,
                "ago": lambda moment: fmt.age(moment, now),
            }
        )
        response = HTMLResponse(html, status)
        secure = request.url.scheme == "https"
        path = cookie_path(request)
        if request.cookies.get(CSRF_COOKIE) != nonce:
            response.set_cookie(
                CSRF_COOKIE, nonce, path=path, httponly=True, samesite="strict", secure=secure
            )
        if FLASH_COOKIE in request.cookies:
            response.delete_cookie(FLASH_COOKIE, path=path)
        return response


def dashboard(request: Request) -> Dashboard:
    found = request.app.state.dashboard
    assert isinstance(found, Dashboard)
    return found
