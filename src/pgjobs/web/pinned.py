"""A :class:`~pgjobs.db.database.Database` whose every ``connection()`` is one given connection.

The dashboard hands it to pgjobs' APIs (``run_now``) when several steps must share one
transaction, and the tests hand it to :func:`pgjobs.web.create_app` to run every page on their
rolled-back connection.  The caller owns that connection and its transaction; nothing here opens,
commits or closes anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from pgjobs.db.database import Database


class PinnedDatabase(Database):
    """``Database`` API over one connection (no pool): ``connection()`` yields ``conn``."""

    def __init__(self, conn: psycopg.Connection[Any], *, schema: str | None = None) -> None:
        super().__init__(conn.info.dsn, schema=schema, pool_size=1)
        self._conn = conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        yield self._conn

    def close(self) -> None:
        """Nothing to close: the connection belongs to the caller."""
