"""Enqueueing a job that has a concurrency limit or a unique key (see :mod:`pgjobs.jobs.limits`).

The steps are written once, as a generator that yields ``(statement, params)`` and receives the
rows (:func:`steps`); :func:`run` and :func:`run_async` execute them on a psycopg connection.

- Unique key, no limit: one statement (``INSERT ... ON CONFLICT DO NOTHING`` + the ready or
  scheduled row).  Nothing inserted means a duplicate: the job holding the key is looked up and
  the class's ``on_conflict`` decides (skip, raise, or replace a waiting one and try again).
- A due job of a limited class: the job, then — in the same transaction — its slot: ready,
  blocked, or finished as discarded.  A scheduled one takes its slot when due (dispatcher).

The multi-statement cases run in a transaction of their own (a savepoint inside the caller's).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from pgjobs.db.names import sql
from pgjobs.errors import DuplicateJobError
from pgjobs.jobs.limits import Keys
from pgjobs.store import blocked as blocked_store
from pgjobs.store import jobs as store

Step = tuple[str, dict[str, Any]]
Rows = list[tuple[Any, ...]]
IDLE = TransactionStatus.IDLE
MAX_ATTEMPTS = 5  # a key released and taken again between our insert and our look-up


@dataclass(frozen=True)
class Written:
    """What happened to a keyed job: its row id (None if not written) and state."""

    id: int | None
    created_at: datetime | None
    state: str  # ready | scheduled | blocked | discarded | duplicate
    duplicate_of: Any = None  # the job_id of the job holding the unique key
    replaced: Any = None  # the job_id of the waiting job this one replaced


def needs_transaction(keys: Keys, scheduled: bool) -> bool:
    return (keys.concurrency_key is not None and not scheduled) or keys.on_duplicate == "replace"


def steps(
    params: dict[str, Any], keys: Keys, scheduled: bool, now: datetime
) -> Generator[Step, Rows, Written]:
    params = {
        **params,
        "concurrency_key": keys.concurrency_key,
        "concurrency_limit": keys.concurrency_limit,
        "concurrency_duration": keys.concurrency_duration,
        "concurrency_on_conflict": keys.concurrency_on_conflict,
        "unique_key": keys.unique_key,
        "rate_key": keys.rate_key,
        "rate_limit": keys.rate_limit,
        "rate_period": keys.rate_period,
        "now": now,
    }
    replaced = None
    for _ in range(MAX_ATTEMPTS):
        written = yield from _insert(params, keys, scheduled)
        if written is not None:
            if replaced is not None:
                return Written(written.id, written.created_at, written.state, replaced=replaced)
            return written
        rows = yield (store.FIND_UNIQUE, {"unique_key": params["unique_key"]})
        if not rows:
            continue  # released meanwhile: try again
        holder = rows[0][1]
        if keys.on_duplicate == "raise":
            raise DuplicateJobError(holder, keys.unique_key)
        if keys.on_duplicate == "replace":
            count, old_job_id, released_key = (yield (store.REPLACE_WAITING, params))[0]
            if old_job_id is None:
                continue  # the holder let the key go meanwhile: try the insert again
            if count:
                replaced = old_job_id
                if released_key is not None:
                    yield from _unblock(released_key, params)
                continue
        return Written(None, None, "duplicate", duplicate_of=holder)
    raise DuplicateJobError(None, keys.unique_key)


def _insert(
    params: dict[str, Any], keys: Keys, scheduled: bool
) -> Generator[Step, Rows, Written | None]:
    if scheduled:
        rows = yield (store.ENQUEUE_SCHEDULED_KEYED, params)
        return Written(rows[0][0], rows[0][1], "scheduled") if rows else None
    if keys.concurrency_key is None:
        rows = yield (store.ENQUEUE_READY_KEYED, params)
        return Written(rows[0][0], rows[0][1], "ready") if rows else None
    rows = yield (store.INSERT_KEYED, params)
    if not rows:
        return None
    id_, created_at = rows[0]
    placed = yield (store.PLACE_LIMITED, {**params, "id": id_})
    return Written(id_, created_at, str(placed[0][0]))


def _unblock(key: str, params: dict[str, Any]) -> Generator[Step, Rows, None]:
    """A replaced ready job gave its slot back: hand it to the key's next blocked job."""
    step = {"key": key, "channel": params["channel"], "now": params["now"]}
    while True:
        picked, readied, discarded, _ = (yield (blocked_store.UNBLOCK_NEXT, step))[0]
        if not picked or not (readied or discarded):
            return


def run(
    conn: psycopg.Connection[Any],
    schema: str | None,
    gen: Generator[Step, Rows, Written],
    *,
    atomic: bool,
) -> Written:
    def drive() -> Written:
        try:
            template, params = next(gen)
            while True:
                cur = conn.execute(sql(template, schema), params)
                template, params = gen.send(cur.fetchall())
        except StopIteration as stop:
            result: Written = stop.value
            return result

    if not atomic:
        return drive()
    if not conn.autocommit and conn.info.transaction_status == IDLE:
        # The caller's transaction has not begun yet: begin it (psycopg sends BEGIN before the
        # first statement), so that transaction() below is a savepoint, not a commit of its own.
        conn.execute("SELECT 1")
    with conn.transaction():
        return drive()


async def run_async(
    conn: psycopg.AsyncConnection[Any],
    schema: str | None,
    gen: Generator[Step, Rows, Written],
    *,
    atomic: bool,
) -> Written:
    async def drive() -> Written:
        try:
            template, params = next(gen)
            while True:
                cur = await conn.execute(sql(template, schema), params)
                template, params = gen.send(await cur.fetchall())
        except StopIteration as stop:
            result: Written = stop.value
            return result

    if not atomic:
        return await drive()
    if not conn.autocommit and conn.info.transaction_status == IDLE:
        await conn.execute("SELECT 1")
    async with conn.transaction():
        return await drive()
