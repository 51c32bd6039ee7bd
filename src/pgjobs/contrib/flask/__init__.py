"""Flask: the ``PgJobs`` extension.  ``pip install "pgjobs[flask]"``.

::

    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from pgjobs.contrib.flask import PgJobs

    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://..."  # pgjobs uses it too
    db = SQLAlchemy(app)
    jobs = PgJobs(app)  # or PgJobs() and jobs.init_app(app) in a factory


    @app.post("/users")
    def sign_up():
        user = User(email=request.form["email"])
        db.session.add(user)
        db.session.flush()  # the user has its id: the job can refer to it
        jobs.perform_later(SendWelcome, user)  # on db.session, inside its transaction
        db.session.commit()  # the user and the job, or neither
        ...

Then ``flask pgjobs migrate`` and ``flask pgjobs start`` (every ``pgjobs`` command, with this
app's settings; see :mod:`pgjobs.contrib.flask.cli`), and the dashboard as a blueprint
(:func:`pgjobs.contrib.flask.dashboard.dashboard_blueprint`).

Settings, from ``app.config``:

=======================  ===========================================================================
``PGJOBS_DATABASE_URL``  pgjobs' database; default: ``SQLALCHEMY_DATABASE_URI`` when that is a
                         PostgreSQL URL, else pgjobs' own defaults (``PGJOBS_DATABASE_URL`` in the
                         environment, queue.yml, the embedded development server)
``PGJOBS_SCHEMA``        the schema of pgjobs' tables (default: the connection's search path)
``PGJOBS_CONFIG``        the queue.yml to read (default: ``$PGJOBS_CONFIG`` or config/queue.yml)
``PGJOBS_POOL_SIZE``     connections of pgjobs' own pool in this process (default 4)
=======================  ===========================================================================

In a worker, every job runs inside the app's application context (:func:`pgjobs.wrap_jobs`), so
``current_app``, ``db.session`` and the app's config work in ``perform``; Flask-SQLAlchemy's
session is then the job's session, through which model arguments are loaded
(:mod:`pgjobs.contrib.sqlalchemy`) and which is closed when the job ends.  One Flask app per
worker process: the last one given to ``PgJobs`` is the one jobs run in.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

from pgjobs.contrib import sqlalchemy as records
from pgjobs.contrib.flask.config import Settings, settings
from pgjobs.contrib.sqlalchemy import Enqueueable, bind
from pgjobs.enqueue.core import perform_all_later as _perform_all_later
from pgjobs.enqueue.handle import EnqueuedJob
from pgjobs.errors import ConfigurationError
from pgjobs.hooks import wrap_jobs
from pgjobs.jobs.base import Job
from pgjobs.runtime import configure

__all__ = ["PgJobs", "Settings", "jobs_app", "settings"]

# -- the app jobs run in ---------------------------------------------------------------------------

_jobs_app: Flask | None = None


def jobs_app() -> Flask | None:
    """The Flask app whose context every job of this process runs in (the last one given to
    :class:`PgJobs`), or None."""
    return _jobs_app


def _app_context(claimed: object) -> AbstractContextManager[object]:
    app = _jobs_app
    return nullcontext() if app is None else app.app_context()


def _flask_sqlalchemy_session() -> Session:
    """Flask-SQLAlchemy's session of the current app context (``db.session``'s)."""
    found = current_app.extensions.get("sqlalchemy")
    if found is None:
        raise ConfigurationError(
            f"the Flask app {current_app.name!r} has no Flask-SQLAlchemy extension, whose "
            "db.session PgJobs enqueues on and loads model arguments through: create "
            "SQLAlchemy(app), or enqueue with Job.set(connection=...).perform_later(...) and call "
            "pgjobs.contrib.sqlalchemy.use_session(sessionmaker(engine)) after PgJobs(app)"
        )
    made = found.session()
    assert isinstance(made, Session)
    return made


# -- the extension ---------------------------------------------------------------------------------


class PgJobs:
    """The pgjobs extension: ``PgJobs(app)``, or ``PgJobs()`` then :meth:`init_app` (factories)."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``app.config`` (ConfigurationError on a bad setting), configure pgjobs' database
        from it when it names one, add the ``flask pgjobs`` commands, run this process's jobs in
        this app's context, and load model arguments through Flask-SQLAlchemy's session (unless
        :func:`pgjobs.contrib.sqlalchemy.use_session` was given another factory)."""
        global _jobs_app
        from pgjobs.contrib.flask.cli import pgjobs_group

        found = settings(app)
        app.extensions["pgjobs"] = self
        app.cli.add_command(pgjobs_group)
        if found.given:  # else pgjobs resolves its database itself, on first use
            configure(
                found.url,
                schema=found.schema,
                pool_size=found.pool_size,
                config_path=found.config,
            )
        _jobs_app = app
        wrap_jobs(_app_context)  # before the records' session: it needs the app context
        if records.session_factory() is None:
            records.use_session(_flask_sqlalchemy_session)

    def perform_later(self, job: Enqueueable, /, *args: Any, **kwargs: Any) -> EnqueuedJob:
        """Enqueue on the current app's Flask-SQLAlchemy session (``db.session``), inside its
        transaction: ``db.session.commit()`` commits the job with your rows, a rollback removes
        both.  ``job``: a job class, a ``@pgjobs.job`` function, ``Job.set(...)`` (with the
        arguments of ``perform``) or a built job (alone)."""
        return bind(_flask_sqlalchemy_session(), job, args, kwargs).enqueue()

    def perform_all_later(self, jobs: Sequence[Job]) -> list[EnqueuedJob]:
        """Enqueue built jobs in bulk on the current app's Flask-SQLAlchemy session."""
        return _perform_all_later(jobs, connection=_flask_sqlalchemy_session())
