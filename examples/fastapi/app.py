"""The FastAPI example: a user model, a route that creates a user and enqueues its welcome email
in the same transaction, and the job, which gets the user loaded afresh by the worker.

Run it with ``examples/fastapi/run`` (see README.md); the worker imports this module
(``pgjobs start --app examples.fastapi.app``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from sqlalchemy import DateTime, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import pgjobs
from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pgjobs.contrib import sqlalchemy as pgjobs_sqlalchemy
from pgjobs.contrib.fastapi import Enqueuer, enqueuer, lifespan, mount_dashboard
from pgjobs.db.urls import sqlalchemy_url


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "example_fastapi_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    welcomed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SendWelcome(pgjobs.Job):
    queue_as = "mailers"
    discard_on = [pgjobs.DeserializationError]  # the user was deleted before the job ran

    def perform(self, user: User) -> None:
        print(f"sending the welcome email to {user.email}", flush=True)
        user.welcomed_at = datetime.now(UTC)
        pgjobs_sqlalchemy.session().commit()  # the job's session: the one user was loaded in


# The worker loads job arguments synchronously, through this sessionmaker, even though the app
# itself is async. It is bound to the database when a worker starts, or by create_app().
WorkerSession = sessionmaker()
pgjobs_sqlalchemy.use_session(WorkerSession)


def bind_worker_sessions(url: str) -> None:
    from sqlalchemy import create_engine

    WorkerSession.configure(bind=create_engine(sqlalchemy_url(url)))


@pgjobs.on_worker_start
def _worker_database(process: Any) -> None:
    bind_worker_sessions(pgjobs.get_database().url)  # the database `pgjobs start` was given


security = HTTPBasic()


def require_admin(credentials: Annotated[HTTPBasicCredentials, Depends(security)]) -> str:
    """The application's own auth; it guards the dashboard too."""
    password = os.environ.get("EXAMPLE_ADMIN_PASSWORD", "admin")
    if not (
        secrets.compare_digest(credentials.username, "admin")
        and secrets.compare_digest(credentials.password, password)
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong credentials", {"WWW-Authenticate": "Basic"}
        )
    return credentials.username


# The request's session: the routes and the enqueuer share it (FastAPI caches a dependency per
# request). Bound to the database by create_app().
sessions = async_sessionmaker(expire_on_commit=False)


async def get_session() -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]
Enqueue = Annotated[Enqueuer, Depends(enqueuer(get_session))]
router = APIRouter()


@router.post("/users", status_code=201)
async def sign_up(email: str, session: DbSession, enqueue: Enqueue) -> dict[str, Any]:
    user = User(email=email)
    session.add(user)
    await session.flush()  # the user has its id now: the job can refer to it
    job = await enqueue(SendWelcome, user)  # in the same transaction as the user
    await session.commit()  # both, or (on any error before this line) neither
    return {"id": user.id, "job_id": str(job.job_id)}


@router.get("/users/{user_id}")
async def show(user_id: int, session: DbSession) -> dict[str, Any]:
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {user_id}")
    welcomed = user.welcomed_at.isoformat() if user.welcomed_at else None
    return {"id": user.id, "email": user.email, "welcomed_at": welcomed}


def create_app(url: str) -> FastAPI:
    """The application on the database ``url`` (pgjobs' tables and the users table together)."""
    engine = create_async_engine(sqlalchemy_url(url))
    sessions.configure(bind=engine)
    bind_worker_sessions(url)
    pgjobs_running = lifespan(url)

    @asynccontextmanager
    async def running(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        try:
            async with pgjobs_running(app):  # pgjobs' lifespan inside the app's own
                yield
        finally:
            await engine.dispose()

    app = FastAPI(title="pgjobs FastAPI example", lifespan=running)
    app.include_router(router)
    mount_dashboard(app, "/jobs", dependencies=[Depends(require_admin)])
    return app
