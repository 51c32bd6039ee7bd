"""The application module of ``manage.py pgjobs start`` (``pgjobs start --app`` this module).

Imported by the supervisor and by every worker, dispatcher and scheduler it starts (each a fresh
``python -m pgjobs.processes.child``): sets Django up with ``$DJANGO_SETTINGS_MODULE`` and then
imports the ``jobs`` module of every installed app, as Celery's autodiscovery does, so the job
classes (and ``@pgjobs.job`` functions) of the project are known by name.
"""

from __future__ import annotations

import os

import django
from django.apps import apps
from django.conf import settings
from django.utils.module_loading import autodiscover_modules

from pgjobs.errors import ConfigurationError

JOBS_MODULE = "jobs"


def setup() -> None:
    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise ConfigurationError(
            "pgjobs.contrib.django.worker needs DJANGO_SETTINGS_MODULE: start the workers with "
            "`python manage.py pgjobs start`, or set DJANGO_SETTINGS_MODULE=yourproject.settings"
        )
    if not apps.ready:
        django.setup()
    autodiscover_modules(JOBS_MODULE)


setup()
