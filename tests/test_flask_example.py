"""Smoke tests of examples/flask: sign a user up through the app and run the job, in-process and
with a real ``flask --app examples.flask.app pgjobs start``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from pgjobs import hooks, runtime
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.contrib import flask as pgjobs_flask
from pgjobs.contrib import sqlalchemy as pgjobs_sqlalchemy
from pgjobs.db.database import Database
from pgjobs.processes.worker import Worker
from tests.engine_helpers import ROOT, config_file, run_once, scalar, states, wait_for

pytestmark = pytest.mark.committed


@pytest.fixture
def app(test_database_url: str, db: Database) -> Iterator[Flask]:
    from examples.flask.app import create_app
    from examples.flask.app import db as models

    previous = runtime.use(None)
    made = create_app(test_database_url)
    yield made
    runtime.use(previous)
    pgjobs_sqlalchemy.use_session(None)
    hooks.unwrap_jobs(pgjobs_flask._app_context)
    pgjobs_flask._jobs_app = None
    with made.app_context():
        models.drop_all()
        models.engine.dispose()


def welcomed(url: str) -> Any:
    return scalar(url, "SELECT welcomed_at FROM example_flask_users")


def test_the_flask_example_in_process(app: Flask, db: Database) -> None:
    client = app.test_client()
    created = client.post("/users", data={"email": "ada@example.com"})
    assert created.status_code == 201, created.text
    worker = Worker(Database(db.url), Config(heartbeat_interval=30), WorkerConfig(queues=("*",)))
    worker.register()
    try:
        run_once(worker)
    finally:
        worker.stop()
        worker.close()
    assert states(db.url) == {"finished": 1}
    user = client.get(f"/users/{created.json['id']}").json  # type: ignore[index]
    assert user["welcomed_at"] is not None  # type: ignore[index]
    assert client.get("/jobs/").status_code == 401
    assert client.get("/jobs/", auth=("admin", "admin")).status_code == 200


@pytest.mark.slow
def test_flask_pgjobs_start_runs_the_examples_job(
    app: Flask, db: Database, test_database_url: str, tmp_path: Path
) -> None:
    created = app.test_client().post("/users", data={"email": "grace@example.com"})
    assert created.status_code == 201, created.text
    log = tmp_path / "flask-pgjobs.out"
    env = {**os.environ, "PGJOBS_DATABASE_URL": test_database_url, "PYTHONPATH": str(ROOT)}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "examples.flask.app", "pgjobs", "start",
             "--config", str(config_file(tmp_path)), "--skip-recurring"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: welcomed(test_database_url) is not None, timeout=60)
        assert states(test_database_url) == {"finished": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        print(log.read_text())
    assert "sending the welcome email to grace@example.com" in log.read_text()
