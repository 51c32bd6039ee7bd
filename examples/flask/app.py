"""The Flask example: a user model (Flask-SQLAlchemy), a view that creates a user and enqueues
its welcome email in the same transaction, and the job, which runs in the app's context with the
user loaded afresh.

Run it with ``examples/flask/run`` (see README.md); its worker is
``flask --app examples.flask.app pgjobs start``, which calls :func:`create_app` in each process.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.datastructures import WWWAuthenticate

import pgjobs
from flask import Flask, abort, request
from pgjobs.config import settings
from pgjobs.contrib.flask import PgJobs
from pgjobs.contrib.flask.dashboard import dashboard_blueprint
from pgjobs.db.urls import sqlalchemy_url


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
jobs = PgJobs()


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "example_flask_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    welcomed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SendWelcome(pgjobs.Job):
    queue_as = "mailers"
    discard_on = [pgjobs.DeserializationError]  # the user was deleted before the job ran

    def perform(self, user: User) -> None:
        # In the app's context: db.session is the session the user was loaded in.
        print(f"sending the welcome email to {user.email}", flush=True)
        user.welcomed_at = datetime.now(UTC)
        db.session.commit()


def is_admin() -> bool:
    """The application's own auth (here: HTTP basic); it guards the dashboard too."""
    given = request.authorization
    password = os.environ.get("EXAMPLE_ADMIN_PASSWORD", "admin")
    if given is None or not (
        secrets.compare_digest(given.username or "", "admin")
        and secrets.compare_digest(given.password or "", password)
    ):
        abort(401, www_authenticate=WWWAuthenticate("basic", {"realm": "example"}))
    return True


def create_app(url: str | None = None) -> Flask:
    """The app on ``url``, else ``$PGJOBS_DATABASE_URL`` (or the embedded server)."""
    if url is None:
        chosen = settings.resolve()
        assert chosen is not None
        url = chosen.url
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(url)  # pgjobs uses it too
    db.init_app(app)
    jobs.init_app(app)
    with app.app_context():
        db.create_all()

    @app.post("/users")
    def sign_up() -> tuple[dict[str, Any], int]:
        user = User(email=request.form["email"])
        db.session.add(user)
        db.session.flush()  # the user has its id now: the job can refer to it
        job = jobs.perform_later(SendWelcome, user)  # on db.session, in its transaction
        db.session.commit()  # both, or (on any error before this line) neither
        return {"id": user.id, "job_id": str(job.job_id)}, 201

    @app.get("/users/<int:user_id>")
    def show(user_id: int) -> dict[str, Any]:
        user = db.get_or_404(User, user_id)
        welcomed = user.welcomed_at.isoformat() if user.welcomed_at else None
        return {"id": user.id, "email": user.email, "welcomed_at": welcomed}

    app.register_blueprint(dashboard_blueprint(authorize=is_admin), url_prefix="/jobs")
    return app
