"""Which migration revision a database is at, without alembic or SQLAlchemy.

``pgjobs start``, ``status`` and the other commands check that the database is at the revision
this pgjobs ships before they run (:func:`check_migrated`).  Reading the version tables is one
query on psycopg, so a supervisor, dispatcher or scheduler never imports alembic and SQLAlchemy
(~40 MiB) just to start.  :data:`HEADS` and :data:`REVISIONS` are written out; a test checks them
against the migration scripts (``pgjobs.db.migrate.head_revisions``), so a new migration that
forgets them fails the suite.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgjobs.db.names import quote_ident
from pgjobs.db.urls import psycopg_url, redact
from pgjobs.errors import DatabaseNotMigrated, DatabaseUnreachable

VERSION_TABLE = "pgjobs_alembic_version"  # where pgjobs' own migrations record their revision
REVISIONS = frozenset({"0001", "0002", "0003", "0004", "0005", "0006", "0007"})
HEADS = frozenset({"0007"})


def current_revisions(url: str, *, schema: str | None = None) -> set[str]:
    """The pgjobs revisions the database at ``url`` is at (empty when never migrated).

    Looks in ``pgjobs_alembic_version`` and, for applications that run pgjobs' migrations in
    their own alembic environment, in their ``alembic_version`` too (their other revisions are
    not pgjobs').
    """
    from pgjobs.db.database import connection_defaults

    conninfo = psycopg_url(url)
    try:
        options: dict[str, Any] = {**connection_defaults(conninfo)}
        with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, **options) as conn:
            found: set[str] = set()
            for table in (VERSION_TABLE, "alembic_version"):
                parts = [schema, table] if schema else [table]
                qualified = ".".join(quote_ident(part) for part in parts)
                exists = conn.execute("SELECT to_regclass(%s)", (qualified,)).fetchone()
                if exists is None or exists[0] is None:
                    continue
                rows = conn.execute(
                    sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(*parts))
                )
                found |= {str(row[0]) for row in rows}
            return found & REVISIONS
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(f"cannot connect to {redact(url)}: {exc}") from exc


def check_migrated(url: str, *, schema: str | None = None) -> None:
    """Raise :class:`DatabaseNotMigrated` unless the database is at the latest revision."""
    current = current_revisions(url, schema=schema)
    if current != HEADS:
        state = "has no pgjobs tables" if not current else f"is at {sorted(current)}"
        raise DatabaseNotMigrated(
            f"the database at {redact(url)} {state}, pgjobs needs {sorted(HEADS)}: "
            "run `pgjobs migrate`"
        )
