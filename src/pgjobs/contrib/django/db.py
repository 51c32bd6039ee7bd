"""Django's database connections and pgjobs.

- **Enqueue inside ``transaction.atomic()``**: a synchronous ``perform_later`` /
  ``perform_all_later`` that names no connection, called inside an atomic block on the alias of
  ``settings.PGJOBS["DATABASE"]``, writes the job on that alias's own psycopg 3 connection, in
  the block's transaction (or savepoint): the job exists if and only if the block commits.
  Outside an atomic block it goes through pgjobs' pool and is committed before the call returns.
  Async enqueues always use pgjobs' pool: Django has no async transactions.
- **The default database** is built from the alias's connection settings at its first use (so
  it follows a test runner to its test database).
- **A request cycle around each job**: a worker resets the query log and closes unusable or
  expired connections before and after every job, as Django does around a request, so a
  long-running worker never keeps a broken or stale connection.
- **The tables**: ``manage.py migrate`` runs pgjobs' own alembic upgrade (post_migrate).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connections

from pgjobs import hooks, runtime
from pgjobs.config import settings
from pgjobs.config.queue import load_config
from pgjobs.contrib.django import conf
from pgjobs.db.database import Database
from pgjobs.enqueue import core as enqueue

_alias = conf.DEFAULT_DATABASE
_migrated: set[tuple[str, str | None]] = set()  # (conninfo, schema) upgraded by this process


def current_connection() -> psycopg.Connection[Any] | None:
    """The connection provider: the alias's psycopg connection inside an atomic block."""
    connection = connections[_alias]
    if not connection.in_atomic_block:
        return None
    # An atomic block that caught a database error must roll back: refuse, as Django does.
    connection.validate_no_broken_transaction()
    driver: psycopg.Connection[Any] = connection.connection
    return driver


def schema_for(chosen: conf.Settings) -> str | None:
    """``PGJOBS["SCHEMA"]``, else ``$PGJOBS_SCHEMA``, else ``schema`` in queue.yml."""
    config = load_config(chosen.config)
    found = settings.resolve(
        conf.conninfo(chosen.database), schema=chosen.schema, config_schema=config.schema
    )
    assert found is not None
    return found.schema


def database() -> Database:
    """pgjobs' database on the alias (pools open at first use); behind PgBouncer in transaction
    mode, ``PGJOBS_TRANSACTION_POOLING`` / ``PGJOBS_DIRECT_DATABASE_URL`` (or queue.yml) apply."""
    chosen = conf.load()
    config = load_config(chosen.config)
    found = settings.resolve(
        conf.conninfo(chosen.database),
        schema=chosen.schema,
        config_schema=config.schema,
        config_direct_url=config.direct_database_url,
        config_transaction_pooling=config.transaction_pooling,
    )
    assert found is not None
    return found.open()


@contextmanager
def request_cycle(claimed: object) -> Iterator[None]:
    """Around each job, what Django does around each request (``close_old_connections``)."""
    _tidy()
    try:
        yield
    finally:
        _tidy()


def _tidy() -> None:
    for connection in connections.all(initialized_only=True):
        connection.queries_log.clear()
        # A connection inside an atomic block belongs to code that runs the job inline (a
        # test's transaction): closing it would break that transaction.
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def migrate_tables(using: str = conf.DEFAULT_DATABASE, verbosity: int = 1, **kwargs: Any) -> None:
    """post_migrate: create or upgrade pgjobs' tables on its alias with pgjobs' alembic history.

    Idempotent and serialised across hosts (an advisory lock); done once per process and
    database (a test run's flushes send post_migrate again).
    """
    chosen = conf.load()
    if not chosen.migrate or using != chosen.database:
        return
    url, schema = conf.conninfo(chosen.database), schema_for(chosen)
    if (url, schema) in _migrated:
        return
    from pgjobs.db.migrate import migrate

    migrate(url, schema=schema)
    _migrated.add((url, schema))
    if verbosity >= 2:
        stdout = kwargs.get("stdout") or sys.stdout
        stdout.write(f"  pgjobs: tables on {using!r} are up to date\n")


def install(alias: str) -> None:
    """Wire pgjobs to Django (the app's ``ready()``); safe to call again."""
    global _alias
    _alias = alias
    enqueue.set_connection_provider(current_connection)
    runtime.use_lazily(database)
    hooks.wrap_jobs(request_cycle)
