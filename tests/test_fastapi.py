"""pgjobs.contrib.fastapi on the real PostgreSQL: the lifespan, enqueueing inside the request's
AsyncSession transaction (a job exists if and only if the request commits), and the dashboard
mounted behind the application's own auth dependency."""

# No ``from __future__ import annotations``: FastAPI must see the route's Annotated dependencies,
# which are local to build_app.
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from sqlalchemy import String, create_engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.testclient import TestClient

import pgjobs
from pgjobs import runtime
from pgjobs.contrib.fastapi import Enqueuer, enqueuer, lifespan, mount_dashboard
from pgjobs.db.database import Database
from pgjobs.db.urls import sqlalchemy_url
from tests.engine_helpers import scalar
from tests.web_helpers import flash, submit

pytestmark = pytest.mark.committed


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "contrib_fastapi_members"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))


class Welcome(pgjobs.Job):
    queue_as = "mail"

    def perform(self, member: Member) -> None: ...


@pgjobs.job(queue="mail")
def digest(n: int) -> None: ...


def require_admin(x_admin: Annotated[str | None, Header()] = None) -> str:
    """The application's own auth: 401 without the header, 403 with a wrong one."""
    if x_admin is None:
        raise HTTPException(401, "log in", {"WWW-Authenticate": "Bearer"})
    if x_admin != "yes":
        raise HTTPException(403, "admins only")
    return x_admin


def build_app(url: str, database: Database) -> FastAPI:
    engine = create_async_engine(sqlalchemy_url(url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    enqueue_dep = Annotated[Enqueuer, Depends(enqueuer(get_session))]
    session_dep = Annotated[AsyncSession, Depends(get_session)]

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(url)(app):  # pgjobs' lifespan inside the application's own
            yield
        await engine.dispose()

    app = FastAPI(lifespan=running)

    @app.post("/members")
    async def join(email: str, session: session_dep, enqueue: enqueue_dep) -> dict[str, Any]:
        member = Member(email=email)
        session.add(member)
        await session.flush()
        job = await enqueue(Welcome, member)
        if email.startswith("fail"):
            raise HTTPException(400, "refused after the enqueue")  # never commits
        await session.commit()
        return {"id": member.id, "job_id": str(job.job_id)}

    @app.post("/digests")
    async def digests(session: session_dep, enqueue: enqueue_dep) -> list[str]:
        first = await enqueue(digest.set(priority=3), 1)
        built = await enqueue(digest.set(queue="other").build(5))
        rest = await enqueue.all([digest.build(n) for n in range(2, 5)])
        await session.commit()
        return [str(h.job_id) for h in (first, built, *rest)]

    def get_sync_session() -> Iterator[Session]:
        with Session(create_engine(sqlalchemy_url(url))) as session:
            yield session

    @app.post("/sync")
    async def wrong(enqueue: Annotated[Enqueuer, Depends(enqueuer(get_sync_session))]) -> None:
        pass

    mount_dashboard(app, "/jobs", dependencies=[Depends(require_admin)], database=database)
    return app


@pytest.fixture
def client(test_database_url: str, db: Database) -> Iterator[TestClient]:
    engine = create_engine(sqlalchemy_url(test_database_url))
    Base.metadata.create_all(engine)
    previous = runtime.use(None)
    try:
        with TestClient(build_app(test_database_url, db), follow_redirects=False) as made:
            yield made
    finally:
        runtime.use(previous)
        Base.metadata.drop_all(engine)
        engine.dispose()


def count(url: str, sql: str, *params: Any) -> int:
    return int(scalar(url, sql, params or None))


def test_the_lifespan_configures_pgjobs(client: TestClient, test_database_url: str) -> None:
    configured = runtime._default
    assert configured is not None and configured.url == test_database_url
    assert configured._async_pool is not None  # opened at start-up


def test_a_job_enqueued_in_a_request_commits_with_it(client: TestClient, db: Database) -> None:
    response = client.post("/members", params={"email": "ada@example.com"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert count(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE job_id = %s", body["job_id"]) == 1
    assert count(db.url, "SELECT count(*) FROM contrib_fastapi_members") == 1
    arguments = scalar(db.url, "SELECT arguments FROM pgjobs_jobs")
    assert arguments["args"][0]["v"] == ["tests.test_fastapi:Member", [body["id"]]]


def test_a_request_that_does_not_commit_leaves_no_job(client: TestClient, db: Database) -> None:
    response = client.post("/members", params={"email": "fail@example.com"})
    assert response.status_code == 400
    assert count(db.url, "SELECT count(*) FROM pgjobs_jobs") == 0
    assert count(db.url, "SELECT count(*) FROM contrib_fastapi_members") == 0


def test_functions_options_built_jobs_and_bulk(client: TestClient, db: Database) -> None:
    response = client.post("/digests")
    assert response.status_code == 200, response.text
    queued = count(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE job_id = ANY(%s::uuid[])",
                   response.json())  # fmt: skip
    assert queued == 5
    assert count(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE priority = 3") == 1
    assert count(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE queue_name = 'other'") == 1


def test_a_sync_session_dependency_is_refused_clearly(client: TestClient) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="not a SQLAlchemy AsyncSession"):
        TestClient(client.app).post("/sync")


def test_the_dashboard_is_behind_the_apps_auth(client: TestClient) -> None:
    assert client.get("/jobs/").status_code == 401
    assert client.get("/jobs/queues", headers={"X-Admin": "no"}).status_code == 403
    assert client.get("/jobs/static/pgjobs.css").status_code == 401
    page = client.get("/jobs/", headers={"X-Admin": "yes"})
    assert page.status_code == 200
    assert 'href="/jobs/queues"' in page.text  # links carry the prefix
    redirect = client.get("/jobs", headers={"X-Admin": "yes"}, follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"].endswith("/jobs/")
    assert client.get("/openapi.json").json()["paths"].keys() == {
        "/members",
        "/digests",
        "/sync",
    }


def test_dashboard_actions_work_through_the_mount(client: TestClient, db: Database) -> None:
    digest.perform_later(1)
    client.headers["X-Admin"] = "yes"
    response = submit(client, "/jobs/queues", "/queues/pause", {"queue": "mail"})
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/jobs/")
    assert flash(client, response).startswith("success: Paused")
    assert scalar(db.url, "SELECT queue_name FROM pgjobs_pauses") == "mail"


def test_dependency_overrides_apply_to_the_dashboard(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, FastAPI)
    app.dependency_overrides[require_admin] = lambda: "tests"
    try:
        assert client.get("/jobs/queues").status_code == 200
    finally:
        app.dependency_overrides.clear()


def test_mount_dashboard_refuses_a_bad_path_and_an_open_dashboard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGJOBS_WEB_USERNAME", raising=False)
    monkeypatch.delenv("PGJOBS_WEB_PASSWORD", raising=False)
    with pytest.raises(pgjobs.ConfigurationError, match="path must start with '/'"):
        mount_dashboard(FastAPI(), "jobs/", dependencies=[Depends(require_admin)])
    with pytest.raises(pgjobs.ConfigurationError, match=r"closed by default.*dependencies="):
        mount_dashboard(FastAPI(), "/jobs", config=pgjobs_config())


def pgjobs_config() -> Any:
    from pgjobs.config.queue import Config

    return Config()
