"""Running pgjobs' alembic migrations: ``pgjobs migrate`` and :func:`pgjobs.migrate`.

The migration scripts live in ``migrations/`` at the top of the repository and ship inside the
wheel as ``pgjobs/migrations``, so ``pgjobs migrate`` works after a plain ``pip install``.  The
version is kept in ``pgjobs_alembic_version`` (in the pgjobs schema when one is configured), so
it never collides with an application's own ``alembic_version``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import OperationalError

from pgjobs.db.revision import check_migrated, current_revisions
from pgjobs.db.urls import psycopg_url, redact, sqlalchemy_url
from pgjobs.errors import DatabaseUnreachable

__all__ = ["check_migrated", "current_revisions", "head_revisions", "migrate", "migration_sql"]

BRANCH_LABEL = "pgjobs"
# alembic keeps its running context in module globals: one migration per process at a time.
# Across processes and hosts, env.py serialises on a PostgreSQL advisory lock.
_process_lock = threading.Lock()


def migrations_path() -> Path:
    """The directory holding pgjobs' alembic scripts (installed wheel, or the source checkout)."""
    packaged = Path(__file__).resolve().parent.parent / "migrations"
    if (packaged / "env.py").exists():
        return packaged
    source = Path(__file__).resolve().parents[3] / "migrations"
    if (source / "env.py").exists():
        return source
    raise FileNotFoundError("pgjobs' migrations are missing from this installation")


def versions_path() -> Path:
    """The ``versions`` directory, for an application's alembic ``version_locations``."""
    return migrations_path() / "versions"


def alembic_config(url: str | None = None, *, schema: str | None = None) -> AlembicConfig:
    cfg = AlembicConfig(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(migrations_path()))
    if url:
        cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def _engine(url: str):  # type: ignore[no-untyped-def]
    from pgjobs.db.database import connection_defaults

    # The same connect timeout and keepalives as every other pgjobs connection; no server-side
    # prepared statements, so that migrating through PgBouncer in transaction mode works.
    defaults: dict[str, Any] = {**connection_defaults(psycopg_url(url)), "prepare_threshold": None}
    return create_engine(sqlalchemy_url(url), poolclass=pool.NullPool, connect_args=defaults)


#: ``step(label)``: told what the migration is doing now — waiting for another host's migration,
#: then each revision as it starts ("0005: pgjobs_jobs: job control columns (1/2)") — and ``""``
#: once it is done.  ``pgjobs migrate`` shows it on a terminal (:mod:`pgjobs.cli.progress`).
Step = Callable[[str], None]


def migrate(
    url: str, *, schema: str | None = None, revision: str = "heads", step: Step | None = None
) -> None:
    """Upgrade the pgjobs tables at ``url`` to ``revision`` (default: the latest).

    Idempotent, and safe when several hosts run it at once (they serialise on an advisory lock).
    """
    if revision == "heads" and _migrated_by_application(url, schema):
        return  # the application's own alembic owns pgjobs' migrations here
    cfg = alembic_config(url, schema=schema)
    if step is not None:
        cfg.attributes["step"] = _Steps(cfg, step)
    try:
        with _process_lock, _engine(url).connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            if step is not None:
                step("")
    except OperationalError as exc:
        raise DatabaseUnreachable(f"cannot connect to {redact(url)}: {exc.orig}") from exc


def _short(doc: str, width: int = 60) -> str:
    text = " ".join(doc.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _Steps:
    """Reports the revisions as env.py applies them (``on_version_apply`` fires after each)."""

    def __init__(self, cfg: AlembicConfig, step: Step) -> None:
        self.script = ScriptDirectory.from_config(cfg)
        self.step = step
        self.pending: list[str] = []
        self.done = 0

    def locking(self) -> None:
        self.step("waiting for the migration lock (another host may be migrating)")

    def start(self, current: tuple[str, ...], target: Any) -> None:
        """Called with the lock held: the revisions still to apply, oldest first."""
        revisions = self.script.iterate_revisions(target, current or "base")
        self.pending = [f"{r.revision}: {_short(r.doc or '')}" for r in revisions][::-1]
        self._next()

    def applied(self, *args: Any, **kwargs: Any) -> None:  # alembic's on_version_apply
        self.done += 1
        self._next()

    def _next(self) -> None:
        if self.done < len(self.pending):
            total = len(self.pending)
            self.step(f"{self.pending[self.done]} ({self.done + 1}/{total})")


def _migrated_by_application(url: str, schema: str | None) -> bool:
    try:
        with _engine(url).connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": "alembic_version", "version_table_schema": schema}
            )
            return bool(set(ctx.get_current_heads()) & _all_revisions())
    except OperationalError as exc:
        raise DatabaseUnreachable(f"cannot connect to {redact(url)}: {exc.orig}") from exc


def downgrade(url: str, *, schema: str | None = None, revision: str = "base") -> None:
    cfg = alembic_config(url, schema=schema)
    with _process_lock, _engine(url).connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def migration_sql(*, schema: str | None = None, revision: str = "heads") -> str:
    """The SQL ``migrate`` would run on an empty database, for DBAs (``pgjobs migrate --sql``)."""
    cfg = alembic_config("postgresql+psycopg://", schema=schema)
    out = io.StringIO()
    cfg.output_buffer = out
    with _process_lock:
        command.upgrade(cfg, revision, sql=True)
    return out.getvalue()


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def _all_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
