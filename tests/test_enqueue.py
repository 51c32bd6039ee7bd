"""Defining and enqueueing jobs: placement, transactions, bulk, callbacks, names."""

from __future__ import annotations

import asyncio
import enum
import os
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, pool
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import pgjobs
from pgjobs.db.database import Database
from pgjobs.db.urls import sqlalchemy_url
from pgjobs.jobs.base import resolve
from pgjobs.serialization import deserialize_arguments
from tests import sample_jobs
from tests.sample_jobs import Aliased, Child, DynamicQueue, SendWelcomeEmail, rebuild_index


def state(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> str:
    row = conn.execute(
        """SELECT CASE
             WHEN EXISTS (SELECT 1 FROM pgjobs_ready_executions r WHERE r.job_id = j.id)
               THEN 'ready'
             WHEN EXISTS (SELECT 1 FROM pgjobs_scheduled_executions s WHERE s.job_id = j.id)
               THEN 'scheduled'
             ELSE 'none' END
           FROM pgjobs_jobs j WHERE j.job_id = %s""",
        [job_id],
    ).fetchone()
    return row[0] if row else "missing"


def count(url_or_conn: str | psycopg.Connection[Any], table: str = "pgjobs_jobs") -> int:
    if isinstance(url_or_conn, str):
        with psycopg.connect(url_or_conn) as conn:
            return count(conn, table)
    row = url_or_conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_perform_later_writes_a_ready_job(conn: psycopg.Connection[Any]) -> None:
    handle = SendWelcomeEmail.set(connection=conn).perform_later(42)
    assert isinstance(handle.job_id, uuid.UUID)
    assert handle.queue_name == "mailers" and handle.priority == 0 and not handle.scheduled
    row = conn.execute(
        "SELECT class_name, queue_name, arguments, priority FROM pgjobs_jobs WHERE job_id = %s",
        [handle.job_id],
    ).fetchone()
    assert row is not None
    assert row[0] == "tests.sample_jobs:SendWelcomeEmail"
    assert row[1] == "mailers"
    assert deserialize_arguments(row[2]) == ((42,), {})
    assert state(conn, handle.job_id) == "ready"


def test_wait_and_wait_until_schedule_the_job(conn: psycopg.Connection[Any]) -> None:
    later = SendWelcomeEmail.set(connection=conn, wait=3600).perform_later(1)
    assert later.scheduled and state(conn, later.job_id) == "scheduled"
    until = datetime.now(UTC) + timedelta(days=1)
    dated = SendWelcomeEmail.set(connection=conn, wait_until=until).perform_later(2)
    assert dated.scheduled_at == until and state(conn, dated.job_id) == "scheduled"
    past = SendWelcomeEmail.set(connection=conn, wait_until=until - timedelta(days=2))
    assert state(conn, past.perform_later(3).job_id) == "ready"
    delta = SendWelcomeEmail.set(connection=conn, wait=timedelta(minutes=5)).perform_later(4)
    assert state(conn, delta.job_id) == "scheduled"


def test_naive_wait_until_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="timezone-aware"):
        SendWelcomeEmail.set(connection=conn, wait_until=datetime(2030, 1, 1)).perform_later(1)


def test_queue_and_priority_options(conn: psycopg.Connection[Any]) -> None:
    handle = SendWelcomeEmail.set(connection=conn, queue="urgent", priority=-5).perform_later(1)
    row = conn.execute(
        "SELECT r.queue_name, r.priority FROM pgjobs_ready_executions r "
        "JOIN pgjobs_jobs j ON j.id = r.job_id WHERE j.job_id = %s",
        [handle.job_id],
    ).fetchone()
    assert row == ("urgent", -5)
    assert DynamicQueue.set(connection=conn).perform_later("vip").queue_name == "premium"
    assert DynamicQueue.set(connection=conn).perform_later("x").queue_name == "default"


def test_decorated_function_jobs(conn: psycopg.Connection[Any]) -> None:
    assert rebuild_index("direct") == "direct"  # still a plain function
    handle = rebuild_index.set(connection=conn).perform_later("users")
    assert handle.queue_name == "indexing" and handle.priority == 5
    assert handle.class_name == "tests.sample_jobs:rebuild_index"
    assert resolve(handle.class_name) is rebuild_index.job_class
    assert rebuild_index.perform_now("inline") == "inline"


def test_names_resolve_and_unknown_names_fail_clearly() -> None:
    assert resolve("welcome-email-v2") is Aliased
    assert resolve("tests.sample_jobs:Child") is Child
    with pytest.raises(pgjobs.UnknownJobError, match="no job class is registered"):
        resolve("tests.sample_jobs:Nope")
    with pytest.raises(pgjobs.UnknownJobError, match="cannot be imported"):
        resolve("no_such_module.jobs:Job")


def test_bad_arguments_fail_at_enqueue_naming_the_argument(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgjobs.SerializationError) as info:
        SendWelcomeEmail.set(connection=conn).perform_later(user_id=object())
    assert "user_id" in str(info.value) and "SendWelcomeEmail" in str(info.value)
    assert count(conn) == 0


def test_rich_arguments_are_stored_losslessly(conn: psycopg.Connection[Any]) -> None:
    when = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    args = (Decimal("10.25"), uuid.UUID(int=7), when, {"nested": [1, 2.5, None]})
    handle = SendWelcomeEmail.set(connection=conn).perform_later(*args, flag=True)
    row = conn.execute(
        "SELECT arguments FROM pgjobs_jobs WHERE job_id = %s", [handle.job_id]
    ).fetchone()
    assert row is not None
    assert deserialize_arguments(row[0]) == (args, {"flag": True})


def test_callbacks_run_in_activejob_order() -> None:
    sample_jobs.EVENTS.clear()
    assert Child.perform_now(21) == 42
    assert sample_jobs.EVENTS == [
        "base before",
        "child before",
        "base around in",
        "perform 21 attempt 0",
        "base around out",
        "child after",
        "base after",
    ]


def test_async_jobs_and_async_callbacks_run_inline() -> None:
    sample_jobs.EVENTS.clear()
    assert sample_jobs.AsyncChild.perform_now(1) == 2
    assert sample_jobs.EVENTS == [
        "base before",
        "async around in",
        "async perform 1",
        "async around out",
        "base after",
    ]
    assert sample_jobs.async_function_job.perform_now(2) == 6


def test_an_async_job_cannot_inherit_a_sync_around_callback() -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="must be `async def`"):

        class Broken(sample_jobs.Base):
            async def perform(self) -> None:
                pass


def test_enqueue_callbacks_run(conn: psycopg.Connection[Any]) -> None:
    sample_jobs.EVENTS.clear()
    Child.set(connection=conn, queue="q1").perform_later(1)
    assert sample_jobs.EVENTS == ["before enqueue q1", "after enqueue"]


@pytest.mark.committed
def test_enqueue_notifies_at_commit_naming_each_job(db: Database) -> None:
    with (
        psycopg.connect(db.url, autocommit=True) as listener,
        psycopg.connect(db.url) as app,
    ):
        listener.execute("LISTEN pgjobs_ready")
        jobs = [SendWelcomeEmail.set(connection=app).perform_later(i) for i in range(3)]
        jobs.append(rebuild_index.set(connection=app, priority=5).perform_later("x"))
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # nothing before commit
        app.commit()
        received = [n.payload for n in listener.notifies(timeout=0.5, stop_after=4)]
        rebuild_index.set(connection=app).perform_later("rolled back")
        app.rollback()
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
    expected = [f"{j.queue_name}\t{j.priority}\t{j.id}" for j in jobs]
    assert sorted(received) == sorted(expected)


@pytest.mark.committed
def test_bulk_enqueue_notifies_each_queue_once_with_its_first_job(db: Database) -> None:
    with psycopg.connect(db.url, autocommit=True) as listener:
        listener.execute("LISTEN pgjobs_ready")
        jobs = [SendWelcomeEmail(i) for i in range(3)]
        jobs.append(rebuild_index.build("a"))
        jobs.append(SendWelcomeEmail.set(priority=-1).build(9))
        results = pgjobs.perform_all_later(jobs)
        received = [n.payload for n in listener.notifies(timeout=0.5, stop_after=5)]
    assert sorted(received) == sorted(
        [f"indexing\t{results[3].priority}\t{results[3].id}", f"mailers\t-1\t{results[4].id}"]
    )


# -- transactions: the job exists if and only if the caller commits ---------------------------


@pytest.mark.committed
def test_psycopg_commit_keeps_and_rollback_discards(db: Database) -> None:
    with psycopg.connect(db.url) as app:
        kept = SendWelcomeEmail.set(connection=app).perform_later(1)
        app.commit()
        dropped = SendWelcomeEmail.set(connection=app).perform_later(2)
        app.rollback()
    with psycopg.connect(db.url) as check:
        assert state(check, kept.job_id) == "ready"
        assert state(check, dropped.job_id) == "missing"


@pytest.mark.committed
def test_psycopg_async_commit_and_rollback(db: Database) -> None:
    async def scenario() -> tuple[pgjobs.EnqueuedJob, pgjobs.EnqueuedJob]:
        async with await psycopg.AsyncConnection.connect(db.url) as app:
            kept = await SendWelcomeEmail.set(connection=app).perform_later_async(1)
            await app.commit()
            dropped = await SendWelcomeEmail.set(connection=app).perform_later_async(2)
            await app.rollback()
        return kept, dropped

    kept, dropped = asyncio.run(scenario())
    with psycopg.connect(db.url) as check:
        assert state(check, kept.job_id) == "ready"
        assert state(check, dropped.job_id) == "missing"


@pytest.mark.committed
def test_sqlalchemy_session_commit_and_rollback(db: Database) -> None:
    engine = create_engine(sqlalchemy_url(db.url), poolclass=pool.NullPool)
    with Session(engine) as session:
        kept = SendWelcomeEmail.set(connection=session).perform_later(1)
        session.commit()
        dropped = SendWelcomeEmail.set(connection=session).perform_later(2)
        session.rollback()
    with engine.connect() as sa_conn:
        also = SendWelcomeEmail.set(connection=sa_conn).perform_later(3)
        sa_conn.commit()
    engine.dispose()
    with psycopg.connect(db.url) as check:
        assert state(check, kept.job_id) == "ready"
        assert state(check, dropped.job_id) == "missing"
        assert state(check, also.job_id) == "ready"


@pytest.mark.committed
def test_sqlalchemy_async_session_commit_and_rollback(db: Database) -> None:
    async def scenario() -> tuple[pgjobs.EnqueuedJob, pgjobs.EnqueuedJob]:
        engine = create_async_engine(sqlalchemy_url(db.url), poolclass=pool.NullPool)
        async with AsyncSession(engine) as session:
            kept = await SendWelcomeEmail.set(connection=session).perform_later_async(1)
            await session.commit()
            dropped = await SendWelcomeEmail.set(connection=session).perform_later_async(2)
            await session.rollback()
        await engine.dispose()
        return kept, dropped

    kept, dropped = asyncio.run(scenario())
    with psycopg.connect(db.url) as check:
        assert state(check, kept.job_id) == "ready"
        assert state(check, dropped.job_id) == "missing"


@pytest.mark.committed
def test_without_a_connection_pgjobs_commits_on_its_own(db: Database) -> None:
    handle = SendWelcomeEmail.perform_later(7)
    handle2 = asyncio.run(rebuild_index.perform_later_async("y"))
    with psycopg.connect(db.url) as check:
        assert state(check, handle.job_id) == "ready"
        assert state(check, handle2.job_id) == "ready"


# -- bulk -------------------------------------------------------------------------------------


def test_bulk_enqueue_mixes_classes_and_placements(conn: psycopg.Connection[Any]) -> None:
    jobs = [
        SendWelcomeEmail(1),
        rebuild_index.build("x"),
        SendWelcomeEmail.set(wait=600).build(2),
        Child.set(queue="other", priority=3).build(4),
    ]
    handles = pgjobs.perform_all_later(jobs, connection=conn)
    assert [h.class_name for h in handles] == [type(j).job_name for j in jobs]
    assert [state(conn, h.job_id) for h in handles] == ["ready", "ready", "scheduled", "ready"]
    row = conn.execute(
        "SELECT r.queue_name, r.priority FROM pgjobs_ready_executions r "
        "JOIN pgjobs_jobs j ON j.id = r.job_id WHERE j.job_id = %s",
        [handles[3].job_id],
    ).fetchone()
    assert row == ("other", 3)


def test_bulk_of_100_000_mixed_jobs_in_one_call(conn: psycopg.Connection[Any]) -> None:
    jobs: list[pgjobs.Job] = []
    for i in range(100_000):
        if i % 10 == 0:
            jobs.append(SendWelcomeEmail.set(wait=60).build(i))
        elif i % 2:
            jobs.append(rebuild_index.build(f"index-{i}"))
        else:
            jobs.append(SendWelcomeEmail(i))
    handles = pgjobs.perform_all_later(jobs, connection=conn)
    assert len(handles) == 100_000
    assert count(conn) == 100_000
    assert count(conn, "pgjobs_ready_executions") == 90_000
    assert count(conn, "pgjobs_scheduled_executions") == 10_000


@pytest.mark.committed
def test_bulk_async_commits_with_its_own_connection(db: Database) -> None:
    handles = asyncio.run(pgjobs.perform_all_later_async([SendWelcomeEmail(i) for i in range(10)]))
    with psycopg.connect(db.url) as check:
        assert {state(check, h.job_id) for h in handles} == {"ready"}


def test_bulk_with_a_bad_argument_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgjobs.SerializationError):
        pgjobs.perform_all_later([SendWelcomeEmail(1), SendWelcomeEmail(object())], connection=conn)
    assert count(conn) == 0


class Vetoed(pgjobs.Job):
    @pgjobs.around_enqueue
    def veto(self, proceed: Any) -> None:
        """Does not call proceed(): the job is not enqueued."""

    def perform(self) -> None:
        pass


class AsyncBeforeEnqueue(pgjobs.Job):
    @pgjobs.before_enqueue
    async def check(self) -> None:
        pass

    def perform(self) -> None:
        pass


def test_an_around_enqueue_that_does_not_proceed_enqueues_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    handle = Vetoed.set(connection=conn).perform_later()
    assert handle.enqueued is False
    assert count(conn) == 0


@pytest.mark.committed
def test_async_callbacks_are_refused_from_sync_code(db: Database) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="async callback"):
        AsyncBeforeEnqueue.perform_later()
    handle = asyncio.run(AsyncBeforeEnqueue.perform_later_async())
    assert handle.enqueued


def test_priority_must_fit_the_column(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="between -32768 and 32767"):
        SendWelcomeEmail.set(connection=conn, priority=40_000).perform_later(1)


def test_enqueue_on_a_given_connection_never_starts_a_database(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgjobs import runtime
    from pgjobs.db import embedded

    def refuse(*args: object) -> str:
        raise AssertionError("the embedded server must not start")

    for name in ("PGJOBS_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(embedded, "start", refuse)
    previous = runtime.use(None)
    try:
        handle = SendWelcomeEmail.set(connection=conn).perform_later(1)
        pgjobs.perform_all_later([SendWelcomeEmail(2)], connection=conn)
    finally:
        runtime.use(previous)
    assert state(conn, handle.job_id) == "ready" and count(conn) == 2


@pytest.mark.committed
def test_bulk_on_a_callers_connection_commits_only_with_the_caller(db: Database) -> None:
    with psycopg.connect(db.url) as app:
        pgjobs.perform_all_later([SendWelcomeEmail(1), SendWelcomeEmail(2)], connection=app)
        app.rollback()
        assert count(db.url) == 0
        pgjobs.perform_all_later([SendWelcomeEmail(3)], connection=app)
        app.commit()
    assert count(db.url) == 1
    with psycopg.connect(db.url, autocommit=True) as auto:
        with pytest.raises(pgjobs.SerializationError):
            pgjobs.perform_all_later(
                [SendWelcomeEmail(4), SendWelcomeEmail(object())], connection=auto
            )
        pgjobs.perform_all_later([SendWelcomeEmail(5), SendWelcomeEmail(6)], connection=auto)
    assert count(db.url) == 3


def test_enqueue_on_a_given_connection_reads_queue_yml_once(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgjobs import runtime
    from pgjobs.config import queue as config

    reads: list[object] = []
    real = config.load_config

    def counting(*args: Any, **kwargs: Any) -> config.Config:
        reads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(config, "load_config", counting)
    monkeypatch.setattr(runtime, "_schema_resolved", False)
    monkeypatch.delenv("PGJOBS_SCHEMA", raising=False)
    previous = runtime.use(None)
    try:
        for i in range(3):
            SendWelcomeEmail.set(connection=conn).perform_later(i)
    finally:
        runtime.use(previous)
    assert len(reads) == 1 and count(conn) == 3


# -- job ids ------------------------------------------------------------------------------------


def test_job_ids_are_random_version_4_uuids() -> None:
    from pgjobs.enqueue.ids import new_job_id, random_ids

    made = [new_job_id() for _ in range(1000)] + [SendWelcomeEmail(1).job_id]
    assert len(set(made)) == len(made)
    for value in made:
        assert isinstance(value, uuid.UUID) and value.version == 4
        assert value.variant == uuid.RFC_4122
        again = uuid.UUID(str(value))
        assert value == again and hash(value) == hash(again) and value.bytes == again.bytes
    raw = random_ids(500)
    assert len(raw) == 500 * 16
    ids = [uuid.UUID(bytes=bytes(raw[i : i + 16])) for i in range(0, len(raw), 16)]
    assert len(set(ids)) == 500
    assert {(u.version, u.variant) for u in ids} == {(4, uuid.RFC_4122)}


# -- bulk: what the binary COPY writes ------------------------------------------------------------

STORED = """
SELECT j.queue_name, j.class_name, j.arguments, j.priority, j.scheduled_at, j.concurrency_key,
       j.unique_key, j.executions, r.queue_name, r.priority, s.queue_name, s.priority,
       s.scheduled_at, s.concurrency_key
FROM pgjobs_jobs j
LEFT JOIN pgjobs_ready_executions r ON r.job_id = j.id
LEFT JOIN pgjobs_scheduled_executions s ON s.job_id = j.id
WHERE j.job_id = %s
"""


class Level(enum.IntEnum):
    HIGH = -3


def test_bulk_writes_each_job_as_perform_later_does(conn: psycopg.Connection[Any]) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    odd = 'back\\slash "quote" tab\t newline\n é 漢字 😀 \u2028'
    builds = [
        lambda: SendWelcomeEmail.set(connection=conn),
        lambda: SendWelcomeEmail.set(connection=conn, queue="odd\tqueue\\name é", priority=-7),
        lambda: SendWelcomeEmail.set(connection=conn, priority=Level.HIGH, wait_until=when),
        lambda: rebuild_index.set(connection=conn, wait=3600),
    ]
    arguments: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1, odd, 2.5, None, True), {}),
        ((odd,), {"user": {"name": odd, "tags": [1, "x"]}}),
        ((Decimal("1.10"), uuid.UUID(int=5), (1, 2)), {"at": when}),
        (("index",), {}),
    ]
    jobs = [b().build(*a, **k) for b, (a, k) in zip(builds, arguments, strict=True)]
    handles = pgjobs.perform_all_later(jobs, connection=conn)
    singles = [b().perform_later(*a, **k) for b, (a, k) in zip(builds, arguments, strict=True)]
    for job, handle, single in zip(jobs, handles, singles, strict=True):
        bulk_row = conn.execute(STORED, [handle.job_id]).fetchone()
        single_row = conn.execute(STORED, [single.job_id]).fetchone()
        assert bulk_row is not None and single_row is not None
        if single.scheduled_at is not None and single_row[4] != bulk_row[4]:  # wait=: from now
            assert abs(single_row[4] - bulk_row[4]) < timedelta(seconds=30)
            bulk_row, single_row = bulk_row[:4] + bulk_row[5:12], single_row[:4] + single_row[5:12]
        assert bulk_row == single_row
        assert deserialize_arguments(bulk_row[2]) == (job.args, job.kwargs)
        assert handle.job_id == job.job_id and isinstance(handle.id, int)
        assert (handle.class_name, handle.queue_name) == (single.class_name, single.queue_name)
        assert (handle.priority, handle.state, handle.enqueued) == (
            single.priority,
            single.state,
            True,
        )
        assert handle.scheduled == single.scheduled and handle.duplicate_of is None
        assert handle == pgjobs.EnqueuedJob(
            job_id=job.job_id,
            class_name=handle.class_name,
            queue_name=handle.queue_name,
            priority=handle.priority,
            scheduled_at=handle.scheduled_at,
            id=handle.id,
        )
        assert job.scheduled_at == handle.scheduled_at and job.enqueued_at is None
    assert [h.state for h in handles] == ["ready", "ready", "scheduled", "scheduled"]
    assert handles[2].scheduled_at == when


def test_bulk_keeps_the_order_of_mixed_keyed_and_plain_jobs(
    conn: psycopg.Connection[Any],
) -> None:
    jobs = [
        sample_jobs.RebuildIndex("b"),
        SendWelcomeEmail(1),
        sample_jobs.LimitedPerStore("s1"),
        SendWelcomeEmail(2),
        sample_jobs.RebuildIndex("a"),
        sample_jobs.RebuildIndex("a"),  # a duplicate of the one before
    ]
    handles = pgjobs.perform_all_later(jobs, connection=conn)
    assert [h.job_id for h in handles] == [j.job_id for j in jobs]
    assert [h.state for h in handles] == [
        "ready",
        "ready",
        "ready",
        "ready",
        "ready",
        "duplicate",
    ]
    assert handles[5].duplicate_of == jobs[4].job_id
    assert handles[1].id < handles[3].id  # the COPYed jobs' ids in list order
    assert count(conn) == 5


def test_bulk_enqueue_events_name_every_job(conn: psycopg.Connection[Any]) -> None:
    seen: list[pgjobs.Event] = []
    pgjobs.subscribe("enqueue", seen.append)
    try:
        jobs = [SendWelcomeEmail(1), SendWelcomeEmail.set(wait=60, priority=2).build(2)]
        handles = pgjobs.perform_all_later(jobs, connection=conn)
    finally:
        pgjobs.unsubscribe("enqueue", seen.append)
    assert [e.fields["job_id"] for e in seen] == [h.job_id for h in handles]
    assert [e.fields["priority"] for e in seen] == [0, 2]
    assert seen[0].fields["scheduled_at"] is None
    assert seen[1].fields["scheduled_at"] == handles[1].scheduled_at
    assert {e.fields["class"] for e in seen} == {SendWelcomeEmail.job_name}


# -- many jobs of one class: perform_all_later_args ----------------------------------------------

JOBS_OF = """
SELECT j.job_id, j.queue_name, j.class_name, j.arguments, j.priority, j.scheduled_at,
       r.queue_name, r.priority, s.scheduled_at
FROM pgjobs_jobs j
LEFT JOIN pgjobs_ready_executions r ON r.job_id = j.id
LEFT JOIN pgjobs_scheduled_executions s ON s.job_id = j.id
WHERE j.class_name = %s ORDER BY j.id
"""


def test_perform_all_later_args_writes_one_ready_job_per_row(
    conn: psycopg.Connection[Any],
) -> None:
    odd = 'back\\slash "quote" tab\t nl\n é 😀'
    rows: list[Any] = [(1,), [2], (odd,), (Decimal("1.5"),), ({"a": [1, None]},), ()]
    assert SendWelcomeEmail.perform_all_later_args(rows, connection=conn) == len(rows)
    found = conn.execute(JOBS_OF, [SendWelcomeEmail.job_name]).fetchall()
    assert [deserialize_arguments(r[3]) for r in found] == [(tuple(r), {}) for r in rows]
    assert {(r[1], r[2], r[4], r[5], r[6], r[7], r[8]) for r in found} == {
        ("mailers", SendWelcomeEmail.job_name, 0, None, "mailers", 0, None)
    }
    ids = [r[0] for r in found]
    assert len(set(ids)) == len(rows) and {u.version for u in ids} == {4}


def test_perform_all_later_args_with_options_and_functions(conn: psycopg.Connection[Any]) -> None:
    configured = SendWelcomeEmail.set(connection=conn, queue="bulk", priority=-3)
    assert configured.perform_all_later_args([(1,), (2,)]) == 2
    assert rebuild_index.perform_all_later_args([("a",)], connection=conn) == 1
    assert rebuild_index.set(wait=600).perform_all_later_args([("b",)], connection=conn) == 1
    when = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    dated = SendWelcomeEmail.set(connection=conn, wait_until=when, priority=Level.HIGH)
    assert dated.perform_all_later_args([(3,)]) == 1
    assert DynamicQueue.set(queue="chosen").perform_all_later_args([("x",)], connection=conn)
    mailers = conn.execute(JOBS_OF, [SendWelcomeEmail.job_name]).fetchall()
    assert [(r[1], r[4], r[6], r[7], r[8]) for r in mailers] == [
        ("bulk", -3, "bulk", -3, None),
        ("bulk", -3, "bulk", -3, None),
        ("mailers", -3, None, None, when),
    ]
    indexing = conn.execute(JOBS_OF, [rebuild_index.job_class.job_name]).fetchall()
    assert [(r[1], r[4], r[6] is not None) for r in indexing] == [
        ("indexing", 5, True),
        ("indexing", 5, False),
    ]
    assert indexing[1][8] > datetime.now(UTC) + timedelta(seconds=500)
    assert conn.execute(JOBS_OF, [DynamicQueue.job_name]).fetchall()[0][1] == "chosen"


def test_perform_all_later_args_refuses_what_it_cannot_write(
    conn: psycopg.Connection[Any],
) -> None:
    for cls, what in (
        (sample_jobs.LimitedPerStore, "concurrency limit"),
        (sample_jobs.RebuildIndex, "unique key"),
        (sample_jobs.OrderedPerAccount, "ordered keys"),
        (sample_jobs.RatePerAccount, "rate limit"),
        (sample_jobs.RateAndLimited, "concurrency limit (limits_concurrency) and a rate limit"),
    ):
        with pytest.raises(pgjobs.ConfigurationError, match="perform_all_later") as info:
            cls.perform_all_later_args([("a", 1)], connection=conn)
        assert cls.job_name in str(info.value) and what in str(info.value)
    with pytest.raises(pgjobs.ConfigurationError, match=r"queue_as is a method.*set\(queue="):
        DynamicQueue.perform_all_later_args([("vip",)], connection=conn)
    with pytest.raises(pgjobs.ConfigurationError, match="between -32768 and 32767"):
        SendWelcomeEmail.set(priority=40_000).perform_all_later_args([(1,)], connection=conn)
    with pytest.raises(pgjobs.ConfigurationError, match="timezone-aware"):
        SendWelcomeEmail.set(wait_until=datetime(2030, 1, 1)).perform_all_later_args([(1,)])
    assert count(conn) == 0


def test_perform_all_later_args_names_the_row_it_cannot_serialize(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(pgjobs.SerializationError) as info:
        SendWelcomeEmail.perform_all_later_args([(1,), (2,), (3, object())], connection=conn)
    message = str(info.value)
    assert "argument 1 of tests.sample_jobs:SendWelcomeEmail.perform_all_later_args row 2" in (
        message
    )
    with pytest.raises(TypeError, match=r"row 1 of .*SendWelcomeEmail.perform_all_later_args is"):
        SendWelcomeEmail.perform_all_later_args([(1,), "abc"], connection=conn)
    with pytest.raises(TypeError, match=r"row 0 .* is 7 \(int\)"):
        SendWelcomeEmail.perform_all_later_args([7], connection=conn)  # type: ignore[list-item]
    assert count(conn) == 0
    assert SendWelcomeEmail.perform_all_later_args([], connection=conn) == 0
    assert SendWelcomeEmail.perform_all_later_args(iter([(5,), (6,)]), connection=conn) == 2


@pytest.mark.committed
def test_perform_all_later_args_commits_with_the_caller_or_on_its_own(db: Database) -> None:
    with psycopg.connect(db.url) as app:
        SendWelcomeEmail.perform_all_later_args([(1,), (2,)], connection=app)
        app.rollback()
        assert count(db.url) == 0
        SendWelcomeEmail.perform_all_later_args([(3,)], connection=app)
        assert count(db.url) == 0  # not before the caller commits
        app.commit()
    assert count(db.url) == 1
    with psycopg.connect(db.url, autocommit=True) as auto:
        assert SendWelcomeEmail.perform_all_later_args([(4,), (5,)], connection=auto) == 2
    assert SendWelcomeEmail.perform_all_later_args([(6,)] * 3) == 3  # pgjobs' own pool
    assert asyncio.run(SendWelcomeEmail.perform_all_later_args_async([(7,)])) == 1
    assert count(db.url) == 7 and count(db.url, "pgjobs_ready_executions") == 7


@pytest.mark.committed
def test_perform_all_later_args_in_several_statements_is_one_transaction(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgjobs.enqueue import core

    monkeypatch.setattr(core, "MANY_PER_STATEMENT", 3)
    assert SendWelcomeEmail.perform_all_later_args([(i,) for i in range(7)]) == 7
    assert count(db.url) == 7
    real = psycopg.Cursor.execute
    statements: list[str] = []

    def third_fails(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if "jsonb_array_elements" in str(query):
            statements.append(str(query))
            if len(statements) == 3:
                raise psycopg.OperationalError("the third statement fails")
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", third_fails)
    with pytest.raises(psycopg.OperationalError, match="third statement"):
        SendWelcomeEmail.perform_all_later_args([(i,) for i in range(8)])
    assert len(statements) == 3
    with psycopg.connect(db.url, autocommit=True) as auto, pytest.raises(psycopg.OperationalError):
        statements.clear()
        SendWelcomeEmail.perform_all_later_args([(i,) for i in range(8)], connection=auto)
    assert count(db.url) == 7  # neither wrote its first two statements' jobs


@pytest.mark.committed
def test_perform_all_later_args_notifies_once_naming_the_first_job(db: Database) -> None:
    with psycopg.connect(db.url, autocommit=True) as listener, psycopg.connect(db.url) as app:
        listener.execute("LISTEN pgjobs_ready")
        SendWelcomeEmail.set(priority=2).perform_all_later_args([(1,), (2,), (3,)], connection=app)
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # nothing before commit
        app.commit()
        received = [n.payload for n in listener.notifies(timeout=0.5, stop_after=2)]
        SendWelcomeEmail.set(wait=60).perform_all_later_args([(4,)], connection=app)
        app.commit()
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # scheduled: none
        first = app.execute("SELECT min(job_id) FROM pgjobs_ready_executions").fetchone()
    assert first is not None and received == [f"mailers\t2\t{first[0]}"]


def test_perform_all_later_args_events_name_every_job(conn: psycopg.Connection[Any]) -> None:
    seen: list[pgjobs.Event] = []
    pgjobs.subscribe("enqueue", seen.append)
    try:
        SendWelcomeEmail.set(priority=1).perform_all_later_args([(1,), (2,)], connection=conn)
    finally:
        pgjobs.unsubscribe("enqueue", seen.append)
    stored = [r[0] for r in conn.execute(JOBS_OF, [SendWelcomeEmail.job_name]).fetchall()]
    assert [e.fields["job_id"] for e in seen] == stored
    assert {(e.fields["queue"], e.fields["priority"]) for e in seen} == {("mailers", 1)}


def test_perform_all_later_args_under_the_test_adapter() -> None:
    from pgjobs.testing import capture_jobs

    with capture_jobs() as jobs:
        assert SendWelcomeEmail.set(queue="q").perform_all_later_args([(1,), (2,)]) == 2
        with pytest.raises(pgjobs.ConfigurationError, match="unique key"):
            sample_jobs.RebuildIndex.perform_all_later_args([("a",)])
    assert [(r.args, r.queue) for r in jobs.enqueued] == [((1,), "q"), ((2,), "q")]


def test_perform_all_later_args_with_tracing_builds_the_jobs(
    conn: psycopg.Connection[Any],
) -> None:
    import contextlib

    from pgjobs.observability import tracing

    created: list[pgjobs.Job] = []

    class Recorder:
        @contextlib.contextmanager
        def send(self, job: pgjobs.Job) -> Any:
            yield

        @contextlib.contextmanager
        def send_bulk(self, jobs: Any) -> Any:
            @contextlib.contextmanager
            def create(job: pgjobs.Job) -> Any:
                created.append(job)
                job._trace_carrier = {"traceparent": "00-1-2-01"}
                yield

            yield create

        def process(self, claimed: Any, carrier: Any) -> Any:
            raise AssertionError("not performed here")

    previous = tracing.install(Recorder())  # type: ignore[arg-type]
    try:
        written = SendWelcomeEmail.set(connection=conn).perform_all_later_args([(1,), (2,)])
    finally:
        tracing.install(previous)
    assert written == 2 and [j.args for j in created] == [(1,), (2,)]
    found = conn.execute(JOBS_OF, [SendWelcomeEmail.job_name]).fetchall()
    assert [r[0] for r in found] == [j.job_id for j in created]
    assert {r[3]["trace"]["traceparent"] for r in found} == {"00-1-2-01"}


@pytest.mark.parametrize("per_statement", [10_000, 3])
def test_bulk_of_one_class_queue_and_priority_is_written_by_one_statement(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, per_statement: int
) -> None:
    """perform_all_later's jobs sharing class, queue, priority and due time take
    jobs.ENQUEUE_MANY_*: the same rows, handles and order as the COPY path."""
    from pgjobs.enqueue import core

    monkeypatch.setattr(core, "MANY_PER_STATEMENT", per_statement)
    odd = 'back\\slash "quote" tab\t é'
    jobs = [SendWelcomeEmail.set(priority=4).build(i, odd) for i in range(7)]
    statements: list[str] = []
    real = psycopg.Cursor.execute

    def spy(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", spy)
    handles = pgjobs.perform_all_later(jobs, connection=conn)
    later = pgjobs.perform_all_later(
        [rebuild_index.set(wait=600).build(n) for n in ("a", "b")], connection=conn
    )
    monkeypatch.setattr(psycopg.Cursor, "execute", real)
    assert sum("jsonb_array_elements" in s for s in statements) == -(-7 // per_statement) + 1
    assert not any("COPY" in s for s in statements)
    ids = [h.id for h in handles]
    assert ids == sorted(ids) and len(set(ids)) == 7  # in list order
    for job, handle in zip(jobs, handles, strict=True):
        row = conn.execute(STORED, [handle.job_id]).fetchone()
        assert row is not None
        assert row[:2] == ("mailers", SendWelcomeEmail.job_name)
        assert deserialize_arguments(row[2]) == (job.args, {})
        assert row[3:] == (4, None, None, None, 0, "mailers", 4, None, None, None, None)
        stored = conn.execute("SELECT id FROM pgjobs_jobs WHERE job_id = %s", [job.job_id])
        assert (handle.id, handle.state, handle.priority) == (stored.fetchone()[0], "ready", 4)  # type: ignore[index]
    assert [h.state for h in later] == ["scheduled", "scheduled"]
    assert later[0].scheduled_at == later[1].scheduled_at and later[0].scheduled_at is not None
    assert [state(conn, h.job_id) for h in later] == ["scheduled", "scheduled"]


FORKED_IDS = """
import os
from pgjobs.enqueue import ids

ids.new_job_id()  # the parent has ids read ahead ...
assert ids._ahead
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # ... which its child must not hand out
    os.write(write, b"".join(ids.new_job_id().bytes for _ in range(100)))
    os._exit(0)
os.close(write)
with os.fdopen(read, "rb") as pipe:
    raw = pipe.read()
os.waitpid(pid, 0)
child = {raw[i : i + 16] for i in range(0, len(raw), 16)}
parent = {ids.new_job_id().bytes for _ in range(100)}
assert len(child) == 100 and not child & parent, "a forked child repeated its parent's ids"
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_forked_process_never_repeats_its_parents_job_ids() -> None:
    import subprocess
    import sys

    # In a process of its own: forking this one (threads running) would be unsafe.
    done = subprocess.run(
        [sys.executable, "-c", FORKED_IDS], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_every_enqueue_path_writes_text_in_the_connections_encoding(
    conn: psycopg.Connection[Any],
) -> None:
    """The binary COPY's jsonb, the one-statement arrays and the single statement all send
    text in the client encoding, which the server converts (here LATIN1)."""
    conn.execute("SET client_encoding TO 'LATIN1'")
    assert conn.info.encoding == "iso8859-1"
    text = "café ñ ü"
    single = SendWelcomeEmail.set(connection=conn, queue="qé").perform_later(text)
    mixed = pgjobs.perform_all_later(
        [SendWelcomeEmail(text), rebuild_index.set(queue="é").build(text)], connection=conn
    )
    grouped = pgjobs.perform_all_later([SendWelcomeEmail(text)], connection=conn)
    SendWelcomeEmail.set(queue="fé").perform_all_later_args([(text,)], connection=conn)
    rows = conn.execute("SELECT queue_name, arguments::text FROM pgjobs_jobs ORDER BY id")
    rows = rows.fetchall()
    assert [q for q, _a in rows] == ["qé", "mailers", "é", "mailers", "fé"]
    assert [deserialize_arguments(a) for _q, a in rows] == [((text,), {})] * 5
    assert len({single.id, *(h.id for h in mixed), grouped[0].id}) == 4


@pytest.mark.committed
def test_every_enqueue_path_works_on_a_connection_that_binds_on_the_client(db: Database) -> None:
    """psycopg.ClientCursor (Django's default) cannot send binary parameters: the job ids of
    the one-statement paths go as a literal there."""
    with psycopg.connect(db.url, cursor_factory=psycopg.ClientCursor) as app:
        single = SendWelcomeEmail.set(connection=app).perform_later(1)
        mixed = pgjobs.perform_all_later(
            [SendWelcomeEmail(2), rebuild_index.build("x"), SendWelcomeEmail.set(wait=60).build(3)],
            connection=app,
        )
        grouped = pgjobs.perform_all_later(
            [SendWelcomeEmail(4), SendWelcomeEmail(5)], connection=app
        )
        assert SendWelcomeEmail.perform_all_later_args([(6,), (7,)], connection=app) == 2
        app.commit()
    handles = [single, *mixed, *grouped]
    assert len({h.id for h in handles}) == 6
    with psycopg.connect(db.url) as check:
        assert [state(check, h.job_id) for h in handles] == [
            "ready", "ready", "ready", "scheduled", "ready", "ready",
        ]  # fmt: skip
        assert count(check) == 8
        found = check.execute("SELECT arguments FROM pgjobs_jobs ORDER BY id").fetchall()
    assert [deserialize_arguments(r[0])[0][0] for r in found] == [1, 2, "x", 3, 4, 5, 6, 7]


@pytest.mark.committed
def test_statements_of_many_jobs_are_cut_by_size_as_well(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their arguments travel as one jsonb array per statement (PostgreSQL caps a jsonb value
    at 256 MB): more than MANY_CHARACTERS of them take more statements, in one transaction."""
    from pgjobs.enqueue import core

    assert core._chunks(["x" * 5] * 5) == [(0, 5)]
    monkeypatch.setattr(core, "MANY_CHARACTERS", 12)
    assert core._chunks(["x" * 5] * 5) == [(0, 2), (2, 4), (4, 5)]
    assert core._chunks(["x" * 50, "x", "x" * 50]) == [(0, 1), (1, 2), (2, 3)]  # each fits alone
    handles = pgjobs.perform_all_later([SendWelcomeEmail("a" * 20) for _ in range(3)])
    assert SendWelcomeEmail.perform_all_later_args([("b" * 20,)] * 3) == 3
    ids = [h.id for h in handles]
    assert ids == sorted(ids) and count(db.url) == 6
    real = psycopg.Cursor.execute
    calls: list[str] = []

    def second_fails(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if "jsonb_array_elements" in str(query):
            calls.append(str(query))
            if len(calls) == 2:
                raise psycopg.OperationalError("the second statement fails")
        return real(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", second_fails)
    with pytest.raises(psycopg.OperationalError):
        pgjobs.perform_all_later([SendWelcomeEmail("c" * 20) for _ in range(3)])
    calls.clear()
    with pytest.raises(psycopg.OperationalError):
        SendWelcomeEmail.perform_all_later_args([("d" * 20,)] * 3)
    assert count(db.url) == 6  # neither wrote its first statement's job
