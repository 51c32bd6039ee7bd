"""One job for its detail page: the job, where it is (its state), its errors and its origin, and
its job control state (result, progress, resumable steps, cancellation: :mod:`pgjobs.jobs.control`).

One statement reads the job by its public id (``ix_pgjobs_jobs_job_id``) with each execution
table's row by primary key — the state is whichever of them exists — the process running it, the
recurring task that enqueued it (``ix_pgjobs_recurring_executions_job_id``) and the batch or
workflow it belongs to (``pk_pgjobs_batches``).  A second statement reads its error history
(``failed.ERRORS``, by ``ix_pgjobs_job_errors_job_id_id``), and for a job of a batch a third its
dependencies (``batches.DEPENDENCIES``, by ``ix_pgjobs_job_dependencies_job_id_position``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgjobs.db.names import sql
from pgjobs.operations import lists
from pgjobs.operations.failed import JobErrorRecord
from pgjobs.operations.results import Progress
from pgjobs.store import batches as batches_store
from pgjobs.store import failed as failed_store
from pgjobs.web import fmt

# The job and every execution row it may have (at most one exists), by primary keys.
JOB = """
SELECT j.id, j.job_id, j.class_name, j.queue_name, j.priority, j.arguments, j.executions,
       j.interruptions, j.concurrency_key, j.unique_key, j.scheduled_at, j.finished_at,
       j.discarded_at, j.created_at,
       j.result::text AS result, j.progress, j.checkpoint, j.cancel_requested_at, j.cancelled_at,
       r.created_at AS ready_at,
       s.scheduled_at AS due_at,
       c.created_at AS claimed_at, c.process_id AS claimed_process_id,
       p.kind AS process_kind, p.name AS process_name, p.hostname AS process_hostname,
       p.pid AS process_pid, p.last_heartbeat_at AS process_heartbeat_at,
       b.concurrency_key AS blocked_key, b.expires_at AS blocked_expires_at,
       b.created_at AS blocked_at,
       f.exception_class, f.message, f.backtrace, f.attempt, f.process_id AS failed_process_id,
       f.hostname AS failed_hostname, f.pid AS failed_pid, f.created_at AS failed_at,
       re.task_key, re.run_at AS task_run_at, re.manual AS task_manual,
       h.created_at AS held_at, h.pending AS held_pending,
       bt.batch_id AS batch_public_id, bt.kind AS batch_kind, bt.description AS batch_description
FROM {jobs} j
LEFT JOIN {ready} r ON r.job_id = j.id
LEFT JOIN {scheduled} s ON s.job_id = j.id
LEFT JOIN {claimed} c ON c.job_id = j.id
LEFT JOIN {processes} p ON p.id = c.process_id
LEFT JOIN {blocked} b ON b.job_id = j.id
LEFT JOIN {failed} f ON f.job_id = j.id
LEFT JOIN {held} h ON h.job_id = j.id
LEFT JOIN {batches} bt ON bt.id = j.batch_id
LEFT JOIN LATERAL (
    SELECT task_key, run_at, manual FROM {recurring_executions} e
    WHERE e.job_id = j.id ORDER BY e.id LIMIT 1
) re ON true
WHERE j.job_id = %(job_id)s
"""


@dataclass(frozen=True)
class Steps:
    """A resumable job's checkpoint: its completed steps, the step it is in and where (the
    cursor's repr, cut)."""

    completed: tuple[str, ...]
    current: str | None
    cursor: str | None


@dataclass(frozen=True)
class Dependency:
    """A job a workflow's job runs after, and how it ended (``pending``: it has not)."""

    job_id: uuid.UUID
    state: str  # finished | failed | discarded | cancelled | pending


@dataclass(frozen=True)
class JobDetail:
    row: dict[str, Any]  # the columns of JOB by name
    errors: tuple[JobErrorRecord, ...]
    dependencies: tuple[Dependency, ...] = ()  # a workflow's job: what it runs after, in order

    @property
    def state(self) -> str:
        """held, ready, scheduled, in_progress, blocked, failed, finished, discarded, cancelled
        (or unknown)."""
        r = self.row
        for state, column in (
            ("held", "held_at"),
            ("ready", "ready_at"),
            ("scheduled", "due_at"),
            ("in_progress", "claimed_at"),
            ("blocked", "blocked_at"),
            ("failed", "failed_at"),
        ):
            if r[column] is not None:
                return state
        if r["cancelled_at"] is not None:
            return "cancelled"
        if r["discarded_at"] is not None:
            return "discarded"
        return "finished" if r["finished_at"] is not None else "unknown"

    @property
    def list_state(self) -> str | None:
        """The job list this job appears in (discarded and cancelled jobs are among the
        finished)."""
        state = self.state
        return {"discarded": "finished", "cancelled": "finished", "unknown": None}.get(state, state)

    @property
    def cancellable(self) -> bool:
        """Waiting (cancelled at once; a held job too) or running (asked to stop)."""
        return self.state in ("held", "ready", "scheduled", "blocked", "in_progress")

    @property
    def result(self) -> str | None:
        """What ``perform`` returned, as its repr (cut), None when nothing was stored."""
        raw = self.row["result"]
        return None if raw is None else fmt.stored_value(raw)

    @property
    def progress(self) -> Progress | None:
        """The job's last progress report."""
        return lists.progress(self.row["progress"])

    @property
    def steps(self) -> Steps | None:
        """A resumable job's checkpoint, None for a job without steps."""
        saved = self.row["checkpoint"]
        if not isinstance(saved, dict):
            return None
        cursor = saved.get("cursor")
        return Steps(
            completed=tuple(str(name) for name in saved.get("completed") or ()),
            current=saved.get("step"),
            cursor=None if cursor is None else fmt.stored_value(cursor),
        )

    @property
    def arguments(self) -> str:
        """The stored arguments as indented JSON."""
        return json.dumps(self.row["arguments"], indent=2, ensure_ascii=False, sort_keys=True)

    @property
    def started_at(self) -> datetime | None:
        """When the running attempt was claimed (not recorded once it has ended)."""
        value = self.row["claimed_at"]
        return value if isinstance(value, datetime) else None


def find(conn: psycopg.Connection[Any], schema: str | None, job_id: uuid.UUID) -> JobDetail | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(sql(JOB, schema), {"job_id": job_id}).fetchone()
    if row is None:
        return None
    history = conn.execute(sql(failed_store.ERRORS, schema), {"id": row["id"]}).fetchall()
    dependencies: tuple[Dependency, ...] = ()
    if row["batch_public_id"] is not None:
        found = conn.execute(sql(batches_store.DEPENDENCIES, schema), {"job_id": job_id})
        dependencies = tuple(Dependency(public, str(state)) for public, state, _ in found)
    return JobDetail(row, tuple(JobErrorRecord(*r) for r in history), dependencies)
