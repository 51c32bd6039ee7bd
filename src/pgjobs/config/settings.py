"""Where pgjobs finds its database.

The database URL is the first of: an explicit argument (``--database-url``),
``PGJOBS_DATABASE_URL``, ``DATABASE_URL``, ``database_url`` in ``config/queue.yml``; when none is
set, the embedded PostgreSQL server (see :mod:`pgjobs.db.embedded`) is started or reused and
migrated.  The schema is ``--schema`` / ``PGJOBS_SCHEMA`` / ``schema`` in queue.yml.

Behind a pooler in transaction mode (PgBouncer): ``PGJOBS_TRANSACTION_POOLING=1`` or
``transaction_pooling: true`` says the URL is pooled (no prepared statements, no session state
on it), and ``PGJOBS_DIRECT_DATABASE_URL`` / ``direct_database_url`` names a direct connection
to PostgreSQL for what needs a session: LISTEN and the migrations' advisory lock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgjobs.db import embedded

if TYPE_CHECKING:
    from pgjobs.db.database import Database


_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    schema: str | None
    source: str  # where the URL came from, for messages: "--database-url", "PGJOBS_DATABASE_URL", …
    direct_url: str | None = None  # a direct connection, when ``url`` goes through a pooler
    transaction_pooling: bool = False  # ``url`` is a pooler in transaction mode

    @property
    def embedded(self) -> bool:
        return self.source == "embedded"

    @property
    def session_url(self) -> str | None:
        """Where a session (LISTEN, a session advisory lock) can be held: the direct URL, or the
        URL itself unless it is pooled per transaction."""
        return self.direct_url or (None if self.transaction_pooling else self.url)

    def open(self, **kwargs: Any) -> Database:
        """A :class:`Database` on these settings (``kwargs``: pool_size, application_name)."""
        from pgjobs.db.database import Database

        return Database(
            self.url,
            schema=self.schema,
            direct_url=self.direct_url,
            transaction_pooling=self.transaction_pooling,
            **kwargs,
        )


def resolve(
    url: str | None = None,
    *,
    schema: str | None = None,
    config_url: str | None = None,
    config_schema: str | None = None,
    environ: Mapping[str, str] | None = None,
    start_embedded: bool = True,
    config_direct_url: str | None = None,
    config_transaction_pooling: bool = False,
) -> DatabaseSettings | None:
    """Pick the database; start the embedded server only when nothing names one."""
    env = os.environ if environ is None else environ
    chosen_schema = schema or env.get("PGJOBS_SCHEMA") or config_schema or None
    direct = env.get("PGJOBS_DIRECT_DATABASE_URL") or config_direct_url or None
    pooled_env = env.get("PGJOBS_TRANSACTION_POOLING")
    pooled = (
        pooled_env.strip().lower() in _TRUE
        if pooled_env is not None
        else config_transaction_pooling
    )
    for value, source in (
        (url, "--database-url"),
        (env.get("PGJOBS_DATABASE_URL"), "PGJOBS_DATABASE_URL"),
        (env.get("DATABASE_URL"), "DATABASE_URL"),
        (config_url, "database_url in queue.yml"),
    ):
        if value:
            return DatabaseSettings(value, chosen_schema, source, direct, pooled)
    if not start_embedded:
        return None
    return DatabaseSettings(embedded.start(), chosen_schema, "embedded")
