"""The pgjobs dashboard in a Django project, behind Django's own login (staff only).

The dashboard is an ASGI (Starlette) application; route a prefix of an ASGI Django deployment
to it in ``asgi.py``::

    import os

    from django.core.asgi import get_asgi_application

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    django_app = get_asgi_application()  # sets Django up: import pgjobs' part after it

    from pgjobs.contrib.django import with_dashboard

    application = with_dashboard(django_app, prefix="/jobs")

Every request to ``/jobs/...`` is checked against Django's session (the
``SESSION_COOKIE_NAME`` cookie, ``SESSION_ENGINE``, ``django.contrib.auth.get_user``): an
anonymous visitor is redirected to ``settings.LOGIN_URL?next=...``; a logged-in user who is not
active staff gets 403 (``allow=`` changes who may enter).  The dashboard's CSRF tokens are
signed with a key derived from ``SECRET_KEY``, so every web process accepts every other's forms.
Its database is pgjobs' default, on the ``settings.PGJOBS["DATABASE"]`` alias.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import auth
from django.db import close_old_connections
from django.http import HttpRequest
from django.shortcuts import resolve_url
from django.utils.crypto import salted_hmac
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from pgjobs.web import create_app

USER_KEY = "pgjobs.django.user"  # where the request's Django user is kept in the ASGI scope


def is_staff(user: Any) -> bool:
    return bool(user.is_active and user.is_staff)


def _user(session_key: str | None) -> Any:
    """The Django user of a session key (AnonymousUser without one), as a view would see it."""
    close_old_connections()  # what Django's request_started does: not inside Django here
    try:
        request = HttpRequest()
        engine = import_module(settings.SESSION_ENGINE)
        request.session = engine.SessionStore(session_key)
        return auth.get_user(request)
    finally:
        close_old_connections()


class DjangoLogin:
    """ASGI middleware: finds the Django user of each HTTP request and sends an anonymous one to
    ``settings.LOGIN_URL``; the dashboard's own guard then admits only those ``allow`` accepts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        key = request.cookies.get(settings.SESSION_COOKIE_NAME)
        user = await sync_to_async(_user, thread_sensitive=True)(key)
        scope[USER_KEY] = user
        if not user.is_authenticated:
            path, root = scope.get("path", ""), scope.get("root_path", "")
            here = path if path.startswith(root) else root + path  # ASGI: path includes root_path
            if request.url.query:
                here += "?" + request.url.query
            target = resolve_url(settings.LOGIN_URL)
            sep = "&" if "?" in target else "?"
            await RedirectResponse(f"{target}{sep}{urlencode({'next': here})}", 302)(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)


def dashboard_app(*, allow: Callable[[Any], bool] = is_staff, **options: Any) -> ASGIApp:
    """The dashboard behind Django's login; ``allow(user)`` (default: active staff) decides who
    enters.  ``options`` go to :func:`pgjobs.web.create_app` (``read_only``, ``config``, ...)."""
    from pgjobs.config.queue import load_config
    from pgjobs.contrib.django import conf

    def authorize(request: Request) -> bool:
        user = request.scope.get(USER_KEY)
        return user is not None and allow(user)

    options.setdefault("config", load_config(conf.load().config))
    options.setdefault(
        "secret_key", salted_hmac("pgjobs.dashboard", "csrf", algorithm="sha256").digest()
    )
    return DjangoLogin(create_app(authorize=authorize, **options))


def with_dashboard(django_app: ASGIApp, *, prefix: str = "/jobs", **options: Any) -> Starlette:
    """One ASGI application: ``prefix`` goes to :func:`dashboard_app`, the rest to Django."""
    if not prefix.startswith("/") or prefix.endswith("/") or len(prefix) < 2:
        raise ValueError(
            f"prefix must look like '/jobs' (a leading '/', no trailing one): {prefix!r}"
        )
    return Starlette(
        routes=[Mount(prefix, app=dashboard_app(**options)), Mount("/", app=django_app)]
    )
