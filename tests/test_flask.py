"""pgjobs.contrib.flask on the real PostgreSQL: settings from app.config, enqueueing on
Flask-SQLAlchemy's session (committed or rolled back with the rows), jobs run in the app's
context by a worker, the dashboard as a blueprint behind the app's auth, and ``flask pgjobs``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, abort, current_app, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import pgjobs
from pgjobs import hooks, runtime
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.contrib import flask as pgjobs_flask
from pgjobs.contrib import sqlalchemy as pgjobs_sqlalchemy
from pgjobs.contrib.flask import PgJobs, settings
from pgjobs.contrib.flask.dashboard import dashboard_blueprint
from pgjobs.db.database import Database
from pgjobs.db.urls import sqlalchemy_url
from pgjobs.processes.worker import Worker
from tests.engine_helpers import run_once, scalar, states
from tests.web_helpers import flash, submit

pytestmark = pytest.mark.committed


class Base(DeclarativeBase):
    pass


orm = SQLAlchemy(model_class=Base)
jobs = PgJobs()


class Account(orm.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "contrib_flask_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))
    notes: Mapped[list[Note]] = relationship(order_by="Note.id")


class Note(orm.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "contrib_flask_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("contrib_flask_accounts.id"))
    text: Mapped[str] = mapped_column(String(100))


RAN: list[Any] = []


class Greet(pgjobs.Job):
    discard_on = [pgjobs.DeserializationError]

    def perform(self, account: Account) -> None:
        same = orm.session() is pgjobs_sqlalchemy.session()  # the job's session is db.session's
        RAN.append((current_app.name, account.email, [n.text for n in account.notes], same))
        account.email = account.email.upper()
        orm.session.commit()


def make_app(url: str, **config: Any) -> Flask:
    app = Flask("accounts")
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(url)
    app.config.update(config)
    orm.init_app(app)
    jobs.init_app(app)

    @app.post("/accounts")
    def create() -> tuple[dict[str, Any], int]:
        account = Account(email=request.form["email"], notes=[Note(text="first")])
        orm.session.add(account)
        orm.session.flush()
        job = jobs.perform_later(Greet, account)
        if request.form.get("fail"):
            raise RuntimeError("refused after the enqueue")  # the teardown rolls back
        orm.session.commit()
        return {"id": account.id, "job_id": str(job.job_id)}, 201

    @app.post("/direct")
    def direct() -> tuple[str, int]:
        account = Account(email="direct@example.com")
        orm.session.add(account)
        orm.session.flush()
        Greet.set(connection=orm.session).perform_later(account)  # the scoped session itself
        jobs.perform_all_later([Greet(account), Greet.set(queue="other").build(account)])
        orm.session.commit()
        return "", 204

    return app


@pytest.fixture
def restored() -> Iterator[None]:
    """Undo what PgJobs(app) does to the process: the default database, the job wrappers, the
    records' session factory, and the environment ``flask pgjobs`` sets."""
    environ = dict(os.environ)
    previous = runtime.use(None)
    yield
    runtime.use(previous)
    pgjobs_sqlalchemy.use_session(None)
    hooks.unwrap_jobs(pgjobs_flask._app_context)
    pgjobs_flask._jobs_app = None
    os.environ.clear()
    os.environ.update(environ)
    RAN.clear()


@pytest.fixture
def app(test_database_url: str, db: Database, restored: None) -> Iterator[Flask]:
    made = make_app(test_database_url, TESTING=True)
    with made.app_context():
        orm.create_all()
    yield made
    with made.app_context():
        orm.drop_all()
        orm.engine.dispose()


@pytest.fixture
def worker(db: Database) -> Iterator[Worker]:
    made = Worker(Database(db.url), Config(heartbeat_interval=30), WorkerConfig(queues=("*",)))
    made.register()
    yield made
    made.stop()
    made.close()


def count(url: str, sql: str) -> int:
    return int(scalar(url, sql))


# -- settings -------------------------------------------------------------------------------------


def test_the_database_defaults_to_a_postgresql_sqlalchemy_uri() -> None:
    app = Flask("s")
    app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://u:pw@db.example/app"
    found = settings(app)
    assert (found.url, found.source) == (
        "postgresql://u:pw@db.example/app",
        "SQLALCHEMY_DATABASE_URI",
    )
    app.config["PGJOBS_DATABASE_URL"] = "postgresql://jobs@db.example/jobs"
    app.config["PGJOBS_SCHEMA"] = "queue"
    found = settings(app)
    assert (found.url, found.source, found.schema) == (
        "postgresql://jobs@db.example/jobs",
        "PGJOBS_DATABASE_URL",
        "queue",
    )
    sqlite = Flask("sqlite")
    sqlite.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///app.db"
    assert settings(sqlite).url is None and not settings(sqlite).given


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("PGJOBS_DATABSE_URL", "x", "did you mean PGJOBS_DATABASE_URL?"),
        ("PGJOBS_DATABASE_URL", "mysql://x/y", "must be a PostgreSQL URL"),
        ("PGJOBS_SCHEMA", 3, r"app.config\['PGJOBS_SCHEMA'\] must be a string"),
        ("PGJOBS_POOL_SIZE", "4", "must be a positive int"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(key: str, value: Any, message: str) -> None:
    app = Flask("bad")
    app.config[key] = value
    with pytest.raises(pgjobs.ConfigurationError, match=message):
        PgJobs(app)


def test_init_app_configures_pgjobs_from_the_app(app: Flask, test_database_url: str) -> None:
    configured = runtime._default
    assert configured is not None and configured.url == test_database_url
    assert app.extensions["pgjobs"] is jobs and "pgjobs" in app.cli.commands
    assert pgjobs_flask.jobs_app() is app


# -- enqueueing on db.session ----------------------------------------------------------------------


def test_the_job_commits_with_the_row(app: Flask, db: Database) -> None:
    response = app.test_client().post("/accounts", data={"email": "ada@example.com"})
    assert response.status_code == 201, response.text
    job_id = response.json["job_id"]  # type: ignore[index]
    assert count(db.url, f"SELECT count(*) FROM pgjobs_jobs WHERE job_id = '{job_id}'") == 1
    assert count(db.url, "SELECT count(*) FROM contrib_flask_accounts") == 1


def test_a_rollback_removes_the_job_and_the_row(app: Flask, db: Database) -> None:
    app.config["TESTING"] = False  # the error becomes a 500, and the session is removed
    response = app.test_client().post("/accounts", data={"email": "x", "fail": "1"})
    assert response.status_code == 500
    assert count(db.url, "SELECT count(*) FROM pgjobs_jobs") == 0
    assert count(db.url, "SELECT count(*) FROM contrib_flask_accounts") == 0


def test_set_connection_db_session_and_bulk(app: Flask, db: Database) -> None:
    assert app.test_client().post("/direct").status_code == 204
    assert count(db.url, "SELECT count(*) FROM pgjobs_jobs") == 3
    assert count(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE queue_name = 'other'") == 1


def test_enqueueing_without_flask_sqlalchemy_says_what_to_do(restored: None) -> None:
    app = Flask("plain")
    app.config["PGJOBS_DATABASE_URL"] = "postgresql://nowhere/none"
    ext = PgJobs(app)
    with app.app_context(), pytest.raises(pgjobs.ConfigurationError, match=r"SQLAlchemy\(app\)"):
        ext.perform_later(Greet, None)


# -- jobs run in the app's context ----------------------------------------------------------------


def test_a_worker_runs_each_job_in_the_apps_context(
    app: Flask, worker: Worker, db: Database
) -> None:
    client = app.test_client()
    first = client.post("/accounts", data={"email": "ada@example.com"}).json
    client.post("/accounts", data={"email": "grace@example.com"})
    with app.app_context():  # changed after the enqueue: the job loads the row afresh
        orm.session.get(Account, first["id"]).email = "ada@lovelace.org"  # type: ignore[index,union-attr]
        orm.session.commit()
    run_once(worker)
    assert states(db.url) == {"finished": 2}
    assert sorted(RAN) == [
        ("accounts", "ada@lovelace.org", ["first"], True),
        ("accounts", "grace@example.com", ["first"], True),
    ]
    assert (
        count(db.url, "SELECT count(*) FROM contrib_flask_accounts WHERE email = upper(email)") == 2
    )


def test_a_deleted_record_is_discarded(app: Flask, worker: Worker, db: Database) -> None:
    app.test_client().post("/accounts", data={"email": "gone@example.com"})
    with app.app_context():
        orm.session.execute(orm.delete(Note))
        orm.session.execute(orm.delete(Account))
        orm.session.commit()
    run_once(worker)
    assert RAN == [] and states(db.url) == {"finished": 1}


# -- the dashboard --------------------------------------------------------------------------------


def admin_only() -> bool:
    if request.authorization is None:
        abort(401)
    return request.authorization.username == "admin"


@pytest.fixture
def dashboard(app: Flask, db: Database) -> Flask:
    app.register_blueprint(
        dashboard_blueprint(authorize=admin_only, database=db), url_prefix="/jobs"
    )
    return app


def test_the_dashboard_is_behind_the_apps_auth(dashboard: Flask) -> None:
    client = dashboard.test_client()
    assert client.get("/jobs/").status_code == 401
    assert client.get("/jobs/queues", auth=("guest", "x")).status_code == 403
    page = client.get("/jobs/", auth=("admin", "x"))
    assert page.status_code == 200
    assert 'href="/jobs/queues"' in page.text  # links carry the prefix
    assert client.get("/jobs/static/pgjobs.css", auth=("admin", "x")).status_code == 200
    assert client.get("/jobs", auth=("admin", "x")).status_code == 308  # Flask adds the slash


def test_dashboard_actions_work_through_the_bridge(dashboard: Flask, db: Database) -> None:
    Greet.set(queue="mail").perform_later(None)
    client = dashboard.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Basic YWRtaW46eA=="  # admin:x
    response = submit(client, "/jobs/queues", "/queues/pause", {"queue": "mail"})  # type: ignore[arg-type]
    assert response.headers["location"].startswith("/jobs/")
    assert flash(client, response).startswith("success: Paused")  # type: ignore[arg-type]
    assert scalar(db.url, "SELECT queue_name FROM pgjobs_pauses") == "mail"


def test_the_dashboard_with_view_decorators(app: Flask, db: Database) -> None:
    def members_only(view: Any) -> Any:
        def guarded(**kwargs: Any) -> Any:
            if request.headers.get("X-Member") != "yes":
                abort(403)
            return view(**kwargs)

        return guarded

    blueprint = dashboard_blueprint(decorators=[members_only], database=db, name="members")
    app.register_blueprint(blueprint, url_prefix="/admin/jobs")
    client = app.test_client()
    assert client.get("/admin/jobs/").status_code == 403
    page = client.get("/admin/jobs/queues", headers={"X-Member": "yes"})
    assert page.status_code == 200 and 'href="/admin/jobs/' in page.text


def test_an_unguarded_dashboard_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGJOBS_WEB_USERNAME", raising=False)
    monkeypatch.delenv("PGJOBS_WEB_PASSWORD", raising=False)
    with pytest.raises(pgjobs.ConfigurationError, match=r"closed by default.*authorize=\.\.\."):
        dashboard_blueprint(config=Config())


# -- flask pgjobs ---------------------------------------------------------------------------------


def test_flask_pgjobs_commands_use_the_apps_database(app: Flask, test_database_url: str) -> None:
    runner = app.test_cli_runner()
    migrated = runner.invoke(args=["pgjobs", "migrate"])
    assert migrated.exit_code == 0, migrated.output
    assert os.environ["PGJOBS_DATABASE_URL"] == test_database_url
    status = runner.invoke(args=["pgjobs", "status", "--json"])
    assert status.exit_code == 0, status.output
    assert '"processes"' in status.output
    helped = runner.invoke(args=["pgjobs", "--help"])
    assert all(name in helped.output for name in ("migrate", "start", "status", "web"))


def test_flask_pgjobs_start_refuses_app(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["pgjobs", "start", "--app", "myapp.jobs"])
    assert result.exit_code == 2
    assert "drop --app" in result.output


# -- the integrations stay optional ---------------------------------------------------------------


def test_the_core_imports_no_web_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pgjobs, pgjobs.enqueue.core, pgjobs.processes.worker, pgjobs.processes.child; "
        "print(sorted(m for m in ('fastapi', 'flask', 'a2wsgi', 'flask_sqlalchemy') "
        "if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "module",
    [
        "pgjobs.contrib.sqlalchemy",
        "pgjobs.contrib.fastapi",
        "pgjobs.contrib.flask",
        "pgjobs.contrib.flask.dashboard",
    ],
)
def test_the_public_names_exist(module: str) -> None:
    import importlib

    imported = importlib.import_module(module)
    assert all(hasattr(imported, name) for name in imported.__all__)
