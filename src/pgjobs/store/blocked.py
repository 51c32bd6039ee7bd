"""``pgjobs_blocked_executions``: jobs waiting for a concurrency slot.

Jobs leave blocked one at a time per key, in priority order, each through :data:`UNBLOCK_NEXT`:
take the next blocked job of the key (``FOR UPDATE SKIP LOCKED``: two unblockers of one key
never take the same job), try to take a slot for it, and move it to ready when it got one.
A job enqueued with ``on_conflict="discard"`` (one that was scheduled and found no slot when
due) is finished as discarded instead of waiting.
"""

from __future__ import annotations

# Unblock the next job of %(key)s if a slot is free.  Returns (picked, readied, discarded).
# Served by blocked (concurrency_key, priority, job_id), semaphores' primary key.
UNBLOCK_NEXT = """
WITH next AS (
    -- Lowest priority number first, then FIFO: the order jobs would have run in.
    SELECT b.job_id, b.queue_name, b.priority, j.concurrency_limit, j.concurrency_duration,
           j.concurrency_on_conflict
    FROM {blocked} b JOIN {jobs} j ON j.id = b.job_id
    WHERE b.concurrency_key = %(key)s
    ORDER BY b.priority, b.job_id
    LIMIT 1
    FOR UPDATE OF b SKIP LOCKED
), slot AS (
    INSERT INTO {semaphores} AS s (key, value, expires_at)
    SELECT %(key)s, 1, %(now)s::timestamptz + concurrency_duration FROM next
    ON CONFLICT (key) DO UPDATE
        SET value = s.value + 1, expires_at = excluded.expires_at, updated_at = %(now)s
        WHERE s.value < (SELECT concurrency_limit FROM next)
    RETURNING key
), moved AS (
    DELETE FROM {blocked} b USING next n
    WHERE b.job_id = n.job_id
      AND (EXISTS (SELECT 1 FROM slot) OR n.concurrency_on_conflict = 'discard')
    RETURNING b.job_id, b.queue_name, b.priority
), readied AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT job_id, queue_name, priority FROM moved WHERE EXISTS (SELECT 1 FROM slot)
    RETURNING queue_name
), discarded AS (
    UPDATE {jobs} j SET finished_at = %(now)s, discarded_at = %(now)s,
                        unique_key = CASE WHEN left(j.unique_key, 2) = 'p|' THEN j.unique_key END
    FROM moved m WHERE j.id = m.job_id AND NOT EXISTS (SELECT 1 FROM slot)
    RETURNING j.id
)
SELECT (SELECT count(*) FROM next), (SELECT count(*) FROM readied),
       (SELECT count(*) FROM discarded),
       (SELECT pg_notify(%(channel)s, queue_name) FROM readied)
"""

# Keys with a job blocked past its expiry: a release they may have missed (concurrency
# maintenance).  Served by blocked (expires_at, concurrency_key).
EXPIRED_KEYS = """
-- DISTINCT before the LIMIT: one key's long expired backlog must not hide the other keys.
SELECT DISTINCT concurrency_key FROM {blocked} WHERE expires_at < %(now)s LIMIT %(limit)s
"""

# Keys with blocked jobs, after a lost connection (a reply naming keys to unblock may be lost).
# Served by blocked (concurrency_key, priority, job_id).
KEYS = "SELECT DISTINCT concurrency_key FROM {blocked} LIMIT %(limit)s"

# Blocked jobs per key (status, dashboard).
COUNT_BY_KEY = "SELECT concurrency_key, count(*) FROM {blocked} GROUP BY concurrency_key"
