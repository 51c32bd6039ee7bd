"""``pgjobs_scheduled_executions``: dispatching due jobs to ready.

One statement per batch moves due rows ``scheduled → ready``; ``FOR UPDATE SKIP LOCKED`` lets
several dispatchers run side by side without ever moving a row twice (a row locked by one is
skipped by the others, and once moved it is gone).
"""

from __future__ import annotations

from pgjobs.store import jobs as _jobs

# Served by scheduled (scheduled_at, priority, job_id): the earliest due first.  Jobs of limited
# classes go to blocked instead of ready, to take a concurrency slot: the dispatcher unblocks
# their keys next.  Returns (moved, notify, keys to unblock).
DISPATCH_DUE = (
    """
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
    SELECT m.job_id, m.queue_name, """
    + _jobs.line_priority("j.concurrency_on_conflict", "m.priority")
    + """, m.concurrency_key,
           %(now)s::timestamptz + j.concurrency_duration
    FROM moved m JOIN {jobs} j ON j.id = m.job_id
    WHERE m.concurrency_key IS NOT NULL
    RETURNING concurrency_key
)
SELECT (SELECT count(*) FROM moved),
       (SELECT CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '*') END FROM ready),
       (SELECT array_agg(DISTINCT concurrency_key) FROM blocked)
"""
)

# When the next scheduled job is due, and in how many seconds (by the database's clock) the next
# rate limit's line may move (store/rates.py): the dispatcher sleeps until the earlier at most.
# Served by scheduled (scheduled_at, ...) and rate_limits (free_at).
NEXT_DUE = """
SELECT (SELECT min(scheduled_at) FROM {scheduled}),
       extract(epoch FROM (SELECT min(free_at) FROM {rates} WHERE free_at IS NOT NULL)
                          - clock_timestamp())
"""

# An operator discards a batch of scheduled jobs (pgjobs.operations.waiting): picked after a keyset
# cursor (scheduled's primary key) and locked SKIP LOCKED, so a job the dispatcher is moving is
# left to it; deleted and finished as discarded (unique key released).  A scheduled job holds no
# slot — except an ordered key's job waiting for its retry or the end of its snooze (its row
# carries no key: it kept its slot), which gives it back.  Returns (discarded, cursor, keys to
# unblock).
DISCARD_SCHEDULED = (
    _jobs.pick_waiting("scheduled")
    + _jobs.DISCARD_GONE
    + """, held AS (
    SELECT j.concurrency_key AS k, count(*) AS n FROM gone g JOIN {jobs} j ON j.id = g.job_id
    WHERE g.concurrency_key IS NULL AND j.concurrency_key IS NOT NULL
      AND left(j.concurrency_on_conflict, 7) = 'ordered'
      AND EXISTS (SELECT 1 FROM discarded d WHERE d.id = g.job_id)
    GROUP BY j.concurrency_key
), released AS (
    UPDATE {semaphores} s SET value = greatest(s.value - h.n, 0), updated_at = %(now)s
    FROM held h WHERE s.key = h.k
)
SELECT (SELECT count(*) FROM discarded), (SELECT max(job_id) FROM picked),
       (SELECT array_agg(k) FROM held)
"""
)

# An operator runs a batch of scheduled jobs now (pgjobs.operations.waiting): picked like
# DISCARD_SCHEDULED, their scheduled_at set to now, and moved on as DISPATCH_DUE moves due jobs:
# to ready, or, for a limited class, to blocked to take a slot (the caller unblocks the keys
# returned, as the dispatcher does).  Returns (moved, cursor, notify, keys to unblock).
DISPATCH_SCHEDULED = (
    _jobs.pick_waiting("scheduled")
    + """, stamped AS (
    UPDATE {jobs} j SET scheduled_at = %(now)s FROM gone g WHERE j.id = g.job_id
    RETURNING j.id, j.concurrency_duration, j.concurrency_on_conflict
), ready AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT job_id, queue_name, priority FROM gone WHERE concurrency_key IS NULL
    RETURNING queue_name
), blocked AS (
    INSERT INTO {blocked} (job_id, queue_name, priority, concurrency_key, expires_at)
    SELECT g.job_id, g.queue_name, """
    + _jobs.line_priority("s.concurrency_on_conflict", "g.priority")
    + """, g.concurrency_key,
           %(now)s::timestamptz + s.concurrency_duration
    FROM gone g JOIN stamped s ON s.id = g.job_id
    WHERE g.concurrency_key IS NOT NULL
    RETURNING concurrency_key
)
SELECT (SELECT count(*) FROM gone), (SELECT max(job_id) FROM picked),
       (SELECT CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '*') END FROM ready),
       (SELECT array_agg(DISTINCT concurrency_key) FROM blocked)
"""
)
