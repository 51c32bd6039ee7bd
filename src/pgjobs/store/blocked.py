"""``pgjobs_blocked_executions``: jobs waiting for a concurrency slot.

Jobs leave blocked one at a time per key, in priority order, each through :data:`UNBLOCK_NEXT`:
take the head of the key's line (``FOR UPDATE SKIP LOCKED``: two unblockers of one key never take
the same job, and a locked head is left alone, never passed), try to take a slot for it, and move
it to ready when it got one.
A job enqueued with ``on_conflict="discard"`` (one that was scheduled and found no slot when
due) is finished as discarded instead of waiting.
"""

from __future__ import annotations

from pgjobs.store import jobs as _jobs

# Unblock the next job of %(key)s if a slot is free.  Returns (picked, readied, discarded).
# Served by blocked (concurrency_key, priority, job_id), semaphores' primary key.
UNBLOCK_NEXT = (
    """
WITH head AS (
    -- Lowest priority number first, then FIFO: the order jobs would have run in.
    -- (An ordered key's rows carry priority 0: FIFO.  A rate limit's line, "rate|" keys, is
    -- moved by store.rates, never here.)
    SELECT b.job_id FROM {blocked} b
    WHERE b.concurrency_key = %(key)s AND left(%(key)s, 5) <> 'rate|'
    ORDER BY b.priority, b.job_id
    LIMIT 1
), next AS (
    -- Only the head, and only if nobody holds it: another unblocker (which moves it and goes
    -- on down the line) or an operator's statement.  Never the job behind it, which would
    -- break an ordered key's order if that statement rolled back; a head left blocked with a
    -- free slot is unblocked by the next release or by maintenance.
    SELECT b.job_id, b.queue_name, j.priority, j.concurrency_limit, j.concurrency_duration,
           j.concurrency_on_conflict
    FROM {blocked} b JOIN {jobs} j ON j.id = b.job_id
    WHERE b.job_id = (SELECT job_id FROM head)
    FOR UPDATE OF b SKIP LOCKED
), slot AS (
    INSERT INTO {semaphores} AS s (key, value, expires_at)
    SELECT %(key)s, 1, """
    + _jobs.SLOT_EXPIRY.replace(
        "%(concurrency_on_conflict)s", "next.concurrency_on_conflict"
    ).replace("%(concurrency_duration)s", "next.concurrency_duration")
    + """ FROM next
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
    SELECT n.job_id, n.queue_name, n.priority FROM moved m JOIN next n ON n.job_id = m.job_id
    WHERE EXISTS (SELECT 1 FROM slot)
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
)

# Concurrency maintenance walks every key with blocked jobs, in key order, %(limit)s keys after
# %(after)s per statement (a keyset cursor: a long walk is many short statements, and no key is
# out of reach however many there are), and picks the keys worth an unblock: a job blocked past
# its expiry (a release it may have missed) and a slot free for the key's next job, or a next
# job that discards.  The slot test reads without locking (UNBLOCK_NEXT decides); it spares a
# statement per key whose jobs wait, legitimately, behind running holders.  Returns (the keys
# to unblock, the last key walked, how many were walked: fewer than %(limit)s at the end).
# Served by blocked (concurrency_key, expires_at): a key costs one descent, however many jobs it
# has blocked (a loose index scan); its next job one descent of blocked (concurrency_key,
# priority, job_id); then the jobs and semaphores primary keys.
WALK_EXPIRED = """
WITH RECURSIVE walk (key, oldest, n) AS (
    -- The next key and its oldest expiry: the first index entry after the previous key.
    (SELECT concurrency_key, expires_at, 1 FROM {blocked}
     WHERE concurrency_key > %(after)s ORDER BY concurrency_key, expires_at LIMIT 1)
    UNION ALL
    SELECT next.concurrency_key, next.expires_at, walk.n + 1
    FROM walk CROSS JOIN LATERAL (
        SELECT concurrency_key, expires_at FROM {blocked}
        WHERE concurrency_key > walk.key ORDER BY concurrency_key, expires_at LIMIT 1
    ) next
    WHERE walk.n < %(limit)s
), due AS (
    SELECT w.key FROM walk w
    CROSS JOIN LATERAL (
        -- The key's next job, as UNBLOCK_NEXT picks it (its limit, what it does without a slot).
        SELECT j.concurrency_limit, j.concurrency_on_conflict
        FROM {blocked} b JOIN {jobs} j ON j.id = b.job_id
        WHERE b.concurrency_key = w.key
        ORDER BY b.priority, b.job_id
        LIMIT 1
    ) next
    LEFT JOIN {semaphores} s ON s.key = w.key
    WHERE w.oldest < %(now)s
      AND (s.key IS NULL OR s.value < next.concurrency_limit
           OR next.concurrency_on_conflict = 'discard')
)
SELECT (SELECT array_agg(key) FROM due), (SELECT max(key) FROM walk), (SELECT count(*) FROM walk)
"""

# Keys with blocked jobs, after a lost connection (a reply naming keys to unblock may be lost).
# Served by blocked (concurrency_key, priority, job_id).
KEYS = "SELECT DISTINCT concurrency_key FROM {blocked} LIMIT %(limit)s"

# Blocked jobs per key (status, dashboard).
COUNT_BY_KEY = "SELECT concurrency_key, count(*) FROM {blocked} GROUP BY concurrency_key"

# An operator discards a batch of blocked jobs (pgjobs.operations.waiting): picked after a keyset
# cursor (blocked's primary key) and locked SKIP LOCKED, so a job an unblock is moving to ready is
# left to it; deleted and finished as discarded (unique key released).  A job blocked for a slot
# holds none: its semaphore is untouched.  A job waiting in a rate limit's line ("rate|" key)
# that has a concurrency limit took its slot before it was claimed: the slot is given back.
# Returns (discarded, cursor, keys to unblock).
DISCARD_BLOCKED = (
    _jobs.pick_waiting("blocked")
    + _jobs.DISCARD_GONE
    + """, slots AS (
    SELECT d.concurrency_key AS k, count(*) AS n FROM gone g JOIN discarded d ON d.id = g.job_id
    WHERE left(g.concurrency_key, 5) = 'rate|' AND d.concurrency_key IS NOT NULL
    GROUP BY d.concurrency_key
), released AS (
    UPDATE {semaphores} s SET value = greatest(s.value - r.n, 0), updated_at = %(now)s
    FROM slots r WHERE s.key = r.k
)
SELECT (SELECT count(*) FROM discarded), (SELECT max(job_id) FROM picked),
       (SELECT array_agg(k) FROM slots)
"""
)

# What a blocked job waits for (the job page): its key, the limit, the semaphore's value and
# expiry, the block's expiry, and the jobs of the key running now (claimed: they hold slots).
# Jobs that took a slot and wait in ready hold one too, but finding them would scan jobs
# (concurrency_key is not indexed): the semaphore's value counts them.  Served by blocked's and
# semaphores' primary keys, then the small claimed table joined to jobs by primary key.
WAITING_FOR = """
SELECT b.concurrency_key, j.concurrency_limit, s.value, s.expires_at, b.expires_at,
       ARRAY(SELECT h.job_id::text FROM {claimed} c JOIN {jobs} h ON h.id = c.job_id
             WHERE h.concurrency_key = b.concurrency_key ORDER BY c.job_id LIMIT 20)
FROM {blocked} b JOIN {jobs} j ON j.id = b.job_id
LEFT JOIN {semaphores} s ON s.key = b.concurrency_key
WHERE b.job_id = %(id)s
"""
