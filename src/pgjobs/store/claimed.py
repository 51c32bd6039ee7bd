"""``pgjobs_claimed_executions``: releasing and recovering the jobs a process holds.

Recovery is how a crash loses nothing: the jobs of a process that died (its supervisor saw it
exit, or its heartbeat expired) go back to ready with the interrupted attempt counted; a job
interrupted ``max_interruptions`` times is failed with ``ProcessExitError`` instead, so a job
that kills its worker cannot loop forever.
"""

from __future__ import annotations

from pgjobs.store import jobs as _jobs

# Give back jobs a stopping process did not finish (graceful shutdown): not counted as attempts.
RELEASE = """
WITH released AS (
    DELETE FROM {claimed} WHERE process_id = %(process_id)s
    AND (%(job_ids)s::bigint[] IS NULL OR job_id = ANY(%(job_ids)s::bigint[]))
    RETURNING job_id
), requeued AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT j.id, j.queue_name, j.priority FROM {jobs} j JOIN released r ON r.job_id = j.id
    RETURNING job_id, queue_name
)
SELECT count(*), CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '*') END FROM requeued
"""

# Recover the jobs of dead processes: re-queue with the attempt counted (keeping a concurrency
# slot and unique key), or fail for good once a job has been interrupted too many times (slot
# given back, unique key released).  Returns (re-queued, failed, notify, keys to unblock).
RECOVER = (
    """
WITH released AS (
    DELETE FROM {claimed} WHERE process_id = ANY(%(process_ids)s::bigint[])
    RETURNING job_id, process_id
), bumped AS (
    UPDATE {jobs} j SET executions = j.executions + 1, interruptions = j.interruptions + 1,
        unique_key = CASE WHEN j.interruptions + 1 >= %(max_interruptions)s
                          THEN """
    + _jobs.RELEASE_UNIQUE.replace("unique_key", "j.unique_key")
    + """ ELSE j.unique_key END
    FROM released r WHERE j.id = r.job_id
    RETURNING j.id, j.queue_name, j.priority, j.executions, j.interruptions, r.process_id,
              j.concurrency_key
), requeued AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT id, queue_name, priority FROM bumped WHERE interruptions < %(max_interruptions)s
    RETURNING job_id
), failed AS (
    INSERT INTO {failed} (job_id, exception_class, message, backtrace, attempt, process_id)
    SELECT id, 'pgjobs.errors.ProcessExitError',
           'the process running this job exited ' || interruptions || ' times before it finished',
           '', executions, process_id
    FROM bumped WHERE interruptions >= %(max_interruptions)s
    RETURNING job_id, exception_class, message, attempt, process_id
), history AS (
    INSERT INTO {job_errors} (job_id, attempt, exception_class, message, backtrace, process_id)
    SELECT job_id, attempt, exception_class, message, '', process_id FROM failed
), freed AS (
    SELECT concurrency_key AS k, count(*) AS n FROM bumped
    WHERE interruptions >= %(max_interruptions)s AND concurrency_key IS NOT NULL
    GROUP BY concurrency_key
), slots AS (
    UPDATE {semaphores} s SET value = greatest(s.value - f.n, 0), updated_at = now()
    FROM freed f WHERE s.key = f.k
)
SELECT r.n, (SELECT count(*) FROM failed), CASE WHEN r.n > 0 THEN pg_notify(%(channel)s, '*') END,
       (SELECT array_agg(k) FROM freed)
FROM (SELECT count(*) AS n FROM requeued) r
"""
)

# Jobs a process holds (status, dashboard).
COUNT_BY_PROCESS = """
SELECT process_id, count(*) FROM {claimed} GROUP BY process_id
"""

# After a lost connection: give back rows this process holds but is not running (a claim whose
# commit succeeded but whose reply was lost).  Not counted as attempts: they never started.
RELEASE_ORPHANS = """
WITH released AS (
    DELETE FROM {claimed} WHERE process_id = %(process_id)s
    AND NOT (job_id = ANY(%(running)s::bigint[]))
    RETURNING job_id
), requeued AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT j.id, j.queue_name, j.priority FROM {jobs} j JOIN released r ON r.job_id = j.id
    RETURNING job_id
)
SELECT count(*), CASE WHEN count(*) > 0 THEN pg_notify(%(channel)s, '*') END FROM requeued
"""
