"""Smoke test of examples/fastapi: sign a user up through the app, run the worker once, see the
job's effect, and the dashboard behind the example's auth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from pgjobs import hooks, runtime
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.contrib import sqlalchemy as pgjobs_sqlalchemy
from pgjobs.db.database import Database
from pgjobs.processes.worker import Worker
from tests.engine_helpers import run_once, scalar, states

pytestmark = pytest.mark.committed


@pytest.fixture
def example(test_database_url: str, db: Database) -> Iterator[Any]:
    """The example module, imported here (it registers its worker session at import), and
    everything it registered undone afterwards."""
    previous_factory = pgjobs_sqlalchemy.session_factory()
    previous_database = runtime.use(None)
    from examples.fastapi import app as module

    pgjobs_sqlalchemy.use_session(module.WorkerSession)  # (already, unless imported before)
    yield module
    runtime.use(previous_database)
    pgjobs_sqlalchemy.use_session(previous_factory)
    if module._worker_database in hooks._hooks["worker_start"]:
        hooks._hooks["worker_start"].remove(module._worker_database)
    bound = module.WorkerSession.kw.get("bind")
    if bound is not None:
        module.Base.metadata.drop_all(bound)
        bound.dispose()


def test_the_fastapi_example(example: Any, test_database_url: str, db: Database) -> None:
    worker = Worker(Database(db.url), Config(heartbeat_interval=30), WorkerConfig(queues=("*",)))
    worker.register()
    try:
        with TestClient(example.create_app(test_database_url)) as client:
            created = client.post("/users", params={"email": "ada@example.com"})
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
            assert client.get(f"/users/{user_id}").json()["welcomed_at"] is None
            run_once(worker)
            assert states(db.url) == {"finished": 1}
            assert client.get(f"/users/{user_id}").json()["welcomed_at"] is not None
            assert client.get("/jobs/").status_code == 401
            assert client.get("/jobs/", auth=("admin", "admin")).status_code == 200
    finally:
        worker.stop()
        worker.close()
    assert scalar(db.url, "SELECT count(*) FROM example_fastapi_users") == 1
