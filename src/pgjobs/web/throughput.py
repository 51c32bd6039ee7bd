"""Processed and failed jobs per minute over the last hour, without scanning ``pgjobs_jobs``.

``finished_at`` is deliberately not indexed (it is written on the hot path), so finished jobs are
counted over a bounded walk of the primary key instead:

1. ids grow with ``created_at``, so a binary search over the primary key (:data:`FIRST_ID_SINCE`,
   ~log2(ids) index probes in one statement) finds the first job enqueued since
   ``now - (WINDOW + LOOKBACK)``;
2. :data:`FINISHED_PER_MINUTE` walks the ids from there to the newest — at most :data:`WALK_CAP`
   of them, the newest — and counts those that finished in each minute.

The approximation: a job enqueued more than ``LOOKBACK`` before the hour began (a long-scheduled
job, a deep backlog) that finished within it is not counted, and at more than ``WALK_CAP`` jobs
per ``WINDOW + LOOKBACK`` only the newest ``WALK_CAP`` are (the chart then says since when).
With ``preserve_finished_jobs: false`` finished jobs are deleted and none are counted.  Failed
jobs per minute are the rows of ``pgjobs_failed_executions`` by ``created_at`` (its index), plus
the jobs discarded by a ``discard_on`` rule found by the walk: a failed job retried or discarded
from the dashboard since no longer counts.  Cancelled jobs count as neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from pgjobs.db.names import sql

WINDOW = timedelta(hours=1)
LOOKBACK = timedelta(minutes=15)
WALK_CAP = 100_000

# The first id whose created_at is at or after %(since)s (or max(id) + 1): binary search over the
# primary key.  P(x) = "the first job with id >= x was created since"; lo only grows, hi only
# shrinks, one index probe per step.  Ids that are slightly out of created_at order (concurrent
# transactions) only move the boundary by those few rows.
FIRST_ID_SINCE = """
WITH RECURSIVE search(lo, hi) AS (
    SELECT (SELECT min(id) FROM {jobs}), (SELECT max(id) FROM {jobs}) + 1
    UNION ALL
    SELECT CASE WHEN p.created_at >= %(since)s THEN s.lo ELSE p.id + 1 END,
           CASE WHEN p.created_at >= %(since)s THEN s.lo + (s.hi - s.lo) / 2 ELSE s.hi END
    FROM search s
    CROSS JOIN LATERAL (
        SELECT id, created_at FROM {jobs} WHERE id >= s.lo + (s.hi - s.lo) / 2
        ORDER BY id LIMIT 1
    ) p
    WHERE s.lo < s.hi
)
SELECT min(hi), (SELECT max(id) FROM {jobs}) FROM search
"""

# When the first job of the walk was enqueued (one primary-key probe).
CREATED_AT_FROM = "SELECT created_at FROM {jobs} WHERE id >= %(id)s ORDER BY id LIMIT 1"

# Jobs finished per minute since %(since)s among ids >= %(first)s: a primary-key range scan of
# at most WALK_CAP rows.  Returns (minute as epoch / 60, succeeded, discarded).  A cancelled job
# is neither: it did not run to its end, and nothing went wrong.
FINISHED_PER_MINUTE = """
SELECT floor(extract(epoch FROM finished_at) / 60)::bigint,
       count(*) FILTER (WHERE discarded_at IS NULL AND cancelled_at IS NULL),
       count(*) FILTER (WHERE discarded_at IS NOT NULL)
FROM {jobs}
WHERE id >= %(first)s AND finished_at >= %(since)s
GROUP BY 1
"""

# Jobs failed for good per minute since %(since)s; served by failed (created_at, job_id).
FAILED_PER_MINUTE = """
SELECT floor(extract(epoch FROM created_at) / 60)::bigint, count(*)
FROM {failed} WHERE created_at >= %(since)s
GROUP BY 1
"""


@dataclass(frozen=True)
class Minute:
    start: datetime
    processed: int
    failed: int


@dataclass(frozen=True)
class Throughput:
    minutes: list[Minute]  # oldest first, one per minute of the window, the current one last
    walked_since: datetime | None  # set when the walk was capped: finished jobs enqueued since

    @property
    def processed(self) -> int:
        return sum(m.processed for m in self.minutes)

    @property
    def failed(self) -> int:
        return sum(m.failed for m in self.minutes)


def _minute(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


def throughput(
    conn: psycopg.Connection[Any],
    schema: str | None,
    now: datetime,
    *,
    window: timedelta = WINDOW,
    cap: int = WALK_CAP,
) -> Throughput:
    """Processed and failed jobs in each minute of the last ``window`` (see the module doc)."""
    last = _minute(now)
    first_minute = last - int(window.total_seconds() // 60) + 1
    since = datetime.fromtimestamp(first_minute * 60, tz=now.tzinfo)
    processed: dict[int, int] = {}
    failed: dict[int, int] = {}
    walked_since = None
    found = conn.execute(sql(FIRST_ID_SINCE, schema), {"since": since - LOOKBACK}).fetchone()
    if found is not None and found[0] is not None:
        first, newest = int(found[0]), int(found[1])
        if newest - first + 1 > cap:
            first = newest - cap + 1
            row = conn.execute(sql(CREATED_AT_FROM, schema), {"id": first}).fetchone()
            walked_since = row[0] if row else None
        params = {"first": first, "since": since}
        for minute, ok, discarded in conn.execute(sql(FINISHED_PER_MINUTE, schema), params):
            processed[int(minute)] = int(ok)
            failed[int(minute)] = int(discarded)
    for minute, count in conn.execute(sql(FAILED_PER_MINUTE, schema), {"since": since}):
        failed[int(minute)] = failed.get(int(minute), 0) + int(count)
    minutes = [
        Minute(datetime.fromtimestamp(m * 60, tz=now.tzinfo), processed.get(m, 0), failed.get(m, 0))
        for m in range(first_minute, last + 1)
    ]
    return Throughput(minutes, walked_since)
