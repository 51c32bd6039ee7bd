"""pgjobs' settings in a Flask app's ``app.config`` (the table is in :mod:`pgjobs.contrib.flask`):
read and checked by :func:`settings`, for ``PgJobs.init_app`` and for the ``flask pgjobs``
commands (:mod:`pgjobs.contrib.flask.cli`), which import this leaf rather than the extension.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from os import PathLike
from typing import Any

from flask import Flask

from pgjobs.db.urls import is_url, psycopg_url
from pgjobs.errors import ConfigurationError

__all__ = ["KEYS", "Settings", "settings"]

KEYS = ("PGJOBS_DATABASE_URL", "PGJOBS_SCHEMA", "PGJOBS_CONFIG", "PGJOBS_POOL_SIZE")


@dataclass(frozen=True)
class Settings:
    """pgjobs' settings read from a Flask app's config (see the module docstring)."""

    url: str | None
    source: str  # where url came from, for messages
    schema: str | None
    config: str | None
    pool_size: int | None

    @property
    def given(self) -> bool:
        """Whether the app names anything, so that pgjobs must be configured from it."""
        return any(v is not None for v in (self.url, self.schema, self.config, self.pool_size))


def _text(config: Any, key: str) -> str | None:
    value = config.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, PathLike) and key == "PGJOBS_CONFIG":
        return str(value)
    if not isinstance(value, str):
        raise ConfigurationError(f"app.config[{key!r}] must be a string, got {value!r}")
    return value


def settings(app: Flask) -> Settings:
    """Read and check pgjobs' settings in ``app.config``: every problem is a ConfigurationError
    naming the key (an unknown ``PGJOBS_*`` key gets a suggestion)."""
    config = app.config
    for key in config:
        if key.startswith("PGJOBS_") and key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigurationError(
                f"unknown setting app.config[{key!r}]: {hint}pgjobs reads {', '.join(KEYS)}"
            )
    url, source = _text(config, "PGJOBS_DATABASE_URL"), "PGJOBS_DATABASE_URL"
    if url is not None and not is_url(url) and "=" not in url:
        raise ConfigurationError(
            f"app.config['PGJOBS_DATABASE_URL'] must be a PostgreSQL URL "
            f"(postgresql://user@host/db or postgresql+psycopg://...), got {url!r}"
        )
    if url is None:
        url, source = (
            _sqlalchemy_url(config.get("SQLALCHEMY_DATABASE_URI")),
            "SQLALCHEMY_DATABASE_URI",
        )
    pool_size = config.get("PGJOBS_POOL_SIZE")
    if pool_size is not None and (
        isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1
    ):
        raise ConfigurationError(
            f"app.config['PGJOBS_POOL_SIZE'] must be a positive int, got {pool_size!r}"
        )
    return Settings(
        url=url,
        source=source if url is not None else "pgjobs' defaults",
        schema=_text(config, "PGJOBS_SCHEMA"),
        config=_text(config, "PGJOBS_CONFIG"),
        pool_size=pool_size,
    )


def _sqlalchemy_url(uri: object) -> str | None:
    """A PostgreSQL ``SQLALCHEMY_DATABASE_URI`` as a psycopg URL; None for other databases."""
    from sqlalchemy.engine import URL

    if isinstance(uri, URL):
        uri = uri.render_as_string(hide_password=False)
    if isinstance(uri, str) and is_url(uri):
        return psycopg_url(uri)  # pgjobs' own connections; enqueueing on db.session needs +psycopg
    return None
