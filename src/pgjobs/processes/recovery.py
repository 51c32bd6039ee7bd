"""Ending processes: recovering (or releasing) the jobs of processes that died or stopped.

Guarantees:

- A process row is deleted only in a transaction that first locks it ``FOR UPDATE`` and then
  moves its claimed jobs on.  A claim locks its own process row ``FOR KEY SHARE`` and claims only
  while the row exists (:mod:`pgjobs.store.ready`), so the lock waits for a claim still running
  on the server — even one whose client was SIGKILLed mid-statement — and the statements after it
  see every job that process will ever have claimed.  Nothing can be claimed under a deleted row.
- Each operation is one transaction: a lost reply is retried and finds the work done, or does all
  of it; a caller dying half way leaves nothing half done.
- *Recovered* jobs (the process died) go back to ready with the interrupted attempt counted, or
  are failed with ``ProcessExitError`` after ``max_interruptions``; *released* jobs (the process
  stopped cleanly, or its supervisor stopped it) go back to ready uncounted.
- :func:`sweep_orphans` recovers claimed rows whose process row is gone, whatever removed it,
  once they are ``grace`` seconds old: the catch-all that makes "never stranded" hold.

All times are the database's (``now()``), so hosts with skewed clocks agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgjobs import events
from pgjobs.db.database import GAVE_UP, Database
from pgjobs.operations import concurrency
from pgjobs.store import claimed as claimed_store
from pgjobs.store import processes as store
from pgjobs.store.jobs import notify_channel

ORPHAN_GRACE = 5.0  # seconds a claimed row of a missing process is left alone before recovery


@dataclass
class Recovered:
    """What one operation did: processes ended, jobs re-queued / failed / released."""

    processes: list[tuple[Any, ...]] = field(default_factory=list)  # (id, kind, name, host, pid)
    requeued: int = 0
    failed: int = 0
    released: int = 0
    # (queue, class, count) of the interrupted executions recovered (re-queued or failed)
    interrupted: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [int(row[0]) for row in self.processes]

    def emit(self, why: str) -> None:
        """The events of what was done: ``release_claimed`` (uncounted) and ``recover``."""
        if self.released:
            events.emit(
                "release_claimed",
                process_id=self.ids[0] if len(self.ids) == 1 else self.ids,
                process=", ".join(str(row[2]) for row in self.processes),
                count=self.released,
                reason=why,
            )
        if self.requeued or self.failed:
            events.emit(
                "recover",
                process_ids=self.ids,
                requeued=self.requeued,
                failed=self.failed,
                interrupted=self.interrupted,
            )


def _rows(conn: psycopg.Connection[Any], database: Database, template: str, params: Any) -> Any:
    cur = conn.execute(database.sql(template), params)
    return cur.fetchall() if cur.description else []


def _recover(
    conn: psycopg.Connection[Any],
    database: Database,
    template: str,
    params: dict[str, Any],
    max_interruptions: int,
    result: Recovered,
) -> list[str]:
    channel = notify_channel(database.schema)
    row = _rows(
        conn,
        database,
        template,
        {**params, "max_interruptions": max_interruptions, "channel": channel},
    )[0]
    result.requeued += int(row[0])
    result.failed += int(row[1])
    result.interrupted += [(str(q), str(c), int(n)) for q, c, n in row[4] or []]
    return list(row[3] or [])


def _release(
    conn: psycopg.Connection[Any], database: Database, ids: Sequence[int], result: Recovered
) -> None:
    params = {"process_ids": list(ids), "job_ids": None, "channel": notify_channel(database.schema)}
    result.released += int(_rows(conn, database, claimed_store.RELEASE, params)[0][0])


def _durable(conn: psycopg.Connection[Any]) -> None:
    """Ending a process commits durably even on a ``durable_claims: false`` worker's connection:
    a crash must not bring back a process row, or claims, that were already dealt with."""
    conn.execute("SET LOCAL synchronous_commit = on")


def _unblock(conn: psycopg.Connection[Any], database: Database, keys: list[str]) -> None:
    """Jobs failed after too many interruptions gave their slots back.  After the commit; if
    this is lost, the blocked jobs' expiry lets concurrency maintenance unblock them."""
    if keys:
        # An application transaction holding the key's row: maintenance unblocks it later.
        with contextlib.suppress(*GAVE_UP):
            concurrency.unblock(
                database.runner(conn), keys, channel=notify_channel(database.schema)
            )


def _end(
    conn: psycopg.Connection[Any],
    database: Database,
    lock: str,
    params: dict[str, Any],
    *,
    recover: bool,
    max_interruptions: int,
) -> Recovered:
    """Lock process rows with ``lock``, then recover or release their jobs and delete the rows,
    in one transaction; unblock after the commit."""
    result = Recovered()
    keys: list[str] = []
    with conn.transaction():
        _durable(conn)
        result.processes = _rows(conn, database, lock, params)
        if not result.processes:
            return result
        if recover:
            keys = _recover(
                conn,
                database,
                claimed_store.RECOVER,
                {"process_ids": result.ids},
                max_interruptions,
                result,
            )
        else:
            _release(conn, database, result.ids, result)
        _rows(conn, database, store.REMOVE, {"ids": result.ids})
    _unblock(conn, database, keys)
    return result


def prune_dead(
    conn: psycopg.Connection[Any],
    database: Database,
    *,
    threshold: float,
    alive: Sequence[int],
    max_interruptions: int,
) -> Recovered:
    """Remove processes whose heartbeat is older than ``threshold`` seconds (except ``alive``),
    recovering their jobs, in one transaction."""
    params = {"threshold": threshold, "alive": list(alive)}
    return _end(
        conn, database, store.LOCK_DEAD, params, recover=True, max_interruptions=max_interruptions
    )


def end(
    conn: psycopg.Connection[Any],
    database: Database,
    ids: Sequence[int],
    *,
    recover: bool,
    max_interruptions: int,
    wait: bool = True,
) -> Recovered:
    """Remove the given processes' rows, recovering (``recover``: they died) or releasing (they
    stopped) their jobs, in one transaction.  ``wait=False``: rows locked elsewhere are left
    (the result's ``ids`` say which were ended)."""
    if not ids:
        return Recovered()
    lock = store.LOCK if wait else store.LOCK_SKIP
    return _end(
        conn,
        database,
        lock,
        {"ids": list(ids)},
        recover=recover,
        max_interruptions=max_interruptions,
    )


def sweep_orphans(
    conn: psycopg.Connection[Any],
    database: Database,
    *,
    max_interruptions: int,
    grace: float = ORPHAN_GRACE,
) -> Recovered:
    """Recover claimed rows whose process row no longer exists (older than ``grace``)."""
    result = Recovered()
    keys = _recover(
        conn, database, claimed_store.RECOVER_ORPHANED, {"grace": grace}, max_interruptions, result
    )
    _unblock(conn, database, keys)
    if (result.requeued or result.failed) and "recover_orphans" in events.active:
        events.emit(
            "recover_orphans",
            requeued=result.requeued,
            failed=result.failed,
            interrupted=result.interrupted,
        )
    return result
