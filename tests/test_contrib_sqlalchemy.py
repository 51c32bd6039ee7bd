"""pgjobs.contrib.sqlalchemy: mapped instances as job arguments (references, loaded afresh in the
job's session), and enqueueing on SQLAlchemy sessions, on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    scoped_session,
    sessionmaker,
)

import pgjobs
from pgjobs import hooks
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.contrib import sqlalchemy as pgjobs_sqlalchemy
from pgjobs.db.database import Database
from pgjobs.db.urls import sqlalchemy_url
from pgjobs.processes.worker import Worker
from pgjobs.serialization import deserialize_arguments, serialize_arguments
from tests.engine_helpers import run_once, scalar, states

pytestmark = pytest.mark.committed


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "contrib_sa_customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    orders: Mapped[list[Order]] = relationship(back_populates="customer", order_by="Order.id")


class Order(Base):
    __tablename__ = "contrib_sa_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("contrib_sa_customers.id"))
    item: Mapped[str] = mapped_column(String(100))
    customer: Mapped[Customer] = relationship(back_populates="orders")


class Membership(Base):  # a composite primary key
    __tablename__ = "contrib_sa_memberships"

    team: Mapped[str] = mapped_column(String(50), primary_key=True)
    member: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(String(50))


RAN: list[Any] = []


class Summarize(pgjobs.Job):
    discard_on = [pgjobs.DeserializationError]  # the customer was deleted meanwhile

    def perform(self, customer: Customer) -> None:
        session = pgjobs_sqlalchemy.session()
        # The lazy load works: the job's session is still open.
        RAN.append((customer.name, [o.item for o in customer.orders], session))
        assert pgjobs_sqlalchemy.session() is session  # one session per job
        customer.name += " (summarized)"
        session.commit()


class SummarizeAsync(pgjobs.Job):
    async def perform(self, customer: Customer) -> None:
        RAN.append((customer.name, pgjobs_sqlalchemy.session()))


class Promote(pgjobs.Job):
    def perform(self, membership: Membership) -> None:
        RAN.append((membership.team, membership.member, membership.role))


class Plain(pgjobs.Job):
    def perform(self, n: int) -> None:
        RAN.append(n)


@pytest.fixture(scope="module")
def engine(test_database_url: str) -> Iterator[Engine]:
    made = create_engine(sqlalchemy_url(test_database_url))
    Base.metadata.create_all(made)
    yield made
    Base.metadata.drop_all(made)
    made.dispose()


@pytest.fixture
def sessions(engine: Engine, db: Database) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database, also the factory the worker loads records through."""
    factory = sessionmaker(engine, expire_on_commit=False)
    opened: list[Session] = []

    def counting() -> Session:
        made = factory()
        opened.append(made)
        return made

    counting.opened = opened  # type: ignore[attr-defined]
    previous = pgjobs_sqlalchemy.use_session(counting)
    yield factory
    pgjobs_sqlalchemy.use_session(None)
    assert pgjobs_sqlalchemy._wrap not in hooks.job_wrappers
    pgjobs_sqlalchemy.use_session(previous)
    RAN.clear()
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def worker(db: Database) -> Iterator[Worker]:
    made = Worker(Database(db.url), Config(heartbeat_interval=30), WorkerConfig(queues=("*",)))
    made.register()
    yield made
    made.stop()
    made.close()


def customer(sessions: sessionmaker[Session], name: str, *items: str) -> Customer:
    with sessions() as session:
        made = Customer(name=name, orders=[Order(item=i) for i in items])
        session.add(made)
        session.commit()
        return made  # detached, expired: its identity is all a job needs


def job_count(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM pgjobs_jobs"))


# -- references -----------------------------------------------------------------------------------


def test_an_instance_is_stored_as_its_class_and_identity(sessions: sessionmaker[Session]) -> None:
    ada = customer(sessions, "Ada")
    stored = serialize_arguments((ada,), {})
    assert stored["args"] == [
        {
            "__pgjobs__": "record",
            "kind": "sqlalchemy",
            "v": ["tests.test_contrib_sqlalchemy:Customer", [ada.id]],
        }
    ]


def test_an_unflushed_instance_is_refused_at_enqueue(
    sessions: sessionmaker[Session], db: Database
) -> None:
    with pytest.raises(pgjobs.SerializationError) as transient:
        Summarize.perform_later(Customer(name="new"))
    assert "argument 0" in str(transient.value)
    assert "not added to a session): flush the session first" in str(transient.value)
    with sessions() as session:
        pending = Customer(name="pending")
        session.add(pending)
        with pytest.raises(pgjobs.SerializationError, match="pending in a session, not flushed"):
            Summarize.set(connection=session).perform_later(pending)
    assert job_count(db.url) == 0


def test_a_model_defined_in_a_function_is_refused(sessions: sessionmaker[Session]) -> None:
    class Local(Base):
        __tablename__ = "contrib_sa_local"
        id: Mapped[int] = mapped_column(primary_key=True)

    local = Local(id=1)
    from sqlalchemy.orm import make_transient_to_detached

    make_transient_to_detached(local)  # it has an identity, but no importable class
    with pytest.raises(pgjobs.SerializationError, match="defined in a function"):
        serialize_arguments((local,), {})
    Base.metadata.remove(Local.__table__)  # type: ignore[arg-type]


# -- the worker loads them in the job's session ---------------------------------------------------


def test_the_worker_loads_the_row_afresh_and_lazy_loads_work(
    sessions: sessionmaker[Session], worker: Worker, db: Database
) -> None:
    ada = customer(sessions, "Ada", "pen", "ink")
    Summarize.perform_later(ada)
    with sessions() as session:  # changed after the enqueue: the job sees the new name
        session.execute(text("UPDATE contrib_sa_customers SET name = 'Ada L.'"))
        session.commit()
    run_once(worker)
    assert states(db.url) == {"finished": 1}
    ((name, items, job_session),) = RAN
    assert (name, items) == ("Ada L.", ["pen", "ink"])
    assert not job_session.in_transaction()  # closed once the job ended
    assert scalar(db.url, "SELECT name FROM contrib_sa_customers") == "Ada L. (summarized)"


def test_a_deleted_row_raises_deserialization_error_and_discard_on_discards(
    sessions: sessionmaker[Session], worker: Worker, db: Database
) -> None:
    gone = customer(sessions, "Gone")
    handle = Summarize.perform_later(gone)
    with sessions() as session:
        session.execute(text("DELETE FROM contrib_sa_customers"))
        session.commit()
    run_once(worker)
    assert RAN == []
    assert states(db.url) == {"finished": 1}  # discarded: finished without running
    stored = json.dumps(serialize_arguments((gone,), {}))
    missing = f"Customer {gone.id} no longer exists"
    with pgjobs_sqlalchemy.job_session(), pytest.raises(pgjobs.DeserializationError, match=missing):
        deserialize_arguments(stored)
    assert handle.enqueued


def test_bulk_enqueue_on_a_session_and_composite_keys(
    sessions: sessionmaker[Session], worker: Worker, db: Database
) -> None:
    with sessions() as session:
        grace, linus = Customer(name="Grace"), Customer(name="Linus")
        member = Membership(team="core", member=7, role="reviewer")
        session.add_all([grace, linus, member])
        session.flush()
        handles = pgjobs.perform_all_later(
            [Summarize(grace), Summarize(linus), Promote(member)], connection=session
        )
        session.commit()
    assert len(handles) == 3
    run_once(worker)
    assert states(db.url) == {"finished": 3}
    assert sorted(r[0] for r in RAN) == ["Grace", "Linus", "core"]
    assert ("core", 7, "reviewer") in RAN
    sessions_used = [r[2] for r in RAN if len(r) == 3 and isinstance(r[2], Session)]
    assert len({id(s) for s in sessions_used}) == 2  # a session per job


def test_a_job_without_records_opens_no_session(
    sessions: sessionmaker[Session], worker: Worker, db: Database
) -> None:
    Plain.perform_later(1)
    run_once(worker)
    assert RAN == [1]
    opened = pgjobs_sqlalchemy.session_factory().opened  # type: ignore[union-attr]
    assert opened == []


def test_an_async_perform_sees_the_jobs_session(
    sessions: sessionmaker[Session], worker: Worker, db: Database
) -> None:
    SummarizeAsync.perform_later(customer(sessions, "Async"))
    run_once(worker)
    ((name, job_session),) = RAN
    assert name == "Async" and isinstance(job_session, Session)


def test_session_outside_a_job_and_job_session_for_perform_now(
    sessions: sessionmaker[Session],
) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="only available while a worker runs"):
        pgjobs_sqlalchemy.session()
    ada = customer(sessions, "Ada", "pen")
    with pgjobs_sqlalchemy.job_session(), sessions() as mine:
        Summarize.perform_now(mine.get(Customer, ada.id))
        ((name, items, _),) = RAN
        assert (name, items) == ("Ada", ["pen"])


def test_use_session_refuses_what_cannot_load_in_the_worker(test_database_url: str) -> None:
    async_engine = create_async_engine(sqlalchemy_url(test_database_url))
    with pytest.raises(pgjobs.ConfigurationError, match="sync sessionmaker"):
        pgjobs_sqlalchemy.use_session(async_sessionmaker(async_engine))  # type: ignore[arg-type]
    with pytest.raises(pgjobs.ConfigurationError, match="must be a callable"):
        pgjobs_sqlalchemy.use_session("sessions")  # type: ignore[arg-type]
    assert pgjobs_sqlalchemy.session_factory() is None
    with (
        pytest.raises(pgjobs.ConfigurationError, match="use_session"),
        pgjobs_sqlalchemy.job_session(),
    ):
        pass
    asyncio.run(async_engine.dispose())


# -- enqueueing on sessions: the job commits or rolls back with them ------------------------------


def test_a_session_commits_or_rolls_back_the_job_with_the_row(
    sessions: sessionmaker[Session], db: Database
) -> None:
    with sessions() as session:
        kept = Customer(name="kept")
        session.add(kept)
        session.flush()
        committed = Summarize.set(connection=session).perform_later(kept)
        session.commit()
        dropped = Customer(name="dropped")
        session.add(dropped)
        session.flush()
        rolled_back = Summarize.set(connection=session).perform_later(dropped)
        session.rollback()
    ids = {str(r[0]) for r in _job_ids(db.url)}
    assert str(committed.job_id) in ids and str(rolled_back.job_id) not in ids
    assert scalar(db.url, "SELECT array_agg(name) FROM contrib_sa_customers") == ["kept"]


def test_a_scoped_session_is_accepted(sessions: sessionmaker[Session], db: Database) -> None:
    scoped = scoped_session(sessions)
    user = Customer(name="scoped")
    scoped.add(user)
    scoped.flush()
    handle = Summarize.set(connection=scoped).perform_later(user)
    pgjobs.perform_all_later([Plain(2)], connection=scoped)
    scoped.commit()
    scoped.remove()
    assert job_count(db.url) == 2 and str(handle.job_id) in {str(r[0]) for r in _job_ids(db.url)}


def test_an_async_session_commits_or_rolls_back_the_job(
    sessions: sessionmaker[Session], test_database_url: str, db: Database
) -> None:
    async def scenario() -> tuple[pgjobs.EnqueuedJob, pgjobs.EnqueuedJob]:
        engine = create_async_engine(sqlalchemy_url(test_database_url))
        async with AsyncSession(engine) as session:
            kept = Customer(name="async kept")
            session.add(kept)
            await session.flush()
            committed = await Summarize.set(connection=session).perform_later_async(kept)
            await pgjobs.perform_all_later_async([Plain(3)], connection=session)
            await session.commit()
            dropped = Customer(name="async dropped")
            session.add(dropped)
            await session.flush()
            rolled_back = await Summarize.set(connection=session).perform_later_async(dropped)
            await session.rollback()
            names = (await session.scalars(select(Customer.name))).all()
            assert names == ["async kept"]
        await engine.dispose()
        return committed, rolled_back

    committed, rolled_back = asyncio.run(scenario())
    ids = {str(r[0]) for r in _job_ids(db.url)}
    assert str(committed.job_id) in ids and str(rolled_back.job_id) not in ids
    assert len(ids) == 2


def test_other_drivers_are_refused_with_a_clear_error(db: Database) -> None:
    engine = create_engine("sqlite://")
    with Session(engine) as session, pytest.raises(pgjobs.ConfigurationError) as raised:
        Plain.set(connection=session).perform_later(1)
    engine.dispose()
    message = str(raised.value)
    assert f"{sqlite3.Connection.__module__}.Connection" in message
    assert "postgresql+psycopg driver" in message
    assert job_count(db.url) == 0


def test_asyncpg_is_refused_with_a_clear_error(test_database_url: str, db: Database) -> None:
    pytest.importorskip("asyncpg")

    async def scenario() -> None:
        url = sqlalchemy_url(test_database_url).replace("+psycopg", "+asyncpg", 1)
        engine = create_async_engine(url)
        try:
            async with AsyncSession(engine) as session:
                with pytest.raises(
                    pgjobs.ConfigurationError, match=r"asyncpg.*postgresql\+psycopg"
                ):
                    await Plain.set(connection=session).perform_later_async(1)
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    assert job_count(db.url) == 0


def test_a_sync_enqueue_on_an_async_session_says_to_use_the_async_call(db: Database) -> None:
    engine = create_async_engine("postgresql+psycopg://localhost/none")
    with pytest.raises(pgjobs.ConfigurationError, match="AsyncSession with perform_later_async"):
        Plain.set(connection=AsyncSession(engine)).perform_later(1)


def _job_ids(url: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT job_id FROM pgjobs_jobs").fetchall()
