"""``pgjobs_failed_executions`` and ``pgjobs_job_errors``: jobs that failed, and every error.

Failing is one statement: the claimed row (if this process still holds it) is deleted, the
attempt counted, the error appended to the job's history and the failed row written.
"""

from __future__ import annotations

FAIL = """
WITH done AS (
    DELETE FROM {claimed} WHERE job_id = %(id)s AND process_id = %(process_id)s
    RETURNING job_id
), bumped AS (
    UPDATE {jobs} SET executions = executions + 1 WHERE id IN (SELECT job_id FROM done)
    RETURNING id, executions
), history AS (
    INSERT INTO {job_errors} (job_id, attempt, exception_class, message, backtrace, process_id,
                              hostname, pid)
    SELECT id, executions, %(exception_class)s, %(message)s, %(backtrace)s, %(process_id)s,
           %(hostname)s, %(pid)s FROM bumped
)
INSERT INTO {failed} (job_id, exception_class, message, backtrace, attempt, process_id,
                      hostname, pid)
SELECT id, %(exception_class)s, %(message)s, %(backtrace)s, executions, %(process_id)s,
       %(hostname)s, %(pid)s FROM bumped
RETURNING job_id
"""

COUNT = "SELECT count(*) FROM {failed}"
