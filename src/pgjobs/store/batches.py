"""``pgjobs_batches``, ``pgjobs_held_executions``, ``pgjobs_job_dependencies``: batches and
workflows.

Writing one (:mod:`pgjobs.workflows.write`) is a handful of statements in one transaction: the
batch rows, the jobs COPYed with their ``batch_id`` (and their ready, scheduled or held rows, and
their dependencies), then the counts.  Everything after that — counting each job's end, writing
the callback jobs, releasing or cancelling dependents — is done by the triggers of migration
0007, in the statement that ends each job; nothing here runs on a worker's hot path.
"""

from __future__ import annotations

from pgjobs.store import jobs as _jobs

# A new batch or workflow; its counts are added once its jobs are written (ADD_COUNTS).
INSERT = """
INSERT INTO {batches} (batch_id, kind, parent_id, description, properties, on_failure, callbacks)
VALUES (%(batch_id)s, %(kind)s, %(parent_id)s, %(description)s, %(properties)s::jsonb,
        %(on_failure)s, %(callbacks)s::jsonb)
RETURNING id
"""

# Lock a batch that jobs are added to, if a job of it is pending (not ended: the running job
# that adds them, say — also one retried after the batch finished): its row lock orders the
# adding against the end of its last job (which would otherwise write on_finish before the new
# jobs are counted).  By the public id, or by the row id (from one of its running jobs).
OPEN = """
SELECT id, kind FROM {batches}
WHERE (batch_id = %(batch_id)s OR id = %(id)s) AND pending > 0
FOR UPDATE
"""

# Count jobs (and nested batches) added to a batch.
ADD_COUNTS = """
UPDATE {batches} SET total = total + %(n)s, pending = pending + %(n)s WHERE id = %(id)s
"""

# A batch written with nothing in it: its callbacks are due at once (what a job's end would do).
SETTLE = "SELECT {batch_note}(%(id)s, 'succeeded', 0)"

# Jobs of a batch written one by one (a unique key) join it once all are written, those still
# waiting (not replaced by a later one of the same key); returns those that joined.
JOIN = """
UPDATE {jobs} SET batch_id = %(batch)s
WHERE id = ANY(%(ids)s::bigint[]) AND finished_at IS NULL
RETURNING id
"""

# The jobs of a batch or workflow, with every column a held job needs when it is released
# (its keys take their slot or start token then).
COPY_JOBS = """
COPY {jobs} (id, job_id, queue_name, class_name, arguments, priority, concurrency_key,
             concurrency_limit, concurrency_duration, concurrency_on_conflict, scheduled_at,
             rate_key, rate_limit, rate_period, batch_id) FROM STDIN
"""
# A job of a batch that takes a concurrency slot or is due later: scheduled, with its key.
COPY_SCHEDULED = """
COPY {scheduled} (job_id, queue_name, priority, scheduled_at, concurrency_key) FROM STDIN
"""
COPY_HELD = "COPY {held} (job_id, queue_name, priority, pending) FROM STDIN"
COPY_DEPENDENCIES = "COPY {dependencies} (job_id, depends_on, position) FROM STDIN"

# -- reading -----------------------------------------------------------------------------------

_COLUMNS = """b.id, b.batch_id, b.kind, p.batch_id, b.description, b.properties, b.on_failure,
       b.total, b.pending, b.succeeded, b.failed, b.discarded, b.cancelled, b.created_at,
       b.finished_at, b.succeeded_at, b.discarded_at, b.callbacks"""

# One batch by its public id.
GET = (
    "SELECT "
    + _COLUMNS
    + """
FROM {batches} b LEFT JOIN {batches} p ON p.id = b.parent_id
WHERE b.batch_id = %(batch_id)s
"""
)

# The newest batches first, after a keyset cursor (the primary key); kind and state filters
# (NULL: any).  state: running (jobs pending), finished, succeeded, failed (finished, not all
# succeeded).
LIST = (
    "SELECT "
    + _COLUMNS
    + """
FROM {batches} b LEFT JOIN {batches} p ON p.id = b.parent_id
WHERE b.id < %(before)s
  AND (%(kind)s::text IS NULL OR b.kind = %(kind)s)
  AND (%(state)s::text IS NULL
       OR (%(state)s = 'running' AND b.finished_at IS NULL)
       OR (%(state)s = 'finished' AND b.finished_at IS NOT NULL)
       OR (%(state)s = 'succeeded' AND b.succeeded_at IS NOT NULL)
       OR (%(state)s = 'failed' AND b.finished_at IS NOT NULL AND b.succeeded_at IS NULL))
ORDER BY b.id DESC
LIMIT %(limit)s
"""
)

# A batch's jobs in the order they were written, with their state (which table holds them) and
# their dependencies' public ids; served by jobs (batch_id, id) and each table's primary key.
JOBS = (
    """
SELECT j.id, j.job_id, j.class_name, j.queue_name, j.priority, j.executions, j.created_at,
       j.finished_at,
       """
    + _jobs.state_case()
    + """,
       ARRAY(SELECT d.job_id FROM {dependencies} x JOIN {jobs} d ON d.id = x.depends_on
             WHERE x.job_id = j.id ORDER BY x.position)
FROM {jobs} j
WHERE j.batch_id = %(id)s AND j.id > %(after)s
ORDER BY j.id
LIMIT %(limit)s
"""
)

# The nested batches of a batch.
CHILDREN = "SELECT batch_id FROM {batches} WHERE parent_id = %(id)s ORDER BY id"

# A running job's dependencies, in after=[...] order: public id, state, and result (JSON text);
# one whose row is gone (cleared, or a failed one discarded before this change) reads "cleared".
DEPENDENCIES = """
SELECT j.job_id,
       CASE WHEN j.id IS NULL THEN 'cleared'
            WHEN j.cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN j.discarded_at IS NOT NULL THEN 'discarded'
            WHEN j.finished_at IS NOT NULL THEN 'finished'
            WHEN EXISTS (SELECT 1 FROM {failed} WHERE job_id = j.id) THEN 'failed'
            ELSE 'pending' END,
       j.result::text
FROM {dependencies} x LEFT JOIN {jobs} j ON j.id = x.depends_on
WHERE x.job_id = (SELECT id FROM {jobs} WHERE job_id = %(job_id)s)
ORDER BY x.position
"""

# Before CANCEL_HELD, in its transaction: lock the held job's batch row, which a finishing
# worker's trigger locks before the held rows (the other order could deadlock).
LOCK_HELD_BATCH = """
SELECT b.id FROM {batches} b
WHERE b.id = (SELECT j.batch_id FROM {jobs} j JOIN {held} h ON h.job_id = j.id
              WHERE j.job_id = %(job_id)s)
FOR UPDATE OF b
"""

# Cancel a held job (pgjobs.cancel): its held row deleted and the job finished as cancelled (the
# trigger counts it and cancels whatever waits on it, by the workflow's policy).  Returns its id.
CANCEL_HELD = """
WITH gone AS (
    DELETE FROM {held} WHERE job_id = (SELECT id FROM {jobs} WHERE job_id = %(job_id)s)
    RETURNING job_id
)
UPDATE {jobs} j SET finished_at = %(now)s, cancelled_at = %(now)s,
                    cancel_requested_at = coalesce(j.cancel_requested_at, %(now)s)
FROM gone g WHERE j.id = g.job_id
RETURNING j.id
"""

# Retention (clear_finished, after the jobs): batches that finished before the cutoff and have
# neither a job nor a nested batch left (failed jobs stay, and keep their batch).
CLEAR = """
DELETE FROM {batches} b
WHERE b.finished_at < %(cutoff)s
  AND NOT EXISTS (SELECT 1 FROM {jobs} j WHERE j.batch_id = b.id)
  AND NOT EXISTS (SELECT 1 FROM {batches} c WHERE c.parent_id = b.id)
"""
