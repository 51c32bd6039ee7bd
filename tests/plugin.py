"""pytest plugin: a real PostgreSQL for the pgjobs test-suite.

The server is ``PGJOBS_TEST_DATABASE_URL`` when set (any database on it: the suite creates its
own), else the embedded server in ``.pgjobs/test``.  pgjobs is migrated once into a template
database, and the test database is cloned from it, so each run starts from a clean, current
schema.

Fixtures:

- ``conn``: a psycopg connection inside a transaction that is rolled back after the test (the
  default; sub-millisecond).  Pass it to the code under test.
- ``db``: a :class:`pgjobs.db.database.Database` on the test database, set as pgjobs' default;
  the test's committed rows are deleted afterwards (mark such tests ``@pytest.mark.committed``).
- ``server_url`` / ``make_database``: for tests that need a database of their own (migrations).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from pgjobs import runtime
from pgjobs.db import embedded
from pgjobs.db.database import Database
from pgjobs.db.migrate import migrate
from pgjobs.db.names import TABLES, quote_ident
from pgjobs.db.urls import to_url

ROOT = Path(__file__).resolve().parent.parent
# Per-run names: several test runs may share one server (CI jobs, developers, agents).
RUN = f"{os.getpid()}"
TEMPLATE = f"pgjobs_template_{RUN}"


EMBEDDED = ROOT / ".pgjobs" / "test"
_started_embedded: list[bool] = []  # this run started the suite's embedded server: stop it


def _server_url() -> str:
    url = os.environ.get("PGJOBS_TEST_DATABASE_URL")
    if url:
        return url
    if embedded.running_pid(EMBEDDED) is None:
        _started_embedded.append(True)
    return embedded.start(EMBEDDED)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the suite's embedded server if this run started it (one already running — another
    run's, or started by hand — is left alone)."""
    if _started_embedded and not hasattr(config, "workerinput"):
        embedded.stop(EMBEDDED)


def database_url(server_url: str, dbname: str) -> str:
    return to_url(server_url, dbname=dbname)


def _admin(server_url: str) -> psycopg.Connection:
    info = conninfo_to_dict(server_url)
    dbname = "postgres" if info.get("dbname") != "postgres" else info["dbname"]
    return psycopg.connect(to_url(server_url, dbname=dbname), autocommit=True)


def _recreate(admin: psycopg.Connection, name: str, template: str | None = None) -> None:
    admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    suffix = f" TEMPLATE {quote_ident(template)}" if template else ""
    admin.execute(f"CREATE DATABASE {quote_ident(name)}{suffix}")


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def make_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Create empty, throwaway databases; returns their URLs.  Dropped at the end of the run."""
    created: list[str] = []

    def make() -> str:
        name = f"pgjobs_scratch_{uuid.uuid4().hex[:10]}"
        with _admin(server_url) as admin:
            _recreate(admin, name)
        created.append(name)
        return database_url(server_url, name)

    yield make
    with _admin(server_url) as admin:
        for name in created:
            admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


@pytest.fixture(scope="session")
def test_database_url(server_url: str) -> Iterator[str]:
    name = f"pgjobs_test_{RUN}"
    with _admin(server_url) as admin:
        _recreate(admin, TEMPLATE)
        migrate(database_url(server_url, TEMPLATE))
        _recreate(admin, name, template=TEMPLATE)
    yield database_url(server_url, name)
    with _admin(server_url) as admin:
        for db in (name, TEMPLATE):
            admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")


@pytest.fixture(scope="session")
def default_database(test_database_url: str) -> Iterator[Database]:
    """The test database as pgjobs' process-wide default (its pool opens only when used)."""
    database = Database(test_database_url)
    previous = runtime.use(database)
    yield database
    runtime.use(previous)
    database.close()


@pytest.fixture
def conn(test_database_url: str, default_database: Database) -> Iterator[psycopg.Connection]:
    """A connection in a transaction that is rolled back after the test."""
    with psycopg.connect(test_database_url) as connection:
        try:
            yield connection
        finally:
            connection.rollback()


def _clean(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        # Batches first: deleting an unfinished job of a batch counts it (a trigger), and a
        # batch whose last job goes would write its callback jobs.
        for table in sorted(TABLES.values(), key=lambda table: table != "pgjobs_batches"):
            connection.execute(f"DELETE FROM {table}")


@pytest.fixture
def db(test_database_url: str, default_database: Database) -> Iterator[Database]:
    """The test database as pgjobs' default, for tests that commit; emptied afterwards."""
    try:
        yield default_database
    finally:
        with contextlib.suppress(psycopg.Error):
            _clean(test_database_url)


@pytest.fixture
def make_worker(db: Database) -> Iterator[Callable[..., Any]]:
    """In-process workers on the test database (every queue, 100 threads), registered; the
    passes are driven by the test.  ``make_worker(config)``: heartbeat 30 s and
    max_interruptions 2 unless given."""
    from pgjobs.config.queue import Config, WorkerConfig
    from pgjobs.processes.worker import Worker

    made: list[Worker] = []

    def make(config: Config | None = None) -> Worker:
        chosen = config or Config(heartbeat_interval=30, max_interruptions=2)
        worker = Worker(Database(db.url), chosen, WorkerConfig(queues=("*",), threads=100))
        worker.register()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()
        worker.close()
