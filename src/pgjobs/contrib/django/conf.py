"""``settings.PGJOBS``: read and validated once, every problem reported together.

::

    PGJOBS = {
        "DATABASE": "default",  # the DATABASES alias whose connection settings pgjobs uses
        "CONFIG": BASE_DIR / "config" / "queue.yml",  # default: $PGJOBS_CONFIG, config/queue.yml
        "SCHEMA": None,  # PostgreSQL schema of pgjobs' tables; default: $PGJOBS_SCHEMA, queue.yml
        "MIGRATE": True,  # `manage.py migrate` creates and upgrades pgjobs' tables
    }

Every key is optional; without ``PGJOBS`` at all pgjobs uses the ``default`` alias.  pgjobs
connects with the alias's own settings (``NAME``, ``USER``, ``PASSWORD``, ``HOST``, ``PORT``,
and the libpq ``OPTIONS``), so there is no second URL to keep in step; ``PGJOBS_DATABASE_URL``
and ``database_url`` in queue.yml are not consulted in a Django project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.utils import ConnectionHandler
from psycopg.conninfo import make_conninfo

from pgjobs.config.yamlfile import did_you_mean

DEFAULT_DATABASE = "default"
KEYS = ("DATABASE", "CONFIG", "SCHEMA", "MIGRATE")
# Connection parameters Django hands psycopg that are not libpq's (get_connection_params()).
_NOT_LIBPQ = frozenset({"cursor_factory", "context", "prepare_threshold", "row_factory"})


@dataclass(frozen=True)
class Settings:
    database: str = DEFAULT_DATABASE
    config: str | None = None
    schema: str | None = None
    migrate: bool = True


def _path(value: object) -> str | None:
    return os.fspath(value) if isinstance(value, str | os.PathLike) else None


def validate(raw: object, databases: dict[str, Any]) -> Settings:
    """``settings.PGJOBS`` as :class:`Settings`; ImproperlyConfigured listing every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(
            f"settings.PGJOBS must be a dict such as {{'DATABASE': 'default'}}, "
            f"not {type(raw).__name__}"
        )
    problems: list[str] = []
    for key in raw:
        if key not in KEYS:
            hint = did_you_mean(str(key), KEYS) if isinstance(key, str) else ""
            valid = ", ".join(repr(k) for k in KEYS)
            problems.append(f"unknown key {key!r} ({hint + ' ' if hint else ''}valid: {valid})")
    database = raw.get("DATABASE", DEFAULT_DATABASE)
    if not isinstance(database, str):
        problems.append(f"'DATABASE' must be the name of a DATABASES alias, not {database!r}")
    elif database not in databases:
        have = ", ".join(repr(a) for a in databases) or "none"
        problems.append(f"'DATABASE': {database!r} is not in settings.DATABASES (it has {have})")
    config = raw.get("CONFIG")
    if config is not None:
        path = _path(config)
        if path is None:
            problems.append(f"'CONFIG' must be the path of a queue.yml, not {config!r}")
        elif not Path(path).is_file():
            problems.append(f"'CONFIG': {path} does not exist")
    schema = raw.get("SCHEMA")
    if schema is not None and (not isinstance(schema, str) or not schema):
        problems.append(f"'SCHEMA' must be a PostgreSQL schema name or None, not {schema!r}")
    migrate = raw.get("MIGRATE", True)
    if not isinstance(migrate, bool):
        problems.append(f"'MIGRATE' must be True or False, not {migrate!r}")
    if problems:
        raise ImproperlyConfigured("settings.PGJOBS: " + "; ".join(problems))
    return Settings(database, _path(config), schema, migrate)


def load() -> Settings:
    """The project's ``settings.PGJOBS``, validated (read afresh: tests override settings)."""
    return validate(getattr(django_settings, "PGJOBS", None), django_settings.DATABASES)


def check_backend(alias: str, handler: ConnectionHandler = connections) -> None:
    """The alias must be PostgreSQL through psycopg 3 (pgjobs enqueues on its connection)."""
    connection = handler[alias]
    if connection.vendor != "postgresql":
        engine = connection.settings_dict.get("ENGINE")
        raise ImproperlyConfigured(
            f"settings.DATABASES[{alias!r}] uses {engine!r}: pgjobs needs PostgreSQL "
            "('django.db.backends.postgresql'); point settings.PGJOBS['DATABASE'] at a "
            "PostgreSQL alias"
        )
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        raise ImproperlyConfigured(
            f"settings.DATABASES[{alias!r}] runs on psycopg2: pgjobs enqueues inside your "
            "transactions on the same connection, which needs psycopg 3 (Django 4.2+ uses it "
            'when it is installed: pip install "psycopg[binary]" and uninstall psycopg2)'
        )


def conninfo(alias: str) -> str:
    """A libpq connection string for the alias, from the settings Django connects with.

    Read when asked, not at start-up: a test runner points the alias at its test database.
    """
    params = connections[alias].get_connection_params()
    kept = {
        key: value
        for key, value in params.items()
        if key not in _NOT_LIBPQ and isinstance(value, str | int) and value != ""
    }
    return make_conninfo("", **kept)
