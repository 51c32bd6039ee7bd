"""Concurrency limits and unique jobs at enqueue: declarations, keys, slots, duplicates, bulk.

Every test runs in the rolled-back ``conn`` transaction: enqueue joins it (``connection=conn``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import clock
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError, DuplicateJobError
from pgjobs.jobs.limits import keys_for
from pgjobs.operations import concurrency
from pgjobs.store import failed as failed_store
from pgjobs.store import finished as finished_store
from tests.sample_jobs import (
    Debounced,
    DiscardWhenBusy,
    Hourly,
    LimitedPerStore,
    OneAtATime,
    RebuildIndex,
    Record,
    StrictUnique,
    UniqueAndLimited,
)


def one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def state_of(conn: psycopg.Connection[Any], job_id: Any) -> str:
    return str(
        one(
            conn,
            """SELECT CASE
                 WHEN EXISTS (SELECT 1 FROM pgjobs_ready_executions WHERE job_id = j.id)
                   THEN 'ready'
                 WHEN EXISTS (SELECT 1 FROM pgjobs_blocked_executions WHERE job_id = j.id)
                   THEN 'blocked'
                 WHEN EXISTS (SELECT 1 FROM pgjobs_scheduled_executions WHERE job_id = j.id)
                   THEN 'scheduled'
                 WHEN j.discarded_at IS NOT NULL THEN 'discarded'
                 WHEN j.finished_at IS NOT NULL THEN 'finished' ELSE 'other' END
               FROM pgjobs_jobs j WHERE j.job_id = %s""",
            (job_id,),
        )
    )


def slots(conn: psycopg.Connection[Any], key: str) -> int | None:
    value = one(conn, "SELECT value FROM pgjobs_semaphores WHERE key = %s", (key,))
    return None if value is None else int(value)


# -- declarations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"to": 0}, "limit(to=...) must be a positive int"),
        ({"to": True}, "limit(to=...) must be a positive int"),
        ({"on_conflict": "wait"}, "limit(on_conflict=...) must be one of block, discard"),
        ({"duration": -1}, "limit(duration=...) must be a positive timedelta or seconds"),
        ({"key": "store_id"}, "limit(key=...) must be a callable"),
        ({"group": ""}, "limit(group=...) must be a non-empty string"),
    ],
)
def test_bad_limits_name_the_argument(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pgjobs.limit(**kwargs)


def test_bad_unique_declarations_name_the_argument() -> None:
    with pytest.raises(ConfigurationError, match="either until= or period="):
        pgjobs.unique(until="executing", period=60)
    with pytest.raises(ConfigurationError, match=r"unique\(until=...\) must be one of"):
        pgjobs.unique(until="finished")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"unique\(on_conflict=...\) must be one of"):
        pgjobs.unique(on_conflict="ignore")  # type: ignore[arg-type]


def test_a_class_attribute_of_the_wrong_kind_is_refused_at_definition() -> None:
    with pytest.raises(ConfigurationError, match=r"limits_concurrency must be pgjobs.limit"):

        class Wrong(pgjobs.Job):
            limits_concurrency = 2  # type: ignore[assignment]

            def perform(self) -> None: ...


def test_keys_name_the_group_and_the_class() -> None:
    now = datetime(2026, 11, 23, 13, 40, tzinfo=UTC)
    limited = keys_for(LimitedPerStore("store-7", 0.5), now)
    assert limited.concurrency_key == "tests.sample_jobs:LimitedPerStore/store-7"
    assert (limited.concurrency_limit, limited.concurrency_on_conflict) == (2, "block")
    assert limited.concurrency_duration == timedelta(seconds=60)
    assert keys_for(UniqueAndLimited("a"), now).concurrency_key == "shared"
    assert keys_for(RebuildIndex("products"), now).unique_key == (
        "d|tests.sample_jobs:RebuildIndex|products"
    )
    hourly = keys_for(Hourly("report"), now).unique_key
    assert hourly == (
        "p|tests.sample_jobs:Hourly|report@2026-11-23T13:00:00+00:00/2026-11-23T14:00:00+00:00"
    )
    assert not keys_for(Record("x"), now).special


def test_a_failing_key_function_names_the_job(default_database: Database) -> None:
    class Picky(pgjobs.Job):
        unique = pgjobs.unique(key=lambda x: x["id"])

        def perform(self, x: Any) -> None: ...

    with pytest.raises(ConfigurationError, match=r"Picky: its unique key function failed"):
        Picky.perform_later(3)


def test_the_decorator_takes_both() -> None:
    @pgjobs.job(limits_concurrency=pgjobs.limit(to=3), unique=pgjobs.unique())
    def sync_account(account_id: int) -> None: ...

    assert sync_account.job_class.limits_concurrency is not None
    assert sync_account.job_class.unique is not None


# -- concurrency limits at enqueue ------------------------------------------------------------


def test_jobs_past_the_limit_are_blocked(conn: psycopg.Connection[Any]) -> None:
    key = "tests.sample_jobs:LimitedPerStore/s1"
    results = [LimitedPerStore.set(connection=conn).perform_later("s1") for _ in range(3)]
    assert [r.state for r in results] == ["ready", "ready", "blocked"]
    assert [r.enqueued for r in results] == [True, True, True]
    assert slots(conn, key) == 2
    other = LimitedPerStore.set(connection=conn).perform_later("s2")
    assert other.state == "ready"  # another key has slots of its own
    blocked = conn.execute(
        "SELECT concurrency_key, expires_at - now() FROM pgjobs_blocked_executions"
    ).fetchall()
    assert blocked[0][0] == key
    assert timedelta(seconds=55) < blocked[0][1] <= timedelta(seconds=61)


def test_discard_on_conflict_finishes_the_job_unrun(conn: psycopg.Connection[Any]) -> None:
    first = DiscardWhenBusy.set(connection=conn).perform_later("a")
    second = DiscardWhenBusy.set(connection=conn).perform_later("a")
    assert (first.state, second.state) == ("ready", "discarded")
    assert second.enqueued is False
    assert state_of(conn, second.job_id) == "discarded"
    assert one(conn, "SELECT count(*) FROM pgjobs_blocked_executions") == 0


def test_a_scheduled_limited_job_takes_no_slot_until_due(conn: psycopg.Connection[Any]) -> None:
    result = LimitedPerStore.set(connection=conn, wait=600).perform_later("s3")
    assert result.state == "scheduled"
    assert slots(conn, "tests.sample_jobs:LimitedPerStore/s3") is None
    assert one(conn, "SELECT concurrency_key FROM pgjobs_scheduled_executions") == (
        "tests.sample_jobs:LimitedPerStore/s3"
    )


# -- unique jobs ---------------------------------------------------------------------------------


def test_a_duplicate_is_skipped_and_names_the_holder(conn: psycopg.Connection[Any]) -> None:
    first = RebuildIndex.set(connection=conn).perform_later("products")
    second = RebuildIndex.set(connection=conn).perform_later("products")
    assert first.state == "ready" and first.enqueued
    assert (second.state, second.enqueued, second.duplicate_of) == (
        "duplicate",
        False,
        first.job_id,
    )
    assert RebuildIndex.set(connection=conn).perform_later("orders").enqueued
    assert one(conn, "SELECT count(*) FROM pgjobs_jobs") == 2


def test_a_duplicate_raises_when_asked(conn: psycopg.Connection[Any]) -> None:
    first = StrictUnique.set(connection=conn).perform_later("x")
    with pytest.raises(DuplicateJobError) as raised:
        StrictUnique.set(connection=conn).perform_later("x")
    assert raised.value.existing_job_id == first.job_id
    # The caller's transaction is intact (the duplicate ran in a savepoint or not at all).
    assert one(conn, "SELECT count(*) FROM pgjobs_jobs") == 1


def test_replace_discards_the_waiting_job(conn: psycopg.Connection[Any]) -> None:
    first = Debounced.set(connection=conn, wait=60).perform_later("cart-1", 1)
    second = Debounced.set(connection=conn, wait=60).perform_later("cart-1", 2)
    assert second.enqueued and second.replaced == first.job_id
    assert state_of(conn, first.job_id) == "discarded"
    assert state_of(conn, second.job_id) == "scheduled"
    args = one(conn, "SELECT arguments FROM pgjobs_jobs WHERE job_id = %s", (second.job_id,))
    assert args["args"][1] == 2


def test_replace_keeps_a_running_job(conn: psycopg.Connection[Any]) -> None:
    first = Debounced.set(connection=conn).perform_later("cart-2", 1)
    # A worker claimed it: ready -> claimed.
    conn.execute(
        """WITH m AS (DELETE FROM pgjobs_ready_executions RETURNING job_id)
           INSERT INTO pgjobs_claimed_executions (job_id, process_id) SELECT job_id, 0 FROM m"""
    )
    second = Debounced.set(connection=conn).perform_later("cart-2", 2)
    assert (second.state, second.duplicate_of) == ("duplicate", first.job_id)


def test_a_period_key_allows_one_job_per_window(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    at = datetime(2026, 11, 23, 13, 5, tzinfo=UTC)
    monkeypatch.setattr(clock, "now", lambda: at)
    assert Hourly.set(connection=conn).perform_later("digest").enqueued
    at = datetime(2026, 11, 23, 13, 55, tzinfo=UTC)
    assert Hourly.set(connection=conn).perform_later("digest").state == "duplicate"
    at = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    assert Hourly.set(connection=conn).perform_later("digest").enqueued


def test_a_duplicate_takes_no_concurrency_slot(conn: psycopg.Connection[Any]) -> None:
    assert UniqueAndLimited.set(connection=conn).perform_later("a").state == "ready"
    assert UniqueAndLimited.set(connection=conn).perform_later("a").state == "duplicate"
    assert UniqueAndLimited.set(connection=conn).perform_later("b").state == "blocked"
    assert slots(conn, "shared") == 1


def test_async_enqueue_honours_both(test_database_url: str) -> None:
    async def scenario() -> list[str]:
        async with await psycopg.AsyncConnection.connect(test_database_url) as aconn:
            states = [
                (await RebuildIndex.set(connection=aconn).perform_later_async("idx")).state,
                (await RebuildIndex.set(connection=aconn).perform_later_async("idx")).state,
                (await DiscardWhenBusy.set(connection=aconn).perform_later_async("x")).state,
                (await DiscardWhenBusy.set(connection=aconn).perform_later_async("x")).state,
            ]
            await aconn.rollback()
            return states

    assert asyncio.run(scenario()) == ["ready", "duplicate", "ready", "discarded"]


# -- bulk ---------------------------------------------------------------------------------------


def test_bulk_enqueue_honours_limits_and_keys_in_order(conn: psycopg.Connection[Any]) -> None:
    jobs = [
        RebuildIndex("a"),
        LimitedPerStore("bulk"),
        Record("plain"),  # plain jobs are COPYed
        RebuildIndex("a"),  # a duplicate of one in the same batch
        LimitedPerStore("bulk"),
        LimitedPerStore("bulk"),
        RebuildIndex("b"),
    ]
    results = pgjobs.perform_all_later(jobs, connection=conn)
    assert [r.job_id for r in results] == [j.job_id for j in jobs]
    assert [r.state for r in results] == [
        "ready",
        "ready",
        "ready",
        "duplicate",
        "ready",
        "blocked",
        "ready",
    ]
    assert results[3].duplicate_of == results[0].job_id
    assert slots(conn, "tests.sample_jobs:LimitedPerStore/bulk") == 2
    assert one(conn, "SELECT count(*) FROM pgjobs_jobs") == 6


def test_bulk_raise_reaches_the_caller(conn: psycopg.Connection[Any]) -> None:
    batch = [StrictUnique("same"), Record("plain"), StrictUnique("same")]
    with pytest.raises(DuplicateJobError), conn.transaction():  # the caller rolls back
        pgjobs.perform_all_later(batch, connection=conn)
    assert one(conn, "SELECT count(*) FROM pgjobs_jobs") == 0


# -- concurrency maintenance --------------------------------------------------------------------


def test_maintenance_walks_every_key_however_many_hold_expired_blocked_jobs(
    conn: psycopg.Connection[Any], default_database: Database
) -> None:
    """1,000 keys whose blocked jobs wait past their expiry behind running holders (legitimate),
    and 1,001 keys whose release was missed (a free slot): one pass unblocks every one of those,
    more than any one page of keys holds."""
    conn.execute(
        """WITH keys AS (
               SELECT 'walk/' || kind || '-' || lpad(i::text, 4, '0') AS key, kind = 'full' AS held
               FROM (VALUES ('full', 1000), ('free', 1001)) k (kind, n), generate_series(1, n) i
           ), slots AS (
               INSERT INTO pgjobs_semaphores (key, value, expires_at)
               SELECT key, 1, now() + interval '1 hour' FROM keys WHERE held
           ), jobs AS (
               INSERT INTO pgjobs_jobs (job_id, queue_name, class_name, concurrency_key,
                                        concurrency_limit, concurrency_duration,
                                        concurrency_on_conflict)
               SELECT gen_random_uuid(), 'default', %s, key, 1, interval '1 minute', 'block'
               FROM keys
               RETURNING id, queue_name, priority, concurrency_key
           )
           INSERT INTO pgjobs_blocked_executions (job_id, queue_name, priority, concurrency_key,
                                                  expires_at)
           SELECT id, queue_name, priority, concurrency_key, now() - interval '1 hour' FROM jobs""",
        (OneAtATime.job_name,),
    )
    run = default_database.runner(conn)
    expired, unblocked = concurrency.maintain(run, channel="pgjobs_test", alive_threshold=60)
    assert (expired, unblocked) == (0, concurrency.Unblocked(readied=1001))
    assert one(conn, "SELECT count(*) FROM pgjobs_ready_executions") == 1001
    assert one(conn, "SELECT count(*) FROM pgjobs_blocked_executions") == 1000  # the full keys'


# -- period keys outlive their job's row only as long as their window --------------------------


def test_a_discarded_period_holder_is_kept_when_finished_jobs_are_deleted(
    conn: psycopg.Connection[Any], default_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """preserve_finished_jobs: false deletes a discarded job, but not its window's record."""
    at = datetime(2026, 11, 23, 13, 5, tzinfo=UTC)
    monkeypatch.setattr(clock, "now", lambda: at)
    first = Hourly.set(connection=conn).perform_later("digest")
    conn.execute(  # claimed by a worker (process 0)
        """WITH m AS (DELETE FROM pgjobs_ready_executions RETURNING job_id)
           INSERT INTO pgjobs_claimed_executions (job_id, process_id) SELECT job_id, 0 FROM m"""
    )
    id_ = one(conn, "SELECT id FROM pgjobs_jobs WHERE job_id = %s", (first.job_id,))
    run = default_database.runner(conn)
    params = {"id": id_, "process_id": 0, "now": at, "exception_class": "KeyError"}
    params.update(message="gone", backtrace="", hostname="h", pid=1)
    assert run(failed_store.DISCARD_DELETE, params) == [(id_, None)]
    at = datetime(2026, 11, 23, 13, 55, tzinfo=UTC)
    again = Hourly.set(connection=conn).perform_later("digest")
    assert (again.state, again.duplicate_of) == ("duplicate", first.job_id)
    assert state_of(conn, first.job_id) == "discarded"  # kept until clear_finished


def test_finishing_deletes_a_period_holder_only_once_its_window_has_ended(
    conn: psycopg.Connection[Any], default_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """preserve_finished_jobs: false keeps the record of an open window, not of an ended one."""
    at = datetime(2026, 11, 23, 12, 50, tzinfo=UTC)
    monkeypatch.setattr(clock, "now", lambda: at)
    late = Hourly.set(connection=conn).perform_later("late")  # the 12:00 window
    at = datetime(2026, 11, 23, 13, 5, tzinfo=UTC)
    current = Hourly.set(connection=conn).perform_later("current")  # the 13:00 window
    ids = [r[0] for r in conn.execute("SELECT job_id FROM pgjobs_ready_executions").fetchall()]
    conn.execute(
        """WITH m AS (DELETE FROM pgjobs_ready_executions RETURNING job_id)
           INSERT INTO pgjobs_claimed_executions (job_id, process_id) SELECT job_id, 0 FROM m"""
    )
    run = default_database.runner(conn)
    run(finished_store.FINISH_KEYED_DELETE, {"finished": ids, "process_id": 0, "now": at})
    assert state_of(conn, current.job_id) == "finished"  # kept: its window is open
    assert one(conn, "SELECT count(*) FROM pgjobs_jobs WHERE job_id = %s", (late.job_id,)) == 0
    assert Hourly.set(connection=conn).perform_later("current").state == "duplicate"
