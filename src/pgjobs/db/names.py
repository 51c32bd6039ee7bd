"""Schema-qualified table names for hand-written SQL.

Statements are module-level templates such as ``"SELECT ... FROM {jobs}"``; :func:`sql` fills
them in for a schema once and caches the result, so the hot path never formats strings.
"""

from __future__ import annotations

from functools import cache

# The tables of pgjobs.db.schema by their names in statements (written out, not read from the
# SQLAlchemy metadata, so that running jobs never imports SQLAlchemy: ~28 MiB per process; a test
# checks that the two agree).
TABLES: dict[str, str] = {
    "jobs": "pgjobs_jobs",
    "ready": "pgjobs_ready_executions",
    "claimed": "pgjobs_claimed_executions",
    "scheduled": "pgjobs_scheduled_executions",
    "blocked": "pgjobs_blocked_executions",
    "failed": "pgjobs_failed_executions",
    "job_errors": "pgjobs_job_errors",
    "processes": "pgjobs_processes",
    "pauses": "pgjobs_pauses",
    "semaphores": "pgjobs_semaphores",
    "rates": "pgjobs_rate_limits",
    "recurring_tasks": "pgjobs_recurring_tasks",
    "recurring_executions": "pgjobs_recurring_executions",
    "batches": "pgjobs_batches",
    "held": "pgjobs_held_executions",
    "dependencies": "pgjobs_job_dependencies",
}


# The functions statements call (migration 0007: the batches' and workflows' triggers use them).
FUNCTIONS: dict[str, str] = {
    "batch_note": "pgjobs_batch_note",
    "jobs_succeeded": "pgjobs_jobs_succeeded",
}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@cache
def names(schema: str | None) -> dict[str, str]:
    prefix = f"{quote_ident(schema)}." if schema else ""
    return {key: prefix + name for key, name in (TABLES | FUNCTIONS).items()}


@cache
def sql(template: str, schema: str | None) -> str:
    """``template`` with ``{jobs}``, ``{ready}``, … replaced by the tables of ``schema``."""
    return template.format(**names(schema))
