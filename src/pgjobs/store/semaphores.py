"""``pgjobs_semaphores``: one row per concurrency key in use; ``value`` = jobs holding a slot.

Taking a slot is an upsert whose ``DO UPDATE ... WHERE value < limit`` both counts and locks: the
row is locked even when the slot is refused (PostgreSQL locks the conflicting row for
``ON CONFLICT DO UPDATE`` whatever its ``WHERE`` says), so a job blocked for lack of a slot is
committed before any release of that key can run its next statement — and that release then sees
it (:mod:`pgjobs.concurrency` releases in one statement and unblocks in the next).
"""

from __future__ import annotations

# Take a slot of %(key)s for a job with limit %(limit)s; returns a row when it got one.
# Served by the primary key.
ACQUIRE = """
INSERT INTO {semaphores} AS s (key, value, expires_at)
VALUES (%(key)s, 1, %(now)s::timestamptz + %(duration)s::interval)
ON CONFLICT (key) DO UPDATE
    SET value = s.value + 1, expires_at = excluded.expires_at, updated_at = %(now)s
    WHERE s.value < %(limit)s
RETURNING key
"""

# Give back one slot per element of %(keys)s (a key appears once per slot).  Never below zero:
# a semaphore that expired and was re-created may count fewer holders than give slots back.
RELEASE = """
UPDATE {semaphores} s SET value = greatest(s.value - r.n, 0), updated_at = %(now)s
FROM (SELECT k, count(*) AS n FROM unnest(%(keys)s::text[]) AS k GROUP BY k) r
WHERE s.key = r.k
"""

# Concurrency maintenance: forget semaphores not taken for their duration, unless a live
# process is running one of their jobs (its slot is real).  Returns the keys, to unblock.
# Served by semaphores (expires_at); the holder check reads the small claimed table.
EXPIRE = """
DELETE FROM {semaphores} s
WHERE s.expires_at < %(now)s
  AND NOT EXISTS (
    SELECT 1 FROM {claimed} c
    JOIN {jobs} j ON j.id = c.job_id
    JOIN {processes} p ON p.id = c.process_id
    WHERE j.concurrency_key = s.key AND p.last_heartbeat_at >= %(alive_since)s
  )
RETURNING s.key
"""

# The semaphores in use (status, dashboard).
LIST = "SELECT key, value, expires_at FROM {semaphores} ORDER BY key"
