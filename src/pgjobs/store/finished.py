"""Finished jobs: deleting them when they are not preserved, and clearing old ones in batches.

``preserve_finished_jobs: false``: the worker's claim statements (:mod:`pgjobs.store.ready`)
finish the previous batch by *deleting* the jobs instead of stamping ``finished_at``.  The
variants below are those statements with the finishing part swapped, chosen once when a worker
starts, so the hot path stays one statement either way.

Clearing walks the jobs table in primary-key ranges (``id > a AND id <= b``, each range the next
``batch_size`` ids), because ``finished_at`` is deliberately not indexed (it is written on the hot
path): each range is one short statement, a few index pages, whatever the table's size.
"""

from __future__ import annotations

from pgjobs.store import jobs as _jobs
from pgjobs.store import ready

_FINISH_DELETE = (
    ready.DONE
    + """, finish AS (
    DELETE FROM {jobs} WHERE id IN (SELECT job_id FROM done)
), finish_history AS (
    -- A job that succeeded after retries has errors in its history: they go with it.
    DELETE FROM {job_errors} WHERE job_id IN (SELECT job_id FROM done)
)"""
)


def _deleting(statement: str) -> str:
    finish = ready._FINISH
    if finish not in statement:  # pragma: no cover - guards an edit of store/ready.py
        raise AssertionError("store.ready's statements no longer contain its _FINISH part")
    return statement.replace(finish, _FINISH_DELETE)


# ready.CLAIM_ALL, finishing by deletion.
CLAIM_ALL = _deleting(ready.CLAIM_ALL)
# ready.CLAIM_QUEUE, finishing by deletion.
CLAIM_QUEUE = _deleting(ready.CLAIM_QUEUE)
# ready.CLAIM_QUEUES_MERGED, finishing by deletion.
CLAIM_QUEUES_MERGED = _deleting(ready.CLAIM_QUEUES_MERGED)
# ready.FINISH_ONLY, finishing by deletion.
FINISH_ONLY = _deleting(ready.FINISH_ONLY)

# Where the walk ends: the newest job when it starts (one primary-key probe).
MAX_ID = "SELECT max(id) FROM {jobs}"

# One step of the walk: the range of the next %(limit)s ids after %(after)s (gaps skipped), and
# in it the jobs that finished before the cutoff (of one class) deleted with their error
# histories.  Failed jobs (finished_at NULL) are never touched, nor are holders of a period key
# whose window is still open at %(now)s (they are the window's record; a later walk, which
# starts again from the first id, deletes them), nor a workflow's job whose dependents have not
# all finished; the deleted jobs' dependency rows go with them.  Returns (deleted, range end, the
# range's oldest created_at: the walk stops at a range created after the cutoff).
CLEAR_RANGE = (
    """
WITH bounds AS (
    SELECT max(id) AS last, min(created_at) AS oldest FROM (
        SELECT id, created_at FROM {jobs} WHERE id > %(after)s ORDER BY id LIMIT %(limit)s
    ) ids
), gone AS (
    DELETE FROM {jobs} j
    WHERE id > %(after)s AND id <= (SELECT last FROM bounds)
      AND finished_at < %(cutoff)s
      AND (%(class_name)s::text IS NULL OR class_name = %(class_name)s)
      AND NOT """
    + _jobs.PERIOD_OPEN
    + """
      -- a workflow's job stays while a job that runs after it has not finished: that one reads
      -- its result (pgjobs.workflows)
      AND NOT (batch_id IS NOT NULL AND EXISTS (
          SELECT 1 FROM {dependencies} d JOIN {jobs} x ON x.id = d.job_id
          WHERE d.depends_on = j.id AND x.finished_at IS NULL))
    RETURNING id
), dependencies AS (
    DELETE FROM {dependencies}
    WHERE job_id = ANY (ARRAY(SELECT id FROM gone)) OR depends_on = ANY (ARRAY(SELECT id FROM gone))
), history AS (
    -- = ANY(array): one index descent per job; a join over the CTE was planned as a hash join
    -- over the whole error history in every batch (its row estimate is far off), ~95 ms of a
    -- 97 ms batch with 100 k errors kept (benchmarks/results/2026-12-06-history.md).
    DELETE FROM {job_errors} WHERE job_id = ANY (ARRAY(SELECT id FROM gone))
)
SELECT (SELECT count(*) FROM gone), (SELECT last FROM bounds), (SELECT oldest FROM bounds)
"""
)

# -- finishing jobs with a concurrency slot or a unique key ------------------------------------


def _stamping(returning: str, where: str = "") -> str:
    """The UPDATE that stamps the jobs of ``done`` finished and releases their unique keys (a
    period's stays), as every finishing statement below does, returning ``returning``."""
    return (
        """UPDATE {jobs} SET finished_at = %(now)s, executions = executions + 1,
                      unique_key = """
        + _jobs.RELEASE_UNIQUE
        + """
    WHERE id IN (SELECT job_id FROM done)"""
        + where
        + """
    RETURNING """
        + returning
    )


# Give back one slot per finished job (the CTE ``finish``, with its concurrency_key).
_RELEASED = """
, released AS (
    UPDATE {semaphores} s SET value = greatest(s.value - r.n, 0), updated_at = %(now)s
    FROM (SELECT concurrency_key AS k, count(*) AS n FROM finish
          WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key) r
    WHERE s.key = r.k
)
"""
# The slots given back, and the keys whose slots came back: the worker then unblocks those keys.
_RELEASE_SLOTS = _RELEASED + "SELECT concurrency_key FROM finish WHERE concurrency_key IS NOT NULL"

# Finish jobs of limited or unique classes (preserve_finished_jobs: true): stamp them, release
# their unique keys (a period's stays) and give their slots back.  Returns one row per slot.
FINISH_KEYED = (
    "WITH"
    + ready.DONE
    + ", finish AS (\n    "
    + _stamping("concurrency_key")
    + "\n)"
    + _RELEASE_SLOTS
)

# The same with preserve_finished_jobs: false: jobs are deleted, except those holding a
# period's unique key whose window is still open (the window's record: deleting it would release
# the key) and jobs of batches and workflows (store/jobs.py KEPT_AT_END), which are stamped and
# kept until clear_finished.
FINISH_KEYED_DELETE = (
    "WITH"
    + ready.DONE
    + ", kept AS (\n    "
    + _stamping("concurrency_key", " AND " + _jobs.KEPT_AT_END)
    + """
), deleted AS (
    DELETE FROM {jobs}
    WHERE id IN (SELECT job_id FROM done) AND NOT """
    + _jobs.KEPT_AT_END
    + """
    RETURNING id, concurrency_key
), finish_history AS (
    DELETE FROM {job_errors} WHERE job_id IN (SELECT id FROM deleted)
), finish AS (
    SELECT concurrency_key FROM kept UNION ALL SELECT concurrency_key FROM deleted
)"""
    + _RELEASE_SLOTS
)

# Finish jobs of one batch (both preserve_finished_jobs modes: they are kept, see
# jobs.KEPT_AT_END), counting them once per statement rather than once per row: the statement
# first sets pgjobs.counted (transaction-local: this autocommit statement), so that the row
# trigger of migration 0007 leaves the rows it stamps alone (its WHEN reads it as each row is
# updated: the flag is set by the one-time filter of ``done``, before any row is), then hands
# the finished ids to pgjobs_jobs_succeeded, which updates the batch's row once and each
# dependent's held row once.  Unique keys and slots as FINISH_KEYED.  Returns one row: (jobs
# counted, keys whose slots came back).
FINISH_BATCH = (
    """WITH counting AS MATERIALIZED (
    SELECT set_config('pgjobs.counted', 'on', true)
),"""
    + ready.DONE.replace(
        "WHERE job_id = ANY(%(finished)s::bigint[]) AND process_id + 0 = %(process_id)s",
        "WHERE job_id = ANY(%(finished)s::bigint[]) AND process_id + 0 = %(process_id)s\n"
        "      AND EXISTS (SELECT 1 FROM counting)",
    )
    + ", finish AS (\n    "
    + _stamping("id, batch_id, concurrency_key")
    + """
), counted AS (
    SELECT {jobs_succeeded}(array_agg(id), array_agg(batch_id)) AS n FROM finish
)"""
    + _RELEASED
    + """SELECT (SELECT n FROM counted),
       ARRAY(SELECT concurrency_key FROM finish WHERE concurrency_key IS NOT NULL)
"""
)
assert "EXISTS (SELECT 1 FROM counting)" in FINISH_BATCH  # guards an edit of ready.DONE

# until="executing": a claimed job's unique key is released before it starts.
RELEASE_UNIQUE_AT_CLAIM = """
UPDATE {jobs} SET unique_key = NULL
WHERE id = ANY(%(ids)s::bigint[]) AND left(unique_key, 2) = 'x|'
"""
