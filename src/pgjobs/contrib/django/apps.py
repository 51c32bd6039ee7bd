"""The Django app: ``INSTALLED_APPS += ["pgjobs.contrib.django"]``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class PgJobsConfig(AppConfig):
    name = "pgjobs.contrib.django"
    label = "pgjobs"
    verbose_name = "pgjobs"
    default = True

    def ready(self) -> None:
        from pgjobs.contrib.django import conf, db, records

        chosen = conf.load()  # a bad settings.PGJOBS stops every manage.py command at once
        conf.check_backend(chosen.database)
        db.install(chosen.database)
        records.register()
        post_migrate.connect(db.migrate_tables, sender=self, dispatch_uid="pgjobs.migrate")
        checks.register(check_queue_config, "pgjobs")


def check_queue_config(**kwargs: Any) -> list[checks.CheckMessage]:
    """``manage.py check``: every problem of queue.yml (workers, dispatchers, web)."""
    from pgjobs.config.queue import load_config
    from pgjobs.contrib.django import conf
    from pgjobs.errors import ConfigurationError

    try:
        load_config(conf.load().config)
    except ConfigurationError as exc:
        problems = exc.problems or [str(exc)]
        return [checks.Error(problem, id="pgjobs.E001") for problem in problems]
    return []
