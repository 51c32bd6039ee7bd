"""The process-wide default database, used when a call is not handed a connection.

``pgjobs.configure(url, schema=...)`` sets it explicitly; otherwise the first use resolves it from
the environment, ``config/queue.yml`` and, failing those, the embedded server (which is migrated
automatically — it is pgjobs' own development database).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pgjobs.db.database import Database

_lock = threading.Lock()
_default: Database | None = None
_factory: Callable[[], Database] | None = None


def configure(
    url: str | None = None,
    *,
    schema: str | None = None,
    pool_size: int | None = None,
    config_path: str | None = None,
) -> Database:
    """Set (and return) the default database for this process."""
    global _default
    from pgjobs.config import settings
    from pgjobs.config.queue import load_config

    cfg = load_config(config_path)
    chosen = settings.resolve(
        url,
        schema=schema,
        config_url=cfg.database_url,
        config_schema=cfg.schema,
        config_direct_url=cfg.direct_database_url,
        config_transaction_pooling=cfg.transaction_pooling,
    )
    assert chosen is not None
    if chosen.embedded:
        from pgjobs.db.migrate import migrate

        migrate(chosen.url, schema=chosen.schema)
    database = chosen.open(pool_size=pool_size or 4)
    with _lock:
        previous, _default = _default, database
    if previous is not None:
        previous.close()
    return database


def use(database: Database | None) -> Database | None:
    """Make ``database`` the default (``None`` to forget it); returns the previous one."""
    global _default
    with _lock:
        previous, _default = _default, database
    return previous


def use_lazily(factory: Callable[[], Database] | None) -> None:
    """Have ``factory()`` make the default database at its first use, unless ``configure()`` or
    ``use()`` set one first (``None`` forgets the factory).

    For integrations whose settings are final only once the application runs: the Django
    integration builds the database from ``settings.DATABASES``, which a test runner renames.
    """
    global _factory
    with _lock:
        _factory = factory


_schema: str | None = None  # resolved once from the environment and queue.yml
_schema_resolved = False


def current_schema() -> str | None:
    """The pgjobs schema, without connecting or starting anything (for caller connections).

    Without a default database it is read from ``PGJOBS_SCHEMA`` or queue.yml once per process
    (not on every enqueue); ``configure()`` and ``use()`` make it follow their database.
    """
    global _schema, _schema_resolved
    if _default is not None:
        return _default.schema
    if _factory is not None:
        return get_database().schema  # making it connects to nothing
    if not _schema_resolved:
        import os

        from pgjobs.config.queue import load_config

        _schema = os.environ.get("PGJOBS_SCHEMA") or load_config().schema
        _schema_resolved = True
    return _schema


def get_database() -> Database:
    """The default database, resolved on first use."""
    global _default
    if _default is None:
        if _factory is not None:
            with _lock:
                if _default is None:
                    _default = _factory()
                return _default
        return configure()
    return _default
