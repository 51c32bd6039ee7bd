"""Counting without scanning: jobs per state and queue sizes for the dashboard.

A job's state is the execution table that holds its row, so each state is counted on its own,
small table — and only up to :data:`COUNT_CAP` rows (a ``LIMIT`` inside the count), so no count
ever reads a whole table.  Past the cap the number shown is the planner's estimate (``≈``):
``pg_class.reltuples`` scaled to the table's current size, as the planner itself does.
Finished jobs have no execution table: while ``pgjobs_jobs`` is under the cap they are counted,
past it they are the estimate of ``pgjobs_jobs`` minus the other states.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from pgjobs.db.names import names, sql
from pgjobs.store import pauses as pauses_store
from pgjobs.store import ready as ready_store

COUNT_CAP = 10_000
# A queue's latency is the age of its oldest ready row among the next LATENCY_WINDOW in claim
# order: exact for queues up to that size, and what the workers will reach next beyond it.
LATENCY_WINDOW = 1_000

# Each execution table counted up to %(cap)s rows (sequential reads that stop at the cap).
EXECUTION_COUNTS = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM {ready} LIMIT %(cap)s) t),
       (SELECT count(*) FROM (SELECT 1 FROM {scheduled} LIMIT %(cap)s) t),
       (SELECT count(*) FROM (SELECT 1 FROM {claimed} LIMIT %(cap)s) t),
       (SELECT count(*) FROM (SELECT 1 FROM {blocked} LIMIT %(cap)s) t),
       (SELECT count(*) FROM (SELECT 1 FROM {failed} LIMIT %(cap)s) t)"""
# ... and pgjobs_jobs the same way, from its newest end: retention deletes the oldest ids, whose
# dead index entries (until VACUUM) an unordered scan would walk first.
STATE_COUNTS = (
    EXECUTION_COUNTS
    + """,
       (SELECT count(*) FROM (SELECT 1 FROM {jobs} ORDER BY id DESC LIMIT %(cap)s) t)
"""
)
EXECUTION_TABLES = ("ready", "scheduled", "claimed", "blocked", "failed")

# Finished jobs, counted exactly: only run while pgjobs_jobs holds fewer than COUNT_CAP rows.
FINISHED_SMALL = "SELECT count(*) FROM {jobs} WHERE finished_at IS NOT NULL"

# The planner's row estimate for a table: reltuples per page times its current pages (NULL when
# the table was never vacuumed or analyzed).  Reads pg_class only.
ESTIMATE_TABLE = """
SELECT CASE WHEN c.reltuples >= 0 AND c.relpages > 0 THEN
    (c.reltuples / c.relpages
     * (pg_relation_size(c.oid) / current_setting('block_size')::int))::bigint END
FROM pg_class c WHERE c.oid = to_regclass(%(table)s)
"""

# Per queue: ready jobs counted up to %(cap)s, and the oldest ready row among the next
# %(window)s in claim order.  Both served by ready (queue_name, priority, job_id).
QUEUE_STATS = """
SELECT q.name,
       (SELECT count(*) FROM (SELECT 1 FROM {ready} r WHERE r.queue_name = q.name
                              LIMIT %(cap)s) c),
       (SELECT min(o.created_at) FROM (SELECT r.created_at FROM {ready} r
                                       WHERE r.queue_name = q.name
                                       ORDER BY r.priority, r.job_id LIMIT %(window)s) o)
FROM unnest(%(queues)s::text[]) AS q(name)
ORDER BY q.name
"""

# The planner's estimate of one queue's ready rows (from the column statistics).
ESTIMATE_QUEUE = "EXPLAIN (FORMAT JSON) SELECT 1 FROM {ready} WHERE queue_name = %(queue)s"

STATES = ("ready", "scheduled", "in_progress", "blocked", "failed", "finished")


@dataclass(frozen=True)
class Count:
    """A number as the dashboard shows it: exact, an estimate (≈), or a lower bound (10,000+)."""

    value: int
    kind: Literal["exact", "estimate", "at_least"] = "exact"


@dataclass(frozen=True)
class QueueStats:
    name: str
    size: Count
    oldest: datetime | None  # created_at of the oldest ready row seen (latency = now - oldest)
    paused: bool

    def latency(self, now: datetime) -> float:
        return max(0.0, (now - self.oldest).total_seconds()) if self.oldest else 0.0


def _estimate_table(conn: psycopg.Connection[Any], schema: str | None, table: str) -> int | None:
    row = conn.execute(sql(ESTIMATE_TABLE, schema), {"table": names(schema)[table]}).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def explain_rows(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> int:
    """The planner's row estimate for ``statement`` (an ``EXPLAIN (FORMAT JSON) ...``)."""
    row = conn.execute(statement, params).fetchone()
    plan = row[0] if row else None
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"]) if plan else 0


def _bounded(
    conn: psycopg.Connection[Any], schema: str | None, table: str, counted: int, cap: int
) -> Count:
    if counted < cap:
        return Count(counted)
    estimate = _estimate_table(conn, schema, table)
    return Count(max(estimate, cap), "estimate") if estimate is not None else Count(cap, "at_least")


def state_counts(
    conn: psycopg.Connection[Any], schema: str | None, cap: int = COUNT_CAP
) -> dict[str, Count]:
    """Jobs per state (the keys of :data:`STATES`), exact below ``cap``, else estimated."""
    row = conn.execute(sql(STATE_COUNTS, schema), {"cap": cap}).fetchone()
    assert row is not None
    counts = _executions(conn, schema, row[:5], cap)
    if int(row[5]) < cap:
        finished = conn.execute(sql(FINISHED_SMALL, schema)).fetchone()
        counts["finished"] = Count(int(finished[0]) if finished else 0)
        return counts
    total = _estimate_table(conn, schema, "jobs")
    if total is None:
        counts["finished"] = Count(0, "at_least")
    else:
        others = sum(c.value for c in counts.values())
        counts["finished"] = Count(max(total - others, 0), "estimate")
    return counts


def _executions(
    conn: psycopg.Connection[Any], schema: str | None, counted: Sequence[Any], cap: int
) -> dict[str, Count]:
    return {
        state: _bounded(conn, schema, table, int(n), cap)
        for state, table, n in zip(STATES[:5], EXECUTION_TABLES, counted, strict=True)
    }


def execution_counts(
    conn: psycopg.Connection[Any], schema: str | None, cap: int = COUNT_CAP
) -> dict[str, Count]:
    """Jobs per unfinished state (ready … failed; ``in_progress`` is claimed), exact below
    ``cap``, else estimated: the execution tables only, never ``pgjobs_jobs``."""
    row = conn.execute(sql(EXECUTION_COUNTS, schema), {"cap": cap}).fetchone()
    assert row is not None
    return _executions(conn, schema, row, cap)


def queue_names(conn: psycopg.Connection[Any], schema: str | None) -> tuple[list[str], set[str]]:
    """The queues with ready jobs (a loose index scan, one probe per queue) or a pause."""
    ready = [str(r[0]) for r in conn.execute(sql(ready_store.READY_QUEUES, schema))]
    paused = {str(r[0]) for r in conn.execute(sql(pauses_store.LIST, schema))}
    return sorted(set(ready) | paused), paused


def queue_stats(
    conn: psycopg.Connection[Any],
    schema: str | None,
    cap: int = COUNT_CAP,
    window: int = LATENCY_WINDOW,
    only: Sequence[str] | None = None,
) -> list[QueueStats]:
    """Size, oldest ready job and pause of every queue (or of ``only`` those)."""
    queues, paused = queue_names(conn, schema)
    if only is not None:
        queues = [q for q in queues if q in set(only)]
    params = {"queues": queues, "cap": cap, "window": window}
    found = []
    for name, size, oldest in conn.execute(sql(QUEUE_STATS, schema), params).fetchall():
        count = Count(int(size))
        if count.value >= cap:
            statement = sql(ESTIMATE_QUEUE, schema)
            count = Count(max(explain_rows(conn, statement, {"queue": name}), cap), "estimate")
        found.append(QueueStats(str(name), count, oldest, name in paused))
    return found
