"""The pgjobs dashboard: a server-rendered ASGI app (Starlette + Jinja2).

Install it with ``pip install "pgjobs[web]"``.

::

    from pgjobs.web import create_app

    app.mount("/jobs", create_app())          # FastAPI / Starlette, under a prefix
    # or on its own:  pgjobs web --host 127.0.0.1 --port 8080

Closed by default: HTTP basic auth (``PGJOBS_WEB_USERNAME`` / ``PGJOBS_WEB_PASSWORD`` or the
``web:`` section of queue.yml), an ``authorize(request)`` callable, or ``no_auth=True``.
``docs/dashboard.md`` describes the pages, the security model and how each page stays fast on
big tables.
"""

from __future__ import annotations

INSTALL_HINT = 'the pgjobs dashboard needs its extra dependencies: pip install "pgjobs[web]"'

try:
    import jinja2  # noqa: F401
    import python_multipart  # noqa: F401  (Starlette's form parser)
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(f"{INSTALL_HINT} ({exc.name} is missing)") from exc

from pgjobs.web.app import create_app  # noqa: E402  (after the check of the extra)
from pgjobs.web.security import Authorize  # noqa: E402

__all__ = ["INSTALL_HINT", "Authorize", "create_app"]
