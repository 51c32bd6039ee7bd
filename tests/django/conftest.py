"""Fixtures of the Django integration's tests (pytest-django, on the real PostgreSQL).

pytest-django creates the test database with ``manage.py migrate``, which creates pgjobs'
tables too (the integration's post_migrate); pgjobs' default database follows Django to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgjobs import runtime
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.contrib.django import conf
from pgjobs.db.database import Database
from pgjobs.db.names import TABLES
from pgjobs.processes.worker import Worker


@pytest.fixture(scope="session", autouse=True)
def _close_pgjobs_pools(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pgjobs' pooled connections to the test database end before pytest-django drops it."""
    yield
    runtime.get_database().close()


@pytest.fixture
def url(transactional_db: None) -> Iterator[str]:
    """The test database's conninfo, for tests that commit (Django's tables are flushed
    afterwards by pytest-django, pgjobs' emptied here)."""
    found = conf.conninfo("default")
    yield found
    with contextlib.suppress(psycopg.Error), psycopg.connect(found, autocommit=True) as conn:
        for table in TABLES.values():
            conn.execute(f"DELETE FROM {table}")


def count(url: str, sql: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
        assert row is not None
        return row[0]


def jobs(url: str) -> int:
    return int(count(url, "SELECT count(*) FROM pgjobs_jobs"))


@pytest.fixture
def worker(url: str) -> Iterator[Worker]:
    """An in-process worker on the test database; ``run_once(worker)`` runs what is ready."""
    made = Worker(Database(url), Config(), WorkerConfig(queues=("*",), threads=2))
    made.register()
    yield made
    made.stop()
    made.close()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collected only where pytest-django is on (tests/django/pytest.ini): the main suite, which
    turns it off, runs these tests in a subprocess instead (tests/test_django.py)."""
    return None if config.pluginmanager.has_plugin("django") else True
