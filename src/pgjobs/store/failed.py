"""``pgjobs_failed_executions`` and ``pgjobs_job_errors``: jobs that failed, and every error.

Every way an execution can end with an error is ONE statement: the claimed row (only if this
process still holds it) is deleted, the attempt counted, the error appended to the job's history
(``pgjobs_job_errors``) and the job moved on — to ``failed`` (:data:`FAIL`), back to ``ready`` or
``scheduled`` (:data:`RETRY`), or finished as discarded (:data:`DISCARD`).

Operators' statements (:mod:`pgjobs.operations.failed`) work in batches: each picks at most
``limit`` failed rows after a keyset cursor, locked ``SKIP LOCKED``, and moves or deletes them in
one short transaction, so retrying or discarding 100k failed jobs never holds long locks.
"""

from __future__ import annotations

from pgjobs.store import jobs as _jobs

# Give back the slot of a job that held one (the worker then unblocks its key).
_RELEASE_SLOT = """
, released AS (
    UPDATE {semaphores} s SET value = greatest(s.value - 1, 0), updated_at = %(now)s
    FROM bumped b WHERE s.key = b.concurrency_key
)"""


def held_on_failure(alias: str = "") -> str:
    """The key whose slot a job (of table alias ``alias``) gives back when it fails for good,
    as ``concurrency_key``: none for a job of an ordered key that holds it until it is retried
    or discarded (pgjobs.ordered)."""
    a = f"{alias}." if alias else ""
    return (
        f"CASE WHEN {a}concurrency_on_conflict = 'ordered' THEN NULL"
        f" ELSE {a}concurrency_key END AS concurrency_key"
    )


HELD_ON_FAILURE = held_on_failure()

# The key whose slot a job gives back when it waits to run again (retried later, snoozed): none
# for a job of an ordered key, which keeps its place — the key's next job waits for it.
HELD_WHILE_WAITING = """CASE WHEN left(concurrency_on_conflict, 7) = 'ordered' THEN NULL
                   ELSE concurrency_key END AS concurrency_key"""

# A final failure: to failed, unique key released (a period's stays), slot given back (except by
# an ordered key's job, which holds it).  Returns (id, concurrency key to unblock) when this
# process still held the job.
FAIL = (
    """
WITH done AS (
    DELETE FROM {claimed} WHERE job_id = %(id)s AND process_id = %(process_id)s
    RETURNING job_id
), bumped AS (
    UPDATE {jobs} SET executions = executions + 1, unique_key = """
    + _jobs.RELEASE_UNIQUE
    + """
    WHERE id IN (SELECT job_id FROM done)
    RETURNING id, job_id, executions, batch_id, """
    + HELD_ON_FAILURE
    + """
), history AS (
    INSERT INTO {job_errors} (job_id, attempt, exception_class, message, backtrace, process_id,
                              hostname, pid)
    SELECT id, executions, %(exception_class)s, %(message)s, %(backtrace)s, %(process_id)s,
           %(hostname)s, %(pid)s FROM bumped
), failed AS (
    -- batch_id: a trigger counts the failure in the job's batch (pgjobs.workflows)
    INSERT INTO {failed} (job_id, exception_class, message, backtrace, attempt, process_id,
                          hostname, pid, batch_id)
    SELECT id, %(exception_class)s, %(message)s, %(backtrace)s, executions, %(process_id)s,
           %(hostname)s, %(pid)s, batch_id FROM bumped
)"""
    + _RELEASE_SLOT
    + """
SELECT id, concurrency_key, pg_notify(%(done_channel)s, job_id::text) FROM bumped
"""
)

# retry_on: the same job goes back to ready (no wait: scheduled_at NULL, and its queue is
# notified) or to scheduled, with the attempt counted, the error in its history and maybe a new
# queue/priority.  Returns nothing when this process no longer holds the job.
RETRY = (
    """
WITH done AS (
    DELETE FROM {claimed} WHERE job_id = %(id)s AND process_id = %(process_id)s
    RETURNING job_id
), bumped AS (
    UPDATE {jobs} SET executions = executions + 1,
                      queue_name = COALESCE(%(queue)s, queue_name),
                      priority = COALESCE(%(priority)s, priority),
                      scheduled_at = COALESCE(%(scheduled_at)s, scheduled_at)
    WHERE id IN (SELECT job_id FROM done)
    RETURNING id, executions, queue_name, priority, """
    + HELD_WHILE_WAITING
    + """
), history AS (
    INSERT INTO {job_errors} (job_id, attempt, exception_class, message, backtrace, process_id,
                              hostname, pid)
    SELECT id, executions, %(exception_class)s, %(message)s, %(backtrace)s, %(process_id)s,
           %(hostname)s, %(pid)s FROM bumped
), ready AS (
    -- Retried at once: it keeps its concurrency slot.
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT id, queue_name, priority FROM bumped WHERE %(scheduled_at)s::timestamptz IS NULL
), scheduled AS (
    -- Retried later: it gives its slot back and takes one again when due (an ordered key's
    -- job keeps its slot: concurrency_key is NULL here, and it goes straight to ready).
    INSERT INTO {scheduled} (job_id, queue_name, priority, scheduled_at, concurrency_key)
    SELECT id, queue_name, priority, %(scheduled_at)s, concurrency_key FROM bumped
    WHERE %(scheduled_at)s::timestamptz IS NOT NULL
), released AS (
    UPDATE {semaphores} s SET value = greatest(s.value - 1, 0), updated_at = %(now)s
    FROM bumped b
    WHERE s.key = b.concurrency_key AND %(scheduled_at)s::timestamptz IS NOT NULL
)
SELECT id, CASE WHEN %(scheduled_at)s::timestamptz IS NOT NULL THEN concurrency_key END,
       CASE WHEN %(scheduled_at)s::timestamptz IS NULL THEN pg_notify(%(channel)s, queue_name) END
FROM bumped
"""
)

# discard_on: the job is finished as discarded, attempt counted, error kept in its history.
# FAIL and DISCARD wake the job's result waiters (pgjobs.store.control).
DISCARD = (
    """
WITH done AS (
    DELETE FROM {claimed} WHERE job_id = %(id)s AND process_id = %(process_id)s
    RETURNING job_id
), bumped AS (
    UPDATE {jobs} SET executions = executions + 1, finished_at = %(now)s, discarded_at = %(now)s,
                      unique_key = """
    + _jobs.RELEASE_UNIQUE
    + """
    WHERE id IN (SELECT job_id FROM done)
    RETURNING id, job_id, executions, concurrency_key
), history AS (
    INSERT INTO {job_errors} (job_id, attempt, exception_class, message, backtrace, process_id,
                              hostname, pid)
    SELECT id, executions, %(exception_class)s, %(message)s, %(backtrace)s, %(process_id)s,
           %(hostname)s, %(pid)s FROM bumped
)"""
    + _RELEASE_SLOT
    + """
SELECT id, concurrency_key, pg_notify(%(done_channel)s, job_id::text) FROM bumped
"""
)

# discard_on with preserve_finished_jobs: false: a discarded job is deleted like a finished one
# (its history with it; after_discard is the place to keep what matters) — except the holder of
# a period's unique key whose window is still open (deleting it would release the key) and a job
# of a batch or workflow (store/jobs.py KEPT_AT_END): those are discarded as with DISCARD and
# kept until clear_finished.
DISCARD_DELETE = (
    """
WITH done AS (
    DELETE FROM {claimed} WHERE job_id = %(id)s AND process_id = %(process_id)s
    RETURNING job_id
), kept AS (
    UPDATE {jobs} SET executions = executions + 1, finished_at = %(now)s, discarded_at = %(now)s,
                      unique_key = """
    + _jobs.RELEASE_UNIQUE
    + """
    WHERE id IN (SELECT job_id FROM done) AND """
    + _jobs.KEPT_AT_END
    + """
    RETURNING id, executions, concurrency_key
), kept_history AS (
    INSERT INTO {job_errors} (job_id, attempt, exception_class, message, backtrace, process_id,
                              hostname, pid)
    SELECT id, executions, %(exception_class)s, %(message)s, %(backtrace)s, %(process_id)s,
           %(hostname)s, %(pid)s FROM kept
), deleted AS (
    DELETE FROM {jobs} WHERE id IN (SELECT job_id FROM done) AND NOT """
    + _jobs.KEPT_AT_END
    + """
    RETURNING id, concurrency_key
), history AS (
    DELETE FROM {job_errors} WHERE job_id IN (SELECT id FROM deleted)
), bumped AS (
    SELECT id, concurrency_key FROM kept UNION ALL SELECT id, concurrency_key FROM deleted
)"""
    + _RELEASE_SLOT
    + """
SELECT id, concurrency_key FROM bumped
"""
)

COUNT = "SELECT count(*) FROM {failed}"

# The operators' filter on failed jobs (every parameter NULL: no filter), on failed rows ``f`` and
# their jobs ``j``; shared with the dashboard.  An error matches its recorded ``module.QualName``
# or just its ``QualName``; text is an ILIKE pattern over the arguments.
FILTER = """
    AND (%(class_name)s::text IS NULL OR j.class_name = %(class_name)s)
    AND (%(queue)s::text IS NULL OR j.queue_name = %(queue)s)
    AND (%(error)s::text IS NULL OR f.exception_class = %(error)s
         OR right(f.exception_class, length(%(error)s) + 1) = '.' || %(error)s)
    AND (%(failed_before)s::timestamptz IS NULL OR f.created_at < %(failed_before)s)
    AND (%(failed_after)s::timestamptz IS NULL OR f.created_at >= %(failed_after)s)
    AND (%(job_ids)s::uuid[] IS NULL OR j.job_id = ANY(%(job_ids)s::uuid[]))
    AND (%(text)s::text IS NULL OR j.arguments::text ILIKE %(text)s)
"""

_COLUMNS = """f.job_id, j.job_id, j.class_name, j.queue_name, j.priority, j.arguments,
       j.executions, j.scheduled_at, j.created_at, f.exception_class, f.message, f.backtrace,
       f.attempt, f.process_id, f.hostname, f.pid, f.created_at"""

# A page of failed jobs after a keyset cursor (the internal id); served by failed's primary key.
LIST = (
    "SELECT "
    + _COLUMNS
    + """
FROM {failed} f JOIN {jobs} j ON j.id = f.job_id
WHERE f.job_id > %(after_id)s"""
    + FILTER
    + """
ORDER BY f.job_id
LIMIT %(limit)s
"""
)

# How many failed jobs match a filter.
COUNT_FILTERED = (
    """
SELECT count(*) FROM {failed} f JOIN {jobs} j ON j.id = f.job_id
WHERE true"""
    + FILTER
)

# A job's error history, oldest first; served by job_errors (job_id, id).
ERRORS = """
SELECT attempt, exception_class, message, backtrace, process_id, hostname, pid, created_at
FROM {job_errors} WHERE job_id = %(id)s ORDER BY id
"""

# The next batch of matching failed rows, locked (others' locked rows are skipped).
_PICK = (
    """
WITH picked AS (
    SELECT f.job_id FROM {failed} f JOIN {jobs} j ON j.id = f.job_id
    WHERE f.job_id > %(after_id)s"""
    + FILTER
    + """
    ORDER BY f.job_id
    LIMIT %(limit)s
    FOR UPDATE OF f SKIP LOCKED
), gone AS (
    DELETE FROM {failed} f USING picked p WHERE f.job_id = p.job_id RETURNING f.job_id
)"""
)

# Retry a batch of failed jobs: back to ready (or scheduled, for a future scheduled_at) as if
# newly enqueued, executions kept, interruptions reset.  A job of a limited class goes to blocked
# to take a slot (the caller unblocks the keys returned).  Its unique key, released when it
# failed, is not taken again.  Returns (retried, cursor, notify, keys to unblock).
RETRY_FAILED = (
    _PICK
    + """, reset AS (
    -- A cancel request made before it failed is dropped: retrying is the operator's word now.
    UPDATE {jobs} j SET interruptions = 0, cancel_requested_at = NULL
    FROM gone g WHERE j.id = g.job_id
    RETURNING j.id, j.queue_name, j.scheduled_at, j.concurrency_duration,
              -- an ordered key's job that failed holding its slot has it still: not blocked
              """
    + held_on_failure("j")
    + """,
              j.priority AS job_priority,
              """
    + _jobs.line_priority("j.concurrency_on_conflict", "j.priority")
    + """ AS priority
), ready AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT id, queue_name, job_priority FROM reset
    WHERE (scheduled_at IS NULL OR scheduled_at <= %(now)s) AND concurrency_key IS NULL
    RETURNING job_id
), blocked AS (
    INSERT INTO {blocked} (job_id, queue_name, priority, concurrency_key, expires_at)
    SELECT id, queue_name, priority, concurrency_key, %(now)s::timestamptz + concurrency_duration
    FROM reset
    WHERE (scheduled_at IS NULL OR scheduled_at <= %(now)s) AND concurrency_key IS NOT NULL
    RETURNING concurrency_key
), scheduled AS (
    INSERT INTO {scheduled} (job_id, queue_name, priority, scheduled_at, concurrency_key)
    SELECT id, queue_name, job_priority, scheduled_at, concurrency_key FROM reset
    WHERE scheduled_at > %(now)s
)
SELECT (SELECT count(*) FROM reset), (SELECT max(job_id) FROM picked),
       (SELECT CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '*') END FROM ready),
       (SELECT array_agg(DISTINCT concurrency_key) FROM blocked)
"""
)

# Discard a batch of failed jobs: delete the job, its failed row and its error history (a job of a
# batch or workflow is stamped discarded and kept instead, with its history).  A job of an
# ordered key that held its slot gives it back (the caller unblocks the keys returned).
# Returns (discarded, cursor, keys to unblock).
DISCARD_FAILED = (
    _PICK
    + """, history AS (
    DELETE FROM {job_errors} e USING gone g, {jobs} j
    WHERE e.job_id = g.job_id AND j.id = g.job_id AND j.batch_id IS NULL
), deleted AS (
    DELETE FROM {jobs} j USING gone g WHERE j.id = g.job_id AND j.batch_id IS NULL
    RETURNING j.id, j.concurrency_key, j.concurrency_on_conflict
), kept AS (
    -- A job of a batch or workflow is kept, discarded (its dependents may read its state; the
    -- trigger counts it), until clear_finished.
    UPDATE {jobs} j SET finished_at = %(now)s, discarded_at = %(now)s
    FROM gone g WHERE j.id = g.job_id AND j.batch_id IS NOT NULL
    RETURNING j.id, j.concurrency_key, j.concurrency_on_conflict
), held AS (
    SELECT concurrency_key AS k, count(*) AS n
    FROM (SELECT * FROM deleted UNION ALL SELECT * FROM kept) ended
    WHERE concurrency_on_conflict = 'ordered' GROUP BY concurrency_key
), released AS (
    UPDATE {semaphores} s SET value = greatest(s.value - h.n, 0), updated_at = %(now)s
    FROM held h WHERE s.key = h.k
)
SELECT (SELECT count(*) FROM gone), (SELECT max(job_id) FROM picked),
       (SELECT array_agg(k) FROM held)
"""
)
