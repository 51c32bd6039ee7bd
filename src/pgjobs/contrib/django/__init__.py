"""pgjobs in a Django project: ``pip install "pgjobs[django]"``.

::

    INSTALLED_APPS = [..., "pgjobs.contrib.django"]
    PGJOBS = {"DATABASE": "default"}  # optional: see pgjobs.contrib.django.conf

With the app installed:

- ``perform_later`` / ``perform_all_later`` inside ``transaction.atomic()`` write the job on
  Django's connection, in that transaction: no ``connection=`` to pass (:mod:`.db`);
- model instances are job arguments, loaded afresh by the worker (:mod:`.records`);
- workers close stale Django connections around every job, as a request does (:mod:`.db`);
- ``manage.py migrate`` creates and upgrades pgjobs' tables (:mod:`.db`);
- ``manage.py pgjobs start|status|migrate|...`` runs pgjobs with Django set up in every process
  and every installed app's ``jobs.py`` imported (:mod:`.worker`);
- :func:`dashboard_app` / :func:`with_dashboard` serve the dashboard behind Django's login;
- on Django 6, :class:`PgJobsBackend` runs ``django.tasks`` tasks on pgjobs (:mod:`.tasks`).

Nothing here is imported by pgjobs' core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgjobs.contrib.django.dashboard import dashboard_app, with_dashboard
    from pgjobs.contrib.django.tasks import PgJobsBackend

__all__ = ["PgJobsBackend", "dashboard_app", "with_dashboard"]

_LAZY = {
    "dashboard_app": "pgjobs.contrib.django.dashboard",
    "with_dashboard": "pgjobs.contrib.django.dashboard",
    "PgJobsBackend": "pgjobs.contrib.django.tasks",
}


def __getattr__(name: str) -> Any:
    # Imported on use: Django imports this package before its settings are ready, the
    # dashboard needs pgjobs[web] and the tasks backend Django 6.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
