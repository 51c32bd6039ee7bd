"""Schema-qualified table names for hand-written SQL.

Statements are module-level templates such as ``"SELECT ... FROM {jobs}"``; :func:`sql` fills
them in for a schema once and caches the result, so the hot path never formats strings.
"""

from __future__ import annotations

from functools import cache

from pgjobs.db import schema as s

TABLES: dict[str, str] = {
    "jobs": s.jobs.name,
    "ready": s.ready_executions.name,
    "claimed": s.claimed_executions.name,
    "scheduled": s.scheduled_executions.name,
    "blocked": s.blocked_executions.name,
    "failed": s.failed_executions.name,
    "job_errors": s.job_errors.name,
    "processes": s.processes.name,
    "pauses": s.pauses.name,
    "semaphores": s.semaphores.name,
    "rates": s.rate_limits.name,
    "recurring_tasks": s.recurring_tasks.name,
    "recurring_executions": s.recurring_executions.name,
}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@cache
def names(schema: str | None) -> dict[str, str]:
    prefix = f"{quote_ident(schema)}." if schema else ""
    return {key: prefix + table for key, table in TABLES.items()}


@cache
def sql(template: str, schema: str | None) -> str:
    """``template`` with ``{jobs}``, ``{ready}``, … replaced by the tables of ``schema``."""
    return template.format(**names(schema))
