"""Recurring tasks in the database: the static tasks of ``recurring.yml`` kept in sync
(:func:`sync_static`), dynamic tasks (:func:`schedule_recurring`, :func:`unschedule_recurring`),
their status (:func:`list_tasks`), and enqueueing a run exactly once (:func:`enqueue_run`, used by
the scheduler process and by :func:`run_now`).  ``docs/recurring.md`` describes the guarantees.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from pgjobs import clock
from pgjobs.config.queue import positive_int as _limit
from pgjobs.config.recurring import (
    DEFAULT_CATCH_UP_LIMIT,
    MissedPolicy,
    RecurringTask,
    _missed,
    dynamic_task,
)
from pgjobs.config.schedules import Schedule, parse_schedule
from pgjobs.config.yamlfile import did_you_mean
from pgjobs.db.database import Database
from pgjobs.db.names import sql
from pgjobs.enqueue.core import enqueue_on
from pgjobs.enqueue.handle import EnqueuedJob
from pgjobs.errors import ConfigurationError, PgJobsError
from pgjobs.jobs.base import Job, JobFunction
from pgjobs.serialization import deserialize_arguments, dumps_arguments
from pgjobs.store import recurring as store


def enqueue_run(
    conn: psycopg.Connection[Any],
    schema: str | None,
    task: RecurringTask,
    run_at: datetime,
    *,
    manual: bool = False,
) -> tuple[int, EnqueuedJob | None] | None:
    """Enqueue ``task``'s run for ``run_at`` unless it already ran: exactly once per run_at.

    One transaction claims ``(task.key, run_at)`` in ``pgjobs_recurring_executions`` and inserts
    the job on the same connection (enqueue callbacks run).  ``None`` when the run was already
    claimed (another scheduler won); else ``(run id, job)``, the job None if an around_enqueue
    callback dropped it.  An error building or writing the job rolls the claim back and
    propagates: nothing is recorded, and the tick can be tried again.
    """

    job = task.build_job()
    with conn.transaction():
        now = clock.now()
        claim = {"key": task.key, "run_at": run_at, "manual": manual, "now": now}
        claimed = conn.execute(sql(store.CLAIM_RUN, schema), claim).fetchone()
        if claimed is None:
            return None
        enqueued = enqueue_on(conn, job, schema=schema, now=now)
        if enqueued is not None:
            conn.execute(sql(store.SET_JOB_ID, schema), {"id": claimed[0], "job_id": enqueued.id})
    return int(claimed[0]), enqueued


# -- tasks in the database ---------------------------------------------------------------------


def task_params(task: RecurringTask) -> dict[str, Any]:
    """The parameters of the task upserts."""
    return {
        "key": task.key,
        "schedule": task.schedule.source,
        "class_name": task.class_name,
        "command": task.command,
        "arguments": dumps_arguments(
            task.args, task.kwargs, context=f"recurring task {task.key!r}"
        ),
        "queue": task.queue,
        "priority": task.priority,
        "description": task.description,
        "missed": task.missed_policy,
        "now": clock.now(),
    }


def task_from_row(row: Sequence[Any]) -> RecurringTask:
    """A task from the columns of ``store.TASK``; ConfigurationError if the row is unusable."""
    key, schedule, class_name, command, arguments, queue, priority, description, static = row[:9]
    policy, _, limit = str(row[9]).partition(":")
    try:
        args, kwargs = deserialize_arguments(arguments)
        missed, limit_ = _missed(policy), _limit(int(limit)) if limit else DEFAULT_CATCH_UP_LIMIT
    except (ValueError, PgJobsError) as exc:
        raise ConfigurationError(f"recurring task {key!r}: {exc}") from None
    return RecurringTask(
        key=key,
        schedule=parse_schedule(schedule),
        class_name=class_name,
        command=command,
        args=args,
        kwargs=kwargs,
        queue=queue,
        priority=priority,
        description=description,
        missed=missed,
        catch_up_limit=limit_,
        static=static,
    )


def sync_static(
    conn: psycopg.Connection[Any], tasks: Collection[RecurringTask], *, schema: str | None = None
) -> list[str]:
    """Make the static rows of ``pgjobs_recurring_tasks`` match ``tasks`` (one transaction);
    returns the keys of the static tasks removed.  Dynamic tasks are left alone."""
    from pgjobs.db.names import names, sql

    with conn.transaction():
        conn.execute(sql(store.LOCK_SYNC, schema), {"name": names(schema)["recurring_tasks"]})
        for task in sorted(tasks, key=lambda t: t.key):
            conn.execute(sql(store.UPSERT_STATIC, schema), task_params(task))
        keys = [task.key for task in tasks]
        gone = conn.execute(sql(store.DELETE_STALE_STATIC, schema), {"keys": keys}).fetchall()
    return [str(row[0]) for row in gone]


# -- the dynamic-task API ------------------------------------------------------------------------


def _default(database: Database | None) -> Database:
    from pgjobs.runtime import get_database

    return database or get_database()


def schedule_recurring(
    key: str,
    schedule: str | Schedule,
    job_or_class: type[Job] | JobFunction[Any, Any] | Callable[..., Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    description: str | None = None,
    missed: MissedPolicy = "skip",
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT,
    database: Database | None = None,
) -> RecurringTask:
    """Add or replace a dynamic task (running schedulers pick it up within seconds).

    ``job_or_class``: a Job class, an ``@job`` function, a job name / ``module:QualName``
    string, or a plain function (run as a command).  Raises ConfigurationError for anything
    invalid, or when ``key`` belongs to a task of recurring.yml.
    """
    task = dynamic_task(
        key,
        schedule,
        job_or_class,
        args,
        kwargs,
        queue=queue,
        priority=priority,
        description=description,
        missed=missed,
        catch_up_limit=catch_up_limit,
    )
    db = _default(database)
    with db.connection() as conn:
        if not conn.execute(db.sql(store.UPSERT_DYNAMIC), task_params(task)).fetchall():
            raise ConfigurationError(
                f"recurring task {key!r} is defined in recurring.yml; choose another key"
            )
    return task


def unschedule_recurring(key: str, database: Database | None = None) -> bool:
    """Remove a dynamic task; False if there is none.  Tasks of recurring.yml cannot be removed
    this way (ConfigurationError): delete them from the file."""
    db = _default(database)
    with db.connection() as conn:
        row = conn.execute(db.sql(store.DELETE_DYNAMIC), {"key": key}).fetchone()
    if row is not None and row[0]:
        raise ConfigurationError(f"recurring task {key!r} is defined in recurring.yml")
    return row is not None


@dataclass(frozen=True)
class TaskStatus:
    """A task as ``pgjobs recurring list`` shows it."""

    key: str
    schedule: str
    class_name: str | None
    command: str | None
    queue: str | None
    priority: int | None
    description: str | None
    static: bool
    missed: str
    last_run_at: datetime | None
    last_job_id: int | None
    last_manual: bool
    next_run_at: datetime | None


def list_tasks(database: Database) -> list[TaskStatus]:
    """Every task in ``pgjobs_recurring_tasks`` (static ones once a scheduler has synced them),
    with its latest run and next tick."""
    with database.connection() as conn:
        rows = conn.execute(database.sql(store.LIST)).fetchall()
    now, found = clock.now(), []
    for row in rows:
        try:
            next_run: datetime | None = parse_schedule(row[1]).next_after(now)
        except ConfigurationError:
            next_run = None
        found.append(
            TaskStatus(row[0], row[1], row[2], row[3], row[5], row[6], row[7], row[8], row[9],
                       row[10], row[11], bool(row[12]), next_run)
        )  # fmt: skip
    return found


def run_now(database: Database, key: str) -> EnqueuedJob | None:
    """Enqueue ``key``'s job now, recorded as a manual run (run_at = now); None if an
    around_enqueue callback dropped the job.  Raises ConfigurationError for an unknown key."""
    with database.connection() as conn:
        row = conn.execute(database.sql(store.TASK), {"key": key}).fetchone()
        if row is None:
            keys = [r[0] for r in conn.execute(database.sql(store.TASK_KEYS)).fetchall()]
            hint = did_you_mean(key, keys) or f"known tasks: {', '.join(keys) or 'none'}"
            raise ConfigurationError(f"no recurring task {key!r}; {hint}")
        task = task_from_row(row)
        # Ticks fall on whole seconds: a manual run never takes one (nor another manual run).
        run_at = clock.now()
        while True:
            if run_at.microsecond == 0:
                run_at += timedelta(microseconds=1)
            result = enqueue_run(conn, database.schema, task, run_at, manual=True)
            if result is not None:
                return result[1]
            run_at += timedelta(microseconds=1)
