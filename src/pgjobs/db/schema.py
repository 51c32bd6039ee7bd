"""The pgjobs tables: SQLAlchemy Core metadata, the one source of truth for DDL.

A job's state is *which execution table holds its row* (Solid Queue's design):

    pgjobs_ready_executions      ready to run, claimable now
    pgjobs_scheduled_executions  waiting for scheduled_at
    pgjobs_claimed_executions    claimed by a worker process, running
    pgjobs_blocked_executions    waiting for a concurrency slot
    pgjobs_failed_executions     failed for good, with the error
    (no execution row)           finished (jobs.finished_at set) — or discarded

The migrations in ``migrations/`` are generated from this metadata, and a test checks that a
migrated database matches it exactly.  ``docs/architecture.md`` explains every index.

The execution tables carry no foreign keys to ``pgjobs_jobs``: every row is written and removed
by pgjobs in the same statement as its job, and the performance notes measured foreign-key
checks at 5-20 % of the hot path.  Deleting a job deletes its execution rows explicitly.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    Interval,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, UUID

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Hot, small, fast-changing tables: vacuum them early and often, leave room for HOT updates.
_HOT: dict[str, Any] = {
    "postgresql_with": {
        "fillfactor": 90,
        "autovacuum_vacuum_scale_factor": 0.01,
        "autovacuum_vacuum_threshold": 1000,
        "autovacuum_analyze_scale_factor": 0.02,
    }
}


def _now() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


jobs = Table(
    "pgjobs_jobs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("job_id", UUID(as_uuid=True), nullable=False),
    Column("queue_name", Text, nullable=False),
    Column("class_name", Text, nullable=False),
    Column("arguments", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("executions", Integer, nullable=False, server_default=text("0")),
    Column("interruptions", SmallInteger, nullable=False, server_default=text("0")),
    # Concurrency limits (NULL for unlimited jobs): the "group/key" whose semaphore the job takes,
    # and the limit, duration and on_conflict it was enqueued with (used when it is dispatched or
    # unblocked later, by processes that may not have the job's class).
    Column("concurrency_key", Text),
    Column("concurrency_limit", Integer),
    Column("concurrency_duration", Interval),
    Column("concurrency_on_conflict", Text),
    # Unique jobs: "<mode>|<job name>|<key>", NULL once the lock is released (pgjobs.jobs.limits).
    Column("unique_key", Text),
    Column("scheduled_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("discarded_at", DateTime(timezone=True)),
    _now(),
    # Job control (pgjobs.jobs.control; NULL for jobs that use none of it, so they cost nothing):
    # the stored return value, the last progress report, the resumable steps' checkpoint, when a
    # cancel was asked for (honoured at claim, and by the running job's worker), and when the
    # job was cancelled (a terminal state: finished_at is set too).
    Column("result", JSON),  # json: kept as written (a dict's keys keep their order)
    Column("progress", JSONB),
    Column("checkpoint", JSONB),
    Column("cancel_requested_at", DateTime(timezone=True)),
    Column("cancelled_at", DateTime(timezone=True)),
    # Rate limits (NULL for jobs without one): the "group/key" whose budget the job's start takes,
    # and the limit and period it was enqueued with (pgjobs.store.rates).
    Column("rate_key", Text),
    Column("rate_limit", Integer),
    Column("rate_period", Interval),
    # Batches and workflows (pgjobs.workflows): the batch or workflow the job belongs to (its
    # pgjobs_batches.id), NULL for every other job.
    Column("batch_id", BigInteger),
    # job_id is the public id: looked up by the API, the CLI and the dashboard.
    Index(None, "job_id", unique=True),
    # Unique jobs: at most one job holds a key; INSERT ... ON CONFLICT arbitrates races.  Partial:
    # jobs without a key (almost all) add nothing to it.
    Index(
        "uq_pgjobs_jobs_unique_key",
        "unique_key",
        unique=True,
        postgresql_where=text("unique_key IS NOT NULL"),
    ),
    # Dashboard and clear-finished filter by class; finished_at is deliberately NOT indexed
    # (it is written on the hot path; clear-finished scans in id order instead).
    Index(None, "class_name", "id"),
    # A batch's or workflow's jobs (its dashboard page, pgjobs batches show).  Partial: jobs in
    # no batch (almost all) add nothing to it; batch_id never changes, so finishing a job stays
    # a HOT update.
    Index(None, "batch_id", "id", postgresql_where=text("batch_id IS NOT NULL")),
    # fillfactor 50: room on each page for every row's finished version, so that finishing a
    # job is a heap-only (HOT) update (at 70 only ~half were; see migration 0003).
    postgresql_with={"fillfactor": 50, "autovacuum_vacuum_scale_factor": 0.05},
)

ready_executions = Table(
    "pgjobs_ready_executions",
    metadata,
    Column("job_id", BigInteger, primary_key=True, autoincrement=False),
    Column("queue_name", Text, nullable=False),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    _now(),
    # Claim from one queue: WHERE queue_name = $1 ORDER BY priority, job_id.
    Index(None, "queue_name", "priority", "job_id"),
    # Claim from every queue ("*"): ORDER BY priority, job_id.
    Index(None, "priority", "job_id"),
    **_HOT,
)

claimed_executions = Table(
    "pgjobs_claimed_executions",
    metadata,
    Column("job_id", BigInteger, primary_key=True, autoincrement=False),
    Column("process_id", BigInteger, nullable=False),
    _now(),
    # Recovering a dead process's jobs: WHERE process_id = $1.
    Index(None, "process_id", "job_id"),
    **_HOT,
)

scheduled_executions = Table(
    "pgjobs_scheduled_executions",
    metadata,
    Column("job_id", BigInteger, primary_key=True, autoincrement=False),
    Column("queue_name", Text, nullable=False),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("scheduled_at", DateTime(timezone=True), nullable=False),
    # Set for concurrency-limited jobs: when due they go through blocked to take a slot.
    Column("concurrency_key", Text),
    _now(),
    # Dispatch: WHERE scheduled_at <= now ORDER BY scheduled_at, priority, job_id.
    Index(None, "scheduled_at", "priority", "job_id"),
    **_HOT,
)

blocked_executions = Table(
    "pgjobs_blocked_executions",
    metadata,
    Column("job_id", BigInteger, primary_key=True, autoincrement=False),
    Column("queue_name", Text, nullable=False),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("concurrency_key", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    _now(),
    # Unblock the next job of a key: WHERE concurrency_key = $1 ORDER BY priority, job_id.
    Index(None, "concurrency_key", "priority", "job_id"),
    # Concurrency maintenance walks the keys in order, each key's oldest expiry first: one
    # descent per key (blocked.WALK_EXPIRED; replaced (expires_at, concurrency_key) in 0004).
    Index(None, "concurrency_key", "expires_at"),
)

failed_executions = Table(
    "pgjobs_failed_executions",
    metadata,
    Column("job_id", BigInteger, primary_key=True, autoincrement=False),
    Column("exception_class", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("backtrace", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("process_id", BigInteger),
    Column("hostname", Text),
    Column("pid", Integer),
    # The job's batch (pgjobs_jobs.batch_id), copied by the statements that write a failure: a
    # trigger counts the failure in it, and its end (a retry, a discard) even when the job's row
    # goes in the same statement (migration 0007).
    Column("batch_id", BigInteger),
    _now(),
    # The failed-jobs page and retry_all/discard_all walk failures newest first.
    Index(None, "created_at", "job_id"),
)

# Every attempt that ended in an error (retried or not): the job's error history.
job_errors = Table(
    "pgjobs_job_errors",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("job_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("exception_class", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("backtrace", Text, nullable=False),
    Column("process_id", BigInteger),
    Column("hostname", Text),
    Column("pid", Integer),
    _now(),
    # A job's history on its detail page: WHERE job_id = $1 ORDER BY id.
    Index(None, "job_id", "id"),
)

# -- batches and workflows (pgjobs.workflows; the triggers that keep them: migration 0007) ------

batches = Table(
    "pgjobs_batches",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("batch_id", UUID(as_uuid=True), nullable=False),  # the public id
    Column("kind", Text, nullable=False, server_default=text("'batch'")),  # batch | workflow
    Column("parent_id", BigInteger),  # a nested batch's parent (it counts as one of its jobs)
    Column("description", Text),
    Column("properties", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # A workflow's policy when a dependency fails for good: cancel | run | wait.
    Column("on_failure", Text),
    # The callback jobs, written when their moment comes: {"finish"|"success"|"discard": job}.
    Column("callbacks", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Exact counts, kept by the triggers in the statement that ends each job.
    Column("total", Integer, nullable=False, server_default=text("0")),
    Column("pending", Integer, nullable=False, server_default=text("0")),
    Column("succeeded", Integer, nullable=False, server_default=text("0")),
    Column("failed", Integer, nullable=False, server_default=text("0")),
    Column("discarded", Integer, nullable=False, server_default=text("0")),
    Column("cancelled", Integer, nullable=False, server_default=text("0")),
    # When each callback's moment came (at most once each).
    Column("finished_at", DateTime(timezone=True)),
    Column("succeeded_at", DateTime(timezone=True)),
    Column("discarded_at", DateTime(timezone=True)),
    _now(),
    Index(None, "batch_id", unique=True),
    Index(None, "parent_id", postgresql_where=text("parent_id IS NOT NULL")),
)

held_executions = Table(
    "pgjobs_held_executions",
    metadata,
    # A workflow's job waiting for its dependencies; released (to ready, or to scheduled when it
    # is due later or takes a concurrency slot) by the statement that ends the last of them.
    Column("job_id", BigInteger, primary_key=True, autoincrement=False),
    Column("queue_name", Text, nullable=False),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("pending", Integer, nullable=False),  # dependencies not yet resolved
    _now(),
)

job_dependencies = Table(
    "pgjobs_job_dependencies",
    metadata,
    Column("job_id", BigInteger, nullable=False),  # the dependent
    Column("depends_on", BigInteger, nullable=False),
    Column("position", Integer, nullable=False),  # its place in after=[...]
    # Set once the dependency's end has been passed on to the dependent.
    Column("resolved", Boolean, nullable=False, server_default=text("false")),
    # A job's end finds its dependents: WHERE depends_on = $1 (the primary key's prefix).
    PrimaryKeyConstraint("depends_on", "job_id"),
    # A job's dependencies and their results, in order.
    Index(None, "job_id", "position"),
)

processes = Table(
    "pgjobs_processes",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("supervisor_id", BigInteger),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("last_heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _now(),
    UniqueConstraint("name"),
    # Pruning: WHERE last_heartbeat_at < now - alive_threshold.
    Index(None, "last_heartbeat_at"),
    # A supervisor's children.
    Index(None, "supervisor_id"),
)

pauses = Table(
    "pgjobs_pauses",
    metadata,
    Column("queue_name", Text, primary_key=True),
    _now(),
)

# One row per concurrency key in use: ``value`` is how many jobs hold a slot (ready or running).
semaphores = Table(
    "pgjobs_semaphores",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    _now(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Concurrency maintenance: WHERE expires_at < now.
    Index(None, "expires_at"),
)

# One row per rate-limit key in use (pgjobs.store.rates): the start times still inside the key's
# window (at most ``max_starts`` of them), and when its waiting jobs (blocked rows whose key is
# "rate|<key>") may next move to ready — NULL when none wait.
rate_limits = Table(
    "pgjobs_rate_limits",
    metadata,
    Column("key", Text, primary_key=True),
    Column("max_starts", Integer, nullable=False),
    Column("period", Interval, nullable=False),
    Column(
        "starts",
        ARRAY(DateTime(timezone=True)),
        nullable=False,
        server_default=text("'{}'::timestamptz[]"),
    ),
    Column("granted", Integer, nullable=False, server_default=text("0")),
    Column("free_at", DateTime(timezone=True)),
    _now(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The dispatcher: WHERE free_at <= now ORDER BY free_at; partial: idle keys add nothing.
    Index(None, "free_at", postgresql_where=text("free_at IS NOT NULL")),
)

recurring_tasks = Table(
    "pgjobs_recurring_tasks",
    metadata,
    Column("key", Text, primary_key=True),
    Column("schedule", Text, nullable=False),
    Column("class_name", Text),
    Column("command", Text),
    Column("arguments", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("queue_name", Text),
    Column("priority", SmallInteger),
    Column("description", Text),
    Column("static", Boolean, nullable=False, server_default=text("true")),
    Column("missed_policy", Text, nullable=False, server_default=text("'skip'")),
    _now(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

recurring_executions = Table(
    "pgjobs_recurring_executions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("task_key", Text, nullable=False),
    Column("run_at", DateTime(timezone=True), nullable=False),
    Column("job_id", BigInteger),
    Column("manual", Boolean, nullable=False, server_default=text("false")),
    _now(),
    # Exactly once per tick: a second scheduler's insert for the same tick conflicts.
    UniqueConstraint("task_key", "run_at"),
    # "Which task enqueued this job" on the job detail page.
    Index(None, "job_id"),
)

ALL_TABLES = tuple(metadata.sorted_tables)
