"""``pgjobs_semaphores``: one row per concurrency key in use; ``value`` = jobs holding a slot.

Taking a slot is an upsert whose ``DO UPDATE ... WHERE value < limit`` both counts and locks: the
row is locked even when the slot is refused (PostgreSQL locks the conflicting row for
``ON CONFLICT DO UPDATE`` whatever its ``WHERE`` says), so a job blocked for lack of a slot is
committed before any release of that key can run its next statement — and that release then sees
it (:mod:`pgjobs.operations.concurrency` releases in one statement and unblocks in the next).
The upserts are part of the statements that place a job (``jobs.PLACE_LIMITED``,
``blocked.UNBLOCK_NEXT``); the releases part of those that end an execution
(``finished.FINISH_KEYED``, ``failed.FAIL``, ...).
"""

from __future__ import annotations

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

# Concurrency maintenance: forget semaphores no job holds (value 0) that nobody has taken for a
# minute — an ordered key's never expire, and keys taken from job arguments come and go.  A free
# semaphore and no semaphore mean the same: the next job to take a slot inserts it again (an
# upsert waiting on this delete inserts after it).  Returns the keys, to unblock.  A scan of this
# table, one row per key in use.
FORGET_FREE = """
DELETE FROM {semaphores} s
WHERE s.value = 0 AND s.updated_at < %(now)s::timestamptz - interval '1 minute'
RETURNING s.key
"""
