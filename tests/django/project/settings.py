"""Settings of the Django project the integration's tests run: PostgreSQL from
``PGJOBS_TEST_DATABASE_URL`` (else the embedded test server), pgjobs installed as an app."""

from __future__ import annotations

import os
from pathlib import Path

import django
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[3]


def _server() -> dict[str, str]:
    url = os.environ.get("PGJOBS_TEST_DATABASE_URL")
    if not url:
        from pgjobs.db import embedded

        url = embedded.start(ROOT / ".pgjobs" / "test")
    return {k: str(v) for k, v in conninfo_to_dict(url).items()}


_info = _server()
# pytest-django creates (and drops) "test_" + NAME: one per test run, as several runs may share
# the server.  A `manage.py` started by a test is given the test database's name itself.
NAME = os.environ.get("PGJOBS_DJANGO_DATABASE") or f"pgjobs_django_{os.getpid()}"

SECRET_KEY = "pgjobs-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "tests.django.project.urls"
LOGIN_URL = "/login/"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "pgjobs.contrib.django",
    "tests.django.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": NAME,
        "USER": _info.get("user", "postgres"),
        "PASSWORD": _info.get("password", ""),
        "HOST": _info.get("host", ""),
        "PORT": _info.get("port", ""),
    }
}
PGJOBS = {"DATABASE": "default", "CONFIG": str(Path(__file__).with_name("queue.yml"))}
if django.VERSION >= (6, 0):
    TASKS = {
        "default": {
            "BACKEND": "pgjobs.contrib.django.PgJobsBackend",
            "QUEUES": ["default", "mailers"],
        }
    }
