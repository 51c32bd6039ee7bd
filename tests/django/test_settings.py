"""settings.PGJOBS: validated with errors naming the key; pgjobs connects with the alias's
own settings."""

from __future__ import annotations

from typing import Any

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.utils import ConnectionHandler
from psycopg.conninfo import conninfo_to_dict

import pgjobs.contrib.django
from pgjobs import runtime
from pgjobs.contrib.django import conf, db

DATABASES: dict[str, Any] = {"default": {}, "replica": {}}


def problem(raw: object) -> str:
    with pytest.raises(ImproperlyConfigured) as caught:
        conf.validate(raw, DATABASES)
    return str(caught.value)


def test_every_key_is_optional() -> None:
    assert conf.validate(None, DATABASES) == conf.Settings("default", None, None, True)
    assert conf.validate({}, DATABASES).database == "default"
    chosen = conf.validate({"DATABASE": "replica", "SCHEMA": "jobs", "MIGRATE": False}, DATABASES)
    assert chosen == conf.Settings("replica", None, "jobs", False)


def test_bad_settings_are_refused_naming_the_key() -> None:
    assert "settings.PGJOBS must be a dict" in problem(["default"])
    assert "unknown key 'DATABSE' (did you mean 'DATABASE'? valid: " in problem({"DATABSE": "x"})
    message = problem({"DATABASE": "other"})
    assert "'DATABASE': 'other' is not in settings.DATABASES (it has 'default', 'replica')" in (
        message
    )
    assert "'CONFIG': /nowhere/queue.yml does not exist" in problem(
        {"CONFIG": "/nowhere/queue.yml"}
    )
    assert "'SCHEMA' must be a PostgreSQL schema name" in problem({"SCHEMA": 3})
    assert "'MIGRATE' must be True or False, not 'yes'" in problem({"MIGRATE": "yes"})


def test_every_problem_is_reported_at_once() -> None:
    message = problem({"DATABASE": 1, "MIGRATE": 0, "EXTRA": 1})
    assert "'DATABASE' must be" in message
    assert "'MIGRATE' must be" in message
    assert "unknown key 'EXTRA'" in message


def test_a_database_that_is_not_postgresql_is_refused() -> None:
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    with pytest.raises(ImproperlyConfigured) as caught:
        conf.check_backend("lite", ConnectionHandler({"default": {}, "lite": sqlite}))
    assert "settings.DATABASES['lite'] uses 'django.db.backends.sqlite3'" in str(caught.value)
    assert "pgjobs needs PostgreSQL" in str(caught.value)
    conf.check_backend("default")  # psycopg 3 on PostgreSQL


@pytest.mark.django_db
def test_pgjobs_connects_with_the_alias_settings() -> None:
    info = conninfo_to_dict(conf.conninfo("default"))
    settings_dict = connections["default"].settings_dict
    assert info["dbname"] == settings_dict["NAME"]  # the test database: read when asked
    assert info["dbname"].startswith("test_pgjobs_django_")
    assert info.get("user") == (settings_dict["USER"] or None)
    assert "cursor_factory" not in info and "context" not in info
    database = runtime.get_database()
    assert conninfo_to_dict(database.url)["dbname"] == settings_dict["NAME"]


def test_the_schema_comes_from_the_settings_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGJOBS_SCHEMA", "from_env")
    assert db.schema_for(conf.Settings(schema="from_settings")) == "from_settings"
    assert db.schema_for(conf.Settings()) == "from_env"


def test_a_project_on_psycopg2_is_told_why_and_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.backends.postgresql import psycopg_any

    monkeypatch.setattr(psycopg_any, "is_psycopg3", False)  # as Django sets it without psycopg 3
    with pytest.raises(ImproperlyConfigured) as caught:
        conf.check_backend("default")
    assert "runs on psycopg2: pgjobs enqueues inside your transactions" in str(caught.value)
    assert 'pip install "psycopg[binary]"' in str(caught.value)


@pytest.mark.skipif(django.VERSION >= (6, 0), reason="Django 6 has django.tasks")
def test_the_tasks_backend_says_it_needs_django_6() -> None:
    with pytest.raises(ImportError, match=r"needs Django 6\.0 or later \(django\.tasks\)"):
        pgjobs.contrib.django.PgJobsBackend  # noqa: B018


def test_the_public_names() -> None:
    assert pgjobs.contrib.django.__all__ == ["PgJobsBackend", "dashboard_app", "with_dashboard"]
    assert callable(pgjobs.contrib.django.with_dashboard)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        pgjobs.contrib.django.nothing  # noqa: B018
