"""Job control on ``pgjobs_jobs``: results, progress, checkpoints, cancellation and snoozing.

The state lives in columns of the job's row (``result``, ``progress``, ``checkpoint``,
``cancel_requested_at``, ``cancelled_at``), NULL for jobs that use none of it.  What a worker
writes for a job it runs is guarded like every ending: only while this process still holds the
job's claimed row, so a process that lost the job (recovered elsewhere after a stall) cannot
overwrite what the job's new run writes.  A job's ending notifies the *done* channel with its
public id (:func:`pgjobs.store.jobs.done_channel`) when someone may be waiting for it: a result
stored by :data:`FINISH_RESULTS`, a failure or discard by a worker (``failed.FAIL``,
``failed.DISCARD``), a cancellation.  The other endings send nothing — a job finished without a
result by the claim statement, one finished with a result by ``finished.FINISH_KEYED`` (a slot or
unique key to give back), a recovery that fails a job — and their waiters notice them by
polling.
"""

from __future__ import annotations

from pgjobs.store import blocked as _blocked
from pgjobs.store import failed as _failed
from pgjobs.store import jobs as _jobs
from pgjobs.store import ready as _ready
from pgjobs.store import scheduled as _scheduled

# The key of what is stored in place of a result that could not be stored (its error message).
RESULT_ERROR = "__pgjobs_result_error__"

# The payload on the workers' channel that asks them to look for cancel requests among the jobs
# they run now (no queue name contains the unit separator).
CANCEL_PAYLOAD = "\x1fcancel"

# This process holds the job: its claimed row, locked FOR SHARE so that a recovery deleting it
# (uncommitted yet) is waited for and then seen, rather than written past.
_HELD = """EXISTS (SELECT 1 FROM {claimed} c
            WHERE c.job_id = %(id)s AND c.process_id = %(process_id)s FOR SHARE)"""

# Finish jobs that returned a value (preserve_finished_jobs: true, no slot or unique key to give
# back): their claimed rows deleted (only those this process still holds), stamped finished with
# the result stored, and each job's waiters woken.  By primary key, like the claim's own finish.
FINISH_RESULTS = (
    "WITH"
    + _ready.DONE
    + """, finish AS (
    UPDATE {jobs} j SET finished_at = %(now)s, executions = j.executions + 1, result = r.value
    FROM unnest(%(finished)s::bigint[], %(results)s::json[]) AS r(id, value)
    WHERE j.id = r.id AND j.id IN (SELECT job_id FROM done)
    RETURNING j.job_id
)
SELECT count(pg_notify(%(done_channel)s, job_id::text)) FROM finish
"""
)

# The results of jobs finished by another statement (a slot or a unique key to give back:
# finished.FINISH_KEYED): stored first, while this process still holds them.
STORE_RESULTS = """
UPDATE {jobs} j SET result = r.value
FROM unnest(%(ids)s::bigint[], %(results)s::json[]) AS r(id, value)
WHERE j.id = r.id AND EXISTS (
    SELECT 1 FROM {claimed} c WHERE c.job_id = r.id AND c.process_id = %(process_id)s FOR SHARE)
"""

# A running job's progress report; returns its id when this process still holds it.
PROGRESS = (
    """
UPDATE {jobs} SET progress = %(progress)s::jsonb
WHERE id = %(id)s AND """
    + _HELD
    + """
RETURNING id
"""
)

# A running job's resumable steps: the completed steps and the current step's cursor.
CHECKPOINT = (
    """
UPDATE {jobs} SET checkpoint = %(checkpoint)s::jsonb
WHERE id = %(id)s AND """
    + _HELD
    + """
RETURNING id
"""
)

LOAD_CHECKPOINT = "SELECT checkpoint::text FROM {jobs} WHERE id = %(id)s"

# Which of the jobs a worker runs have a cancel request (checked about twice a second while it
# runs jobs, and at once on a CANCEL_PAYLOAD notification).  By primary key.
CANCEL_REQUESTED = """
SELECT id FROM {jobs} WHERE id = ANY(%(ids)s::bigint[]) AND cancel_requested_at IS NOT NULL
"""

# The shared part of a running job's ending without an error (cancelled, snoozed): its claimed
# row, only if this process still holds it.
_DONE_ONE = """
WITH done AS (
    DELETE FROM {claimed} WHERE job_id = %(id)s AND process_id = %(process_id)s
    RETURNING job_id
)"""

_RELEASE_SLOT = """, released AS (
    UPDATE {semaphores} s SET value = greatest(s.value - 1, 0), updated_at = %(now)s
    FROM bumped b WHERE s.key = b.concurrency_key
)"""

# A claimed job ended by its cancellation (it raised JobCancelled, or its task was cancelled;
# or it was asked to stop before it was claimed, and did not run: %(ran)s false): finished as
# cancelled, the attempt counted if it ran, unique key released (a period's stays) and slot
# given back; its waiters are woken.  Returns (id, concurrency key).
CANCEL_RUNNING = (
    _DONE_ONE
    + """, bumped AS (
    UPDATE {jobs} SET executions = executions + %(ran)s::int, finished_at = %(now)s,
                      cancelled_at = %(now)s,
                      cancel_requested_at = coalesce(cancel_requested_at, %(now)s),
                      unique_key = """
    + _jobs.RELEASE_UNIQUE
    + """
    WHERE id IN (SELECT job_id FROM done)
    RETURNING id, job_id, concurrency_key
)"""
    + _RELEASE_SLOT
    + """
SELECT id, concurrency_key, pg_notify(%(done_channel)s, job_id::text) FROM bumped
"""
)

# Snooze: the job goes back to scheduled without counting an attempt (executions unchanged, no
# error recorded).  It gives its slot back and takes one again when due, like a retry that
# waits; its unique key stays held.  Returns (id, concurrency key).
SNOOZE = (
    _DONE_ONE
    + """, bumped AS (
    UPDATE {jobs} SET scheduled_at = %(scheduled_at)s
    WHERE id IN (SELECT job_id FROM done)
    RETURNING id, queue_name, priority, """
    + _failed.HELD_WHILE_WAITING
    + """
), scheduled AS (
    INSERT INTO {scheduled} (job_id, queue_name, priority, scheduled_at, concurrency_key)
    SELECT id, queue_name, priority, %(scheduled_at)s, concurrency_key FROM bumped
)"""
    + _RELEASE_SLOT
    + """
SELECT id, concurrency_key FROM bumped
"""
)

# -- operators: cancelling ---------------------------------------------------------------------

# Finish the jobs of ``gone`` as cancelled: DISCARD_GONE with cancelled_at instead of
# discarded_at (the CTE keeps its name, ``discarded``, for the statements built on it).
CANCEL_GONE = _jobs.DISCARD_GONE.replace(
    "discarded_at = %(now)s,", "cancelled_at = %(now)s,\n        cancel_requested_at = %(now)s,"
).replace("RETURNING j.id, j.concurrency_key", "RETURNING j.id, j.concurrency_key, j.job_id")
assert CANCEL_GONE != _jobs.DISCARD_GONE  # guards an edit of DISCARD_GONE


def _cancelling(statement: str) -> str:
    """A discard statement that cancels instead, and wakes each job's result waiters."""
    count = "(SELECT count(*) FROM discarded)"
    assert _jobs.DISCARD_GONE in statement and count in statement  # guards an edit of them
    woken = "(SELECT count(pg_notify(%(done_channel)s, job_id::text)) FROM discarded)"
    return statement.replace(_jobs.DISCARD_GONE, CANCEL_GONE).replace(count, woken)


# Cancel a batch of waiting jobs (WaitingJobs.cancel_all, pgjobs.cancel): the discard statements
# of each execution table, finishing the jobs as cancelled.  Picked SKIP LOCKED: a job a worker
# is claiming right now is left to it (pgjobs.cancel then asks it to stop; a bulk cancel does
# not: that job runs, as with a bulk discard).
CANCEL_READY = _cancelling(_ready.DISCARD_READY)
CANCEL_SCHEDULED = _cancelling(_scheduled.DISCARD_SCHEDULED)
CANCEL_BLOCKED = _cancelling(_blocked.DISCARD_BLOCKED)

# Ask a job to stop, wherever it is: a running job's worker sees the request within about a
# second (the notification wakes the workers at once), and a worker that claims a job with a
# request cancels it without running it.  Nothing for a job that has ended (finished, failed,
# cancelled).  Returns (id, notify) when asked.
REQUEST_CANCEL = """
WITH asked AS (
    UPDATE {jobs} j SET cancel_requested_at = coalesce(j.cancel_requested_at, %(now)s)
    WHERE j.job_id = %(job_id)s AND j.finished_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM {failed} f WHERE f.job_id = j.id)
    RETURNING j.id
)
SELECT id, pg_notify(%(channel)s, %(payload)s) FROM asked
"""

# Ask a batch of running jobs to stop (the dashboard's bulk action on in-progress jobs): the
# next matching claimed rows after a keyset cursor; jobs asked already are not counted again.
# Returns (asked, cursor); the caller notifies the workers once.
REQUEST_CANCEL_RUNNING = (
    """
WITH picked AS (
    SELECT c.job_id FROM {claimed} c JOIN {jobs} j ON j.id = c.job_id
    WHERE c.job_id > %(after_id)s"""
    + _jobs.WAITING_FILTER
    + """
    ORDER BY c.job_id
    LIMIT %(limit)s
), asked AS (
    UPDATE {jobs} j SET cancel_requested_at = %(now)s
    FROM picked p
    WHERE j.id = p.job_id AND j.finished_at IS NULL AND j.cancel_requested_at IS NULL
    RETURNING j.id
)
SELECT (SELECT count(*) FROM asked), (SELECT max(job_id) FROM picked)
"""
)

# -- reading -----------------------------------------------------------------------------------

# Everything get_job shows: the job, its state (which table holds it), its failure.
INFO = (
    """
SELECT j.id, j.job_id, j.class_name, j.queue_name, j.priority, j.executions, j.interruptions,
       j.arguments, j.result::text, j.progress, j.checkpoint, j.cancel_requested_at,
       j.cancelled_at, j.discarded_at, j.finished_at, j.scheduled_at, j.created_at,
       """
    + _jobs.state_case(failed="f.job_id IS NOT NULL")
    + """,
       f.exception_class, f.message, f.backtrace
FROM {jobs} j LEFT JOIN {failed} f ON f.job_id = j.id
WHERE j.job_id = %(job_id)s
"""
)
