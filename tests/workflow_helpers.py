"""Ending jobs of batches and workflows the way pgjobs' statements do, in a test's transaction
(tests/test_workflows.py, tests/test_web_batches.py): what the triggers of migration 0007 see."""

from __future__ import annotations

import uuid

import psycopg

import pgjobs

SUCCEEDED = "UPDATE pgjobs_jobs SET finished_at = now(), executions = executions + 1 WHERE id = %s"


def _id(conn: psycopg.Connection, job: pgjobs.Job | uuid.UUID) -> int:
    job_id = job if isinstance(job, uuid.UUID) else job.job_id
    row = conn.execute("SELECT id FROM pgjobs_jobs WHERE job_id = %s", (job_id,)).fetchone()
    assert row is not None
    return int(row[0])


def _leave(conn: psycopg.Connection, id_: int) -> None:
    for table in ("ready", "scheduled", "claimed"):
        conn.execute(f"DELETE FROM pgjobs_{table}_executions WHERE job_id = %s", (id_,))


def succeed(conn: psycopg.Connection, job: pgjobs.Job | uuid.UUID) -> None:
    id_ = _id(conn, job)
    _leave(conn, id_)
    conn.execute(SUCCEEDED, (id_,))


def fail(conn: psycopg.Connection, job: pgjobs.Job) -> None:
    id_ = _id(conn, job)
    _leave(conn, id_)
    conn.execute(  # with the job's batch, as pgjobs' statements that record a failure do
        "INSERT INTO pgjobs_failed_executions (job_id, exception_class, message, backtrace,"
        " attempt, batch_id) SELECT id, 'RuntimeError', 'boom', '', 1, batch_id"
        " FROM pgjobs_jobs WHERE id = %s",
        (id_,),
    )


def retry(conn: psycopg.Connection, job: pgjobs.Job) -> None:
    id_ = _id(conn, job)
    conn.execute("DELETE FROM pgjobs_failed_executions WHERE job_id = %s", (id_,))
    conn.execute(
        "INSERT INTO pgjobs_ready_executions (job_id, queue_name, priority)"
        " SELECT id, queue_name, priority FROM pgjobs_jobs WHERE id = %s",
        (id_,),
    )


def state(conn: psycopg.Connection, job: pgjobs.Job) -> str:
    id_ = _id(conn, job)
    row = conn.execute(
        """SELECT CASE
             WHEN EXISTS (SELECT 1 FROM pgjobs_held_executions WHERE job_id = %(id)s) THEN 'held'
             WHEN EXISTS (SELECT 1 FROM pgjobs_ready_executions WHERE job_id = %(id)s) THEN 'ready'
             WHEN EXISTS (SELECT 1 FROM pgjobs_scheduled_executions WHERE job_id = %(id)s)
                 THEN 'scheduled'
             WHEN EXISTS (SELECT 1 FROM pgjobs_failed_executions WHERE job_id = %(id)s)
                 THEN 'failed'
             WHEN cancelled_at IS NOT NULL THEN 'cancelled'
             WHEN finished_at IS NOT NULL THEN 'finished' ELSE 'lost' END
           FROM pgjobs_jobs WHERE id = %(id)s""",
        {"id": id_},
    ).fetchone()
    assert row is not None
    return str(row[0])
