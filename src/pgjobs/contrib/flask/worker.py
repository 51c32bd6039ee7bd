"""The application module of ``flask pgjobs start`` (``pgjobs start --app`` this module).

Imported in the supervisor and in each process it starts, it creates the Flask app named by
``$PGJOBS_FLASK_APP`` (what ``flask --app`` was given; empty: Flask's own discovery of
``wsgi.py`` or ``app.py``), unless this process has one already.  Creating the app imports its
jobs, and its ``PgJobs(app)`` makes every job run inside the app's context.
"""

from __future__ import annotations

import os

from flask import Flask
from flask.cli import ScriptInfo

from pgjobs.contrib.flask import jobs_app
from pgjobs.contrib.flask.cli import APP_ENV
from pgjobs.errors import ConfigurationError


def load() -> Flask:
    """This process's Flask app: the one ``PgJobs`` was given, else the one ``flask --app``
    names."""
    found = jobs_app()
    if found is not None:
        return found
    app = ScriptInfo(app_import_path=os.environ.get(APP_ENV) or None).load_app()
    if "pgjobs" not in app.extensions:
        raise ConfigurationError(
            f"the Flask app {app.name!r} does not use pgjobs: call PgJobs(app) (or "
            "jobs.init_app(app)) where it is created"
        )
    return app


app = load()
