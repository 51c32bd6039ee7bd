"""Alembic environment for pgjobs' own migrations.

Used by ``pgjobs migrate`` / :func:`pgjobs.migrate` (which pass a connection and the schema
through ``config.attributes``) and by plain ``alembic -c ... upgrade head``.  Applications that
fold pgjobs' migrations into their own alembic environment do not use this file: see
``docs/migrations.md``.

Guarantees: the migration runs in one transaction (PostgreSQL has transactional DDL) that first
takes a transaction-level advisory lock, so two hosts migrating at once serialise and the second
finds the database at head and does nothing (and it works through PgBouncer in transaction mode).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from pgjobs.db.schema import metadata

VERSION_TABLE = "pgjobs_alembic_version"
# pg_advisory_xact_lock key: the bytes "pgjobs" read as an integer.
MIGRATION_LOCK = 0x70676A6F6273

config = context.config


def _schema() -> str | None:
    schema = config.attributes.get("schema") or context.get_x_argument(as_dictionary=True).get(
        "schema"
    )
    return str(schema) if schema else None


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Autogenerate and the drift test look at pgjobs' own tables only.
    if type_ == "table":
        return bool(name and name.startswith("pgjobs_") and name != VERSION_TABLE)
    return True


def _configure(connection: Connection | None = None, **kwargs: object) -> None:
    schema = _schema()
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        include_object=_include_object,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=False,
        **kwargs,  # type: ignore[arg-type]
    )


def run_offline() -> None:
    schema = _schema()
    _configure(url=config.get_main_option("sqlalchemy.url") or "postgresql://", literal_binds=True)
    with context.begin_transaction():
        if schema:
            context.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            context.execute(f'SET LOCAL search_path TO "{schema}"')
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    schema = _schema()
    steps = config.attributes.get("step")  # pgjobs.db.migrate._Steps: progress, when asked
    if steps is not None:
        steps.locking()
    # One transaction from the lock to the commit: the lock is transaction-level, so it is held
    # by the very transaction that migrates and released by its commit or rollback — which also
    # works through a pooler in transaction mode (PgBouncer), where a session lock would stay
    # on whichever server connection took it.  Wait for it however long another host migrates
    # (lock_timeout 0, whatever the role or connection sets).
    connection.execute(text("SET LOCAL lock_timeout = 0"))
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    try:
        if schema:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            connection = connection.execution_options(schema_translate_map={None: schema})
            # ALTER TABLE by name (op.add_column, op.create_index) does not go through the
            # translate map: resolve unqualified names to the schema for this transaction.
            connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
        # The connection is in our transaction: alembic runs in it and leaves the commit to us.
        if steps is None:
            _configure(connection)
        else:
            _configure(connection, on_version_apply=steps.applied)
            steps.start(tuple(context.get_context().get_current_heads()), _target())
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    except BaseException:
        connection.rollback()
        raise


def _target() -> object:
    """The revision(s) ``upgrade`` was asked for, resolved (``heads`` when none)."""
    return context.get_revision_argument() or "heads"


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    engine = create_engine(url or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run_with(conn)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
