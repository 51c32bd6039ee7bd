"""Where pgjobs finds its database.

The database URL is the first of: an explicit argument (``--database-url``),
``PGJOBS_DATABASE_URL``, ``DATABASE_URL``, ``database_url`` in ``config/queue.yml``; when none is
set, the embedded PostgreSQL server (see :mod:`pgjobs.db.embedded`) is started or reused and
migrated.  The schema is ``--schema`` / ``PGJOBS_SCHEMA`` / ``schema`` in queue.yml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pgjobs.db import embedded


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    schema: str | None
    source: str  # where the URL came from, for messages: "--database-url", "PGJOBS_DATABASE_URL", …

    @property
    def embedded(self) -> bool:
        return self.source == "embedded"


def resolve(
    url: str | None = None,
    *,
    schema: str | None = None,
    config_url: str | None = None,
    config_schema: str | None = None,
    environ: Mapping[str, str] | None = None,
    start_embedded: bool = True,
) -> DatabaseSettings | None:
    """Pick the database; start the embedded server only when nothing names one."""
    env = os.environ if environ is None else environ
    chosen_schema = schema or env.get("PGJOBS_SCHEMA") or config_schema or None
    for value, source in (
        (url, "--database-url"),
        (env.get("PGJOBS_DATABASE_URL"), "PGJOBS_DATABASE_URL"),
        (env.get("DATABASE_URL"), "DATABASE_URL"),
        (config_url, "database_url in queue.yml"),
    ):
        if value:
            return DatabaseSettings(value, chosen_schema, source)
    if not start_embedded:
        return None
    return DatabaseSettings(embedded.start(), chosen_schema, "embedded")
