"""``pgjobs_scheduled_executions``: dispatching due jobs to ready.

One statement per batch moves due rows ``scheduled → ready``; ``FOR UPDATE SKIP LOCKED`` lets
several dispatchers run side by side without ever moving a row twice (a row locked by one is
skipped by the others, and once moved it is gone).
"""

from __future__ import annotations

# Served by scheduled (scheduled_at, priority, job_id): the earliest due first.  Jobs of limited
# classes go to blocked instead of ready, to take a concurrency slot: the dispatcher unblocks
# their keys next.  Returns (moved, notify, keys to unblock).
DISPATCH_DUE = """
WITH due AS (
    SELECT job_id FROM {scheduled}
    WHERE scheduled_at <= %(now)s
    ORDER BY scheduled_at, priority, job_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM {scheduled} s USING due WHERE s.job_id = due.job_id
    RETURNING s.job_id, s.queue_name, s.priority, s.concurrency_key
), ready AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT job_id, queue_name, priority FROM moved WHERE concurrency_key IS NULL
    RETURNING queue_name
), blocked AS (
    INSERT INTO {blocked} (job_id, queue_name, priority, concurrency_key, expires_at)
    SELECT m.job_id, m.queue_name, m.priority, m.concurrency_key,
           %(now)s::timestamptz + j.concurrency_duration
    FROM moved m JOIN {jobs} j ON j.id = m.job_id
    WHERE m.concurrency_key IS NOT NULL
    RETURNING concurrency_key
)
SELECT (SELECT count(*) FROM moved),
       (SELECT CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '*') END FROM ready),
       (SELECT array_agg(DISTINCT concurrency_key) FROM blocked)
"""

# When the next scheduled job is due (the dispatcher sleeps until then at most).
NEXT_DUE = "SELECT min(scheduled_at) FROM {scheduled}"
