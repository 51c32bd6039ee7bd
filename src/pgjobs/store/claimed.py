"""``pgjobs_claimed_executions``: releasing and recovering the jobs a process holds.

Recovery is how a crash loses nothing: the jobs of a process that died (its supervisor saw it
exit, or its heartbeat expired) go back to ready with the interrupted attempt counted; a job
interrupted ``max_interruptions`` times is failed with ``ProcessExitError`` instead, so a job
that kills its worker cannot loop forever.
"""

from __future__ import annotations

from pgjobs.store import failed as _failed
from pgjobs.store import jobs as _jobs

# Give back jobs a stopping process did not finish (graceful shutdown): not counted as attempts.
RELEASE = """
WITH released AS (
    DELETE FROM {claimed} WHERE process_id = ANY(%(process_ids)s::bigint[])
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
_BY_PROCESS = """
    DELETE FROM {claimed} WHERE process_id = ANY(%(process_ids)s::bigint[])
    RETURNING job_id, process_id"""

# Claimed rows whose process row is gone — recovered after a grace (created_at: database clock).
# Nothing should leave such rows (a process row is deleted only in the transaction that first
# locks it and then recovers or releases its jobs, and claims need the row); this sweep is what
# makes "never stranded" hold whatever did.  A sequential scan: claimed holds running jobs only.
_ORPHANED = """
    DELETE FROM {claimed} c
    WHERE c.created_at < now() - make_interval(secs => %(grace)s)
    AND NOT EXISTS (SELECT 1 FROM {processes} p WHERE p.id = c.process_id)
    RETURNING job_id, process_id"""

_RECOVER = (
    """
WITH released AS (RELEASED
), bumped AS (
    UPDATE {jobs} j SET executions = j.executions + 1, interruptions = j.interruptions + 1,
        unique_key = CASE WHEN j.interruptions + 1 >= %(max_interruptions)s
                          THEN """
    + _jobs.RELEASE_UNIQUE.replace("unique_key", "j.unique_key")
    + """ ELSE j.unique_key END
    FROM released r WHERE j.id = r.job_id
    RETURNING j.id, j.queue_name, j.priority, j.executions, j.interruptions, r.process_id,
              j.class_name, j.batch_id, """
    + _failed.held_on_failure("j")
    + """
), requeued AS (
    INSERT INTO {ready} (job_id, queue_name, priority)
    SELECT id, queue_name, priority FROM bumped WHERE interruptions < %(max_interruptions)s
    RETURNING job_id
), failed AS (
    INSERT INTO {failed} (job_id, exception_class, message, backtrace, attempt, process_id,
                          batch_id)
    SELECT id, 'pgjobs.errors.ProcessExitError',
           'the process running this job exited ' || interruptions || ' times before it finished',
           '', executions, process_id, batch_id
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
       (SELECT array_agg(k) FROM freed),
       -- the interrupted executions per (queue, class), for metrics
       (SELECT json_agg(json_build_array(queue_name, class_name, n)) FROM (
            SELECT queue_name, class_name, count(*) AS n FROM bumped GROUP BY 1, 2) g)
FROM (SELECT count(*) AS n FROM requeued) r
"""
)
# The jobs of dead processes (their rows locked first: see store/processes.py).
RECOVER = _RECOVER.replace("RELEASED", _BY_PROCESS)
# The jobs of processes that no longer exist.
RECOVER_ORPHANED = _RECOVER.replace("RELEASED", _ORPHANED)

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

# After a reconnect with durable_claims: false, a PostgreSQL crash may have forgotten the claim
# of a job this process is running (its commit was not flushed): the job is ready again.  Claim
# it back unless another process got there first.  Served by ready's primary key.
RECLAIM = """
WITH me AS MATERIALIZED (  -- as every claim: only while our row exists (see store/ready.py)
    SELECT id FROM {processes} WHERE id = %(process_id)s FOR KEY SHARE
), moved AS (
    DELETE FROM {ready} WHERE EXISTS (SELECT 1 FROM me) AND job_id = ANY(%(job_ids)s::bigint[])
    RETURNING job_id
)
INSERT INTO {claimed} (job_id, process_id) SELECT job_id, %(process_id)s FROM moved
ON CONFLICT (job_id) DO NOTHING
"""
