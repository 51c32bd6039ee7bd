"""Migrations: idempotent, concurrent-safe, drift-free, reversible, schema-aware, embeddable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from pgjobs.db.migrate import (
    check_migrated,
    current_revisions,
    downgrade,
    head_revisions,
    migrate,
    migration_sql,
    versions_path,
)
from pgjobs.db.schema import metadata
from pgjobs.db.urls import sqlalchemy_url
from pgjobs.errors import DatabaseNotMigrated, DatabaseUnreachable


def _tables(url: str, schema: str = "public") -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE 'pgjobs%%'",
            [schema],
        ).fetchall()
    return {row[0] for row in rows}


def _drift(url: str, schema: str | None = None) -> list[object]:
    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        if type_ != "table":
            return True
        return bool(name and name.startswith("pgjobs_") and "alembic" not in name)

    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as raw:
        conn = raw
        if schema:
            conn = raw.execution_options(schema_translate_map={None: schema})
            conn.exec_driver_sql(f'SET search_path TO "{schema}"')
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": include,
            },
        )
        return list(compare_metadata(ctx, metadata))


def test_migrate_creates_every_table_and_matches_the_metadata(
    make_database: Callable[[], str],
) -> None:
    url = make_database()
    migrate(url)
    assert _tables(url) == {t.name for t in metadata.sorted_tables} | {"pgjobs_alembic_version"}
    assert current_revisions(url) == head_revisions()
    assert _drift(url) == []
    check_migrated(url)


def test_migrate_twice_is_a_no_op(make_database: Callable[[], str]) -> None:
    url = make_database()
    migrate(url)
    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT count(*) FROM pg_class").fetchone()
    migrate(url)
    with psycopg.connect(url) as conn:
        after = conn.execute("SELECT count(*) FROM pg_class").fetchone()
    assert before == after
    assert current_revisions(url) == head_revisions()


def test_concurrent_migrations_from_several_processes_all_succeed(
    make_database: Callable[[], str],
) -> None:
    """Hosts deploying at once: each runs `pgjobs migrate`; they serialise, none fails."""
    url = make_database()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pgjobs", "migrate", "--database-url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.communicate(timeout=60)[1], p.returncode) for p in procs]
    assert [code for _, code in results] == [0, 0, 0], results
    assert current_revisions(url) == head_revisions()


def test_threads_in_one_process_serialise(make_database: Callable[[], str]) -> None:
    url = make_database()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert current_revisions(url) == head_revisions()


def test_downgrade_then_upgrade_round_trips(make_database: Callable[[], str]) -> None:
    url = make_database()
    migrate(url)
    downgrade(url, revision="base")
    assert _tables(url) == {"pgjobs_alembic_version"}
    assert current_revisions(url) == set()
    migrate(url)
    assert _drift(url) == []


def test_a_named_schema_holds_every_table(make_database: Callable[[], str]) -> None:
    url = make_database()
    migrate(url, schema="jobs")
    assert _tables(url, "jobs") == {t.name for t in metadata.sorted_tables} | {
        "pgjobs_alembic_version"
    }
    assert _tables(url, "public") == set()
    assert _drift(url, schema="jobs") == []
    check_migrated(url, schema="jobs")
    with pytest.raises(DatabaseNotMigrated):
        check_migrated(url)


def test_unmigrated_and_unreachable_databases_say_so(make_database: Callable[[], str]) -> None:
    url = make_database()
    with pytest.raises(DatabaseNotMigrated, match="run `pgjobs migrate`"):
        check_migrated(url)
    with pytest.raises(DatabaseUnreachable, match="cannot connect"):
        check_migrated("postgresql://nobody:secret@127.0.0.1:1/nothing")


def test_sql_output_for_dbas() -> None:
    sql = migration_sql()
    assert "CREATE TABLE pgjobs_jobs" in sql
    assert "CREATE UNIQUE INDEX ix_pgjobs_jobs_job_id" in sql
    assert "pgjobs_alembic_version" in sql
    assert 'CREATE SCHEMA IF NOT EXISTS "jobs"' in migration_sql(schema="jobs")


def test_migrations_run_inside_an_applications_own_alembic(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """The documented recipe: add pgjobs' versions to version_locations, upgrade heads."""
    url = make_database()
    _upgrade_with_the_applications_alembic(url, tmp_path)
    assert {"pgjobs_jobs", "orders"} <= set(_all_tables(url))
    with psycopg.connect(url) as conn:
        versions = {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}
    assert versions == {"a1", *head_revisions()}


def _upgrade_with_the_applications_alembic(url: str, tmp_path: Path) -> None:
    app = tmp_path / "app_migrations"
    (app / "versions").mkdir(parents=True)
    (app / "env.py").write_text(
        textwrap.dedent(
            """
            from alembic import context
            from sqlalchemy import create_engine, pool
            url = context.config.get_main_option("sqlalchemy.url")
            with create_engine(url, poolclass=pool.NullPool).connect() as conn:
                context.configure(connection=conn, target_metadata=None)
                with context.begin_transaction():
                    context.run_migrations()
                conn.commit()
            """
        )
    )
    (app / "script.py.mako").write_text("")
    (app / "versions" / "a1_app_table.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa
            from alembic import op
            revision = "a1"
            down_revision = None
            branch_labels = ("app",)
            depends_on = None
            def upgrade():
                op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))
            def downgrade():
                op.drop_table("orders")
            """
        )
    )
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        textwrap.dedent(
            f"""
            [alembic]
            script_location = {app}
            version_locations = {app / "versions"} {versions_path()}
            path_separator = space
            sqlalchemy.url = {sqlalchemy_url(url).replace("%", "%%")}
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "heads"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _all_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()]


def test_an_application_migrated_database_is_recognised(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    """After the app's own alembic ran pgjobs' migrations, pgjobs accepts the database as is."""
    url = make_database()
    _upgrade_with_the_applications_alembic(url, tmp_path)
    check_migrated(url)
    migrate(url)  # a no-op: it must not try to create the tables again
    assert _tables(url) >= {"pgjobs_jobs"} and "pgjobs_alembic_version" not in _tables(url)


def test_the_jobs_table_keeps_room_for_hot_finishes(make_database: Callable[[], str]) -> None:
    url = make_database()
    migrate(url)
    with psycopg.connect(url) as conn:
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'pgjobs_jobs'"
        ).fetchone()
    assert options is not None and "fillfactor=50" in options[0]


def test_migrate_reports_each_revision_as_it_starts(make_database: Callable[[], str]) -> None:
    url = make_database()
    migrate(url, revision="0003")
    steps: list[str] = []
    migrate(url, step=steps.append)
    assert steps[0].startswith("waiting for the migration lock")
    assert [s.split(":")[0] for s in steps[1:-1]] == ["0004", "0005", "0006", "0007"]
    assert steps[1].endswith("(1/4)") and steps[4].endswith("(4/4)") and steps[-1] == ""
    steps.clear()
    migrate(url, step=steps.append)  # nothing to apply
    assert steps == ["waiting for the migration lock (another host may be migrating)", ""]


def test_the_ticker_draws_on_a_terminal_only() -> None:
    import io

    from pgjobs.cli.progress import Ticker

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen, plain = Terminal(), io.StringIO()
    for stream in (screen, plain):
        with Ticker("pgjobs migrate", stream, interval=0.01) as ticker:
            ticker("0005: job control columns (1/1)")
            threading.Event().wait(0.05)
            ticker("")
    assert "pgjobs migrate: 0005: job control columns (1/1) (0s)" in screen.getvalue()
    assert screen.getvalue().endswith("\r\x1b[K") and plain.getvalue() == ""
