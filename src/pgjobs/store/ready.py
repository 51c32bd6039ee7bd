"""``pgjobs_ready_executions``: claiming jobs, and finishing the previous batch in the same trip.

Claiming moves rows ``ready → claimed`` in ONE statement: pick with ``FOR UPDATE SKIP LOCKED``
(concurrent workers skip each other's rows instead of waiting, and never pick the same row),
delete from ready, insert into claimed, return the jobs.  The same statement first finishes the
worker's jobs that completed since its last trip (delete their claimed rows — only those still
held by this process — and stamp ``finished_at``): one round trip and one commit per batch.
"""

from __future__ import annotations

from pgjobs.store import jobs as _jobs

# The claimed rows of the finished jobs, deleted; every way of finishing a batch starts with it
# (here and in store/finished.py).
DONE = """
done AS (
    -- Only rows this process still holds: a job released or recovered meanwhile is not ours.
    -- By primary key (process_id + 0 keeps the planner off the process index, whose entries
    -- for this process's earlier, dead rows it would walk).
    DELETE FROM {claimed}
    WHERE job_id = ANY(%(finished)s::bigint[]) AND process_id + 0 = %(process_id)s
    RETURNING job_id
)"""

_FINISH = (
    DONE
    + """, finish AS (
    UPDATE {jobs} SET finished_at = %(now)s, executions = executions + 1
    WHERE id IN (SELECT job_id FROM done)
)"""
)

# The claiming process's own row, locked FOR KEY SHARE: a process claims only while it is
# registered, and whoever deletes its row (a pruner, its supervisor, its own deregistration)
# locks the row first, so it waits for this claim to commit and then sees what it claimed.
# KEY SHARE does not conflict with the heartbeat's UPDATE.  MATERIALIZED: the lock is taken once,
# by the one-time filter ``EXISTS (SELECT 1 FROM me)``, before ready is scanned.
_ME = """, me AS MATERIALIZED (
    SELECT id FROM {processes} WHERE id = %(process_id)s FOR KEY SHARE
)"""

_CLAIMED = """
moved AS (
    -- By primary key, one probe per picked id: a join here may be planned as a hash join over
    -- a sequential scan of ready, which costs as much as the backlog is deep.
    DELETE FROM {ready} WHERE job_id = ANY(ARRAY(SELECT job_id FROM picked))
    RETURNING job_id
), claimed AS (
    INSERT INTO {claimed} (job_id, process_id)
    SELECT job_id, %(process_id)s FROM moved
    RETURNING job_id
)
-- arguments as text: decoded by the job's thread, not by the worker's claim loop.
SELECT j.id, j.job_id, j.class_name, j.arguments::text, j.queue_name, j.priority, j.executions,
       j.created_at, j.scheduled_at, j.concurrency_key, j.unique_key, j.interruptions,
       j.cancel_requested_at IS NOT NULL,  -- asked to stop while it waited: cancelled, not run
       j.rate_key,  -- a rate-limited job takes a start token before it runs (store/rates.py)
       j.batch_id  -- a job of a batch or workflow is finished by finished.FINISH_KEYED
FROM claimed c JOIN {jobs} j ON j.id = c.job_id
ORDER BY j.priority, j.id  -- run in the order they were picked
"""

# Claim from every queue in global priority order; served by ready (priority, job_id).
# ORDER BY priority, job_id: lower priority number first, then FIFO.  The scan starts at the
# worker's floor (pgjobs.processes.floors), past the dead entries its earlier claims left.
CLAIM_ALL = (
    "WITH"
    + _FINISH
    + _ME
    + """, picked AS (
    SELECT job_id FROM {ready}
    WHERE EXISTS (SELECT 1 FROM me) AND (priority, job_id) >= (%(floor_priority)s, %(floor_id)s)
    ORDER BY priority, job_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),"""
    + _CLAIMED
)

# Claim from one queue; served by ready (queue_name, priority, job_id).
CLAIM_QUEUE = (
    "WITH"
    + _FINISH
    + _ME
    + """, picked AS (
    SELECT job_id FROM {ready}
    WHERE EXISTS (SELECT 1 FROM me) AND queue_name = %(queue)s
    AND (priority, job_id) >= (%(floor_priority)s, %(floor_id)s)
    ORDER BY priority, job_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),"""
    + _CLAIMED
)

# Claim from a set of queues in global priority order (``*`` with paused queues): the best
# `limit` rows of each queue through its (queue_name, priority, job_id) index, merged.  This never
# walks past a deep paused queue, which a filter on the (priority, job_id) index would.
CLAIM_QUEUES_MERGED = (
    "WITH"
    + _FINISH
    + _ME
    + """, picked AS (
    SELECT best.job_id FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT job_id, priority FROM {ready}
        WHERE EXISTS (SELECT 1 FROM me) AND queue_name = q.name
        ORDER BY priority, job_id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS best
    ORDER BY best.priority, best.job_id
    LIMIT %(limit)s
),"""
    + _CLAIMED
)

# Finish without claiming (a stopping worker, or one with no idle thread).
FINISH_ONLY = "WITH" + _FINISH + "\nSELECT count(*) FROM done"

# Distinct queue names with ready jobs: a loose index scan over (queue_name, priority, job_id),
# one index probe per queue instead of a DISTINCT over the whole table.
READY_QUEUES = """
WITH RECURSIVE q AS (
    (SELECT queue_name FROM {ready} ORDER BY queue_name LIMIT 1)
    UNION ALL
    SELECT (SELECT r.queue_name FROM {ready} r WHERE r.queue_name > q.queue_name
            ORDER BY r.queue_name LIMIT 1)
    FROM q WHERE q.queue_name IS NOT NULL
)
SELECT queue_name FROM q WHERE queue_name IS NOT NULL
"""

# Size and latency (age of the oldest ready job) of one queue.
QUEUE_STATS = """
SELECT count(*), min(created_at) FROM {ready} WHERE queue_name = %(queue)s
"""

# Whether any of these jobs still waits in ready (a busy worker that gave suspects back waits
# until one of them was taken).  Served by ready's primary key.
ANY_READY = "SELECT 1 FROM {ready} WHERE job_id = ANY(%(ids)s::bigint[]) LIMIT 1"

# An operator discards a batch of ready jobs (pgjobs.operations.waiting): picked after a keyset
# cursor (ready's primary key) and locked SKIP LOCKED, so a job a worker is claiming is left to the
# worker; deleted, finished as discarded (unique key released), and the slot of a job of a
# limited class given back (a ready job of a limited class holds one; the caller unblocks the
# keys returned).  Returns (discarded, cursor, keys to unblock).
DISCARD_READY = (
    _jobs.pick_waiting("ready")
    + _jobs.DISCARD_GONE
    + """, released AS (
    UPDATE {semaphores} s SET value = greatest(s.value - r.n, 0), updated_at = %(now)s
    FROM (SELECT concurrency_key AS k, count(*) AS n FROM discarded
          WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key) r
    WHERE s.key = r.k
)
SELECT (SELECT count(*) FROM discarded), (SELECT max(job_id) FROM picked),
       (SELECT array_agg(DISTINCT concurrency_key) FROM discarded)
"""
)
