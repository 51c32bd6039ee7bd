"""The dashboard's doors: who may see it, which POSTs are genuine, and the headers on every answer.

- **Authentication**, on every request (static files included), by :class:`Guard`: HTTP basic
  auth compared in constant time (``hmac.compare_digest``, both fields always compared), or the
  application's ``authorize(request)`` callable, or nothing when explicitly disabled.  No
  credentials → 401 with a ``WWW-Authenticate`` challenge; ``authorize`` saying no → 403.
- **CSRF**: a signed double-submit token.  Every page sets a random nonce in an HttpOnly,
  SameSite=Strict cookie scoped to the dashboard's path, and every form carries
  ``HMAC(secret, nonce)``; a POST whose token does not match its cookie is refused (403).  An
  attacker can neither read the cookie nor compute the token without the secret.
- **Flash messages** travel in a signed cookie from an action to the page it redirects to
  (POST-redirect-GET), so a reload never repeats an action.
- **Headers**: a strict Content-Security-Policy (no inline script, no framing), ``nosniff``,
  ``no-store`` for pages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Authorize = Callable[[Request], bool | Awaitable[bool]]

CSRF_COOKIE = "pgjobs_csrf"
FLASH_COOKIE = "pgjobs_flash"
CSRF_FIELD = "csrf_token"
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)

    def accepts(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials (constant time)."""
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, colon, password = decoded.partition(":")
        same_user = hmac.compare_digest(user.encode(), self.username.encode())
        same_password = hmac.compare_digest(password.encode(), self.password.encode())
        return bool(colon) and same_user and same_password


class Signer:
    """HMAC-SHA256 signatures with the dashboard's secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def sign(self, purpose: str, value: str) -> str:
        message = f"{purpose}:{value}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, purpose: str, value: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(purpose, value), signature)

    def csrf_token(self, nonce: str) -> str:
        return self.sign("csrf", nonce)

    def seal(self, data: dict[str, Any]) -> str:
        """``data`` as a signed cookie value."""
        payload = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
        return f"{payload}.{self.sign('flash', payload)}"

    def unseal(self, value: str | None) -> dict[str, Any] | None:
        """The data of a value made by :meth:`seal`; None if missing, forged or malformed."""
        payload, _, signature = (value or "").partition(".")
        if not payload or not self.verify("flash", payload, signature):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):
            return None
        return data if isinstance(data, dict) else None


def derive_secret(secret: str | bytes | None, basic: BasicAuth | None) -> bytes:
    """The signing secret: the one given; else derived from the basic-auth credentials (so every
    process serving the dashboard agrees); else random for this process."""
    if secret:
        return secret.encode() if isinstance(secret, str) else secret
    if basic is not None:
        material = f"pgjobs-web\0{basic.username}\0{basic.password}".encode()
        return hashlib.sha256(material).digest()
    return secrets.token_bytes(32)


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(request: Request, signer: Signer, token: object) -> bool:
    """Whether a POST's form token matches its CSRF cookie."""
    nonce = request.cookies.get(CSRF_COOKIE)
    return bool(nonce) and isinstance(token, str) and signer.verify("csrf", str(nonce), token)


def route_path(scope: Scope) -> str:
    """The request's path inside the dashboard (without the prefix it is mounted or served at)."""
    root = str(scope.get("root_path", "")).rstrip("/")
    path = str(scope.get("path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def cookie_path(request: Request) -> str:
    """The dashboard's own path, so its cookies go only to it (and mounts do not collide)."""
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


class Guard:
    """ASGI middleware: authenticates every HTTP request and adds the security headers."""

    def __init__(
        self, app: ASGIApp, *, basic: BasicAuth | None, authorize: Authorize | None
    ) -> None:
        self.app = app
        self.basic = basic
        self.authorize = authorize

    async def _denied(self, request: Request) -> Response | None:
        if self.basic is not None and not self.basic.accepts(request.headers.get("authorization")):
            challenge = {"www-authenticate": 'Basic realm="pgjobs", charset="UTF-8"'}
            return PlainTextResponse("Authentication required.", 401, headers=challenge)
        if self.authorize is not None:
            allowed = self.authorize(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                return PlainTextResponse("Forbidden.", 403)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = route_path(scope).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                cache = "private, max-age=3600" if static else "no-store"
                headers.setdefault("cache-control", cache)
            await send(message)

        denied = await self._denied(Request(scope, receive))
        if denied is not None:
            await denied(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
