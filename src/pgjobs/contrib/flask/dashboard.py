"""The dashboard inside a Flask app, behind the app's own auth, as a blueprint.

::

    from pgjobs.contrib.flask.dashboard import dashboard_blueprint

    app.register_blueprint(
        dashboard_blueprint(authorize=lambda: current_user.is_admin), url_prefix="/jobs"
    )

The dashboard is an ASGI app (:func:`pgjobs.web.create_app`) and Flask speaks WSGI: each request
to the blueprint runs the app's checks in Flask's request context (``authorize``,
``decorators`` such as ``login_required``, the blueprint's ``before_request`` functions), then
hands the request to the dashboard through ``a2wsgi.ASGIMiddleware`` (an ASGI-to-WSGI bridge: it
runs the dashboard on an event loop in a thread of its own) and returns its answer, buffered.
The dashboard's pages are small, so buffering costs nothing noticeable.

Without ``a2wsgi`` (``pip install "pgjobs[flask,web]"``), or to keep the dashboard out of the
Flask process, serve it on its own: ``flask pgjobs web`` (basic auth, same database settings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, abort, request
from werkzeug.wrappers import Response

from pgjobs.errors import ConfigurationError

__all__ = ["dashboard_blueprint"]

INSTALL_HINT = (
    "the dashboard in a Flask app needs a2wsgi (the ASGI-to-WSGI bridge) and the dashboard's "
    'packages: pip install "pgjobs[flask,web]"; or serve it on its own with flask pgjobs web'
)
View = Callable[..., Any]


def dashboard_blueprint(
    *,
    authorize: Callable[[], bool] | None = None,
    decorators: Sequence[Callable[[View], View]] = (),
    name: str = "pgjobs_dashboard",
    **options: Any,
) -> Blueprint:
    """The dashboard as a blueprint; register it with a ``url_prefix`` (e.g. ``"/jobs"``).

    Guard it with the app's own auth: ``authorize()`` (called in the request context, so
    ``current_user``, ``session`` and ``g`` work; False answers 403, and it may ``abort(401)``
    or redirect itself), ``decorators`` applied to the view (``[login_required]``), or both.
    With either, the dashboard's own basic auth is off (unless ``username=``/``password=`` are
    given too); without, ``options`` must open it as
    :func:`pgjobs.web.create_app` requires (``username=``/``password=``, ``authorize=``,
    ``no_auth=True``, or ``PGJOBS_WEB_USERNAME``/``PGJOBS_WEB_PASSWORD``).  Other ``options``
    go to ``create_app`` (``read_only``, ``secret_key`` — give one when several processes serve
    the app —, ``database``, ...).
    """
    try:
        from a2wsgi import ASGIMiddleware

        from pgjobs.web import create_app
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc.name} is missing)") from exc

    guarded = authorize is not None or bool(decorators)
    if guarded and not {"authorize", "no_auth", "username", "password"} & set(options):
        options["authorize"] = _allowed  # the app's checks have decided already
    try:
        dashboard = create_app(**options)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc}; or, in Flask, dashboard_blueprint(authorize=...) or decorators=[...]"
        ) from None
    # a2wsgi's own WSGI and ASGI type names differ from werkzeug's and Starlette's: same protocol.
    bridge: Any = ASGIMiddleware(dashboard)  # type: ignore[arg-type]

    def dashboard_view(path: str = "") -> Response:
        if authorize is not None and not authorize():
            abort(403)
        rule = request.url_rule.rule if request.url_rule is not None else ""
        prefix = rule.removesuffix("<path:path>").rstrip("/")  # where the blueprint is
        environ = dict(request.environ)
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = str(environ.get("PATH_INFO", ""))[len(prefix) :] or "/"
        return Response.from_app(bridge, environ, buffered=True)

    view: View = dashboard_view
    for decorate in decorators:
        view = decorate(view)
    blueprint = Blueprint(name, __name__)
    methods = ["GET", "POST"]
    blueprint.add_url_rule("/", "dashboard", view, defaults={"path": ""}, methods=methods)
    blueprint.add_url_rule("/<path:path>", "dashboard", view, methods=methods)
    return blueprint


def _allowed(request: Any) -> bool:
    return True
