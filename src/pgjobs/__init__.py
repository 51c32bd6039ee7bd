"""pgjobs: a PostgreSQL-backed background job queue in the style of Solid Queue.

The public API is what ``__all__`` lists; everything else is private and may change.
"""

from __future__ import annotations

from collections.abc import Callable

from pgjobs.db.database import Database
from pgjobs.enqueue.core import perform_all_later, perform_all_later_async
from pgjobs.enqueue.handle import EnqueuedJob
from pgjobs.errors import (
    BatchFinished,
    BatchNotFound,
    ConfigurationError,
    DatabaseError,
    DatabaseNotMigrated,
    DatabaseUnreachable,
    DeserializationError,
    DuplicateJobError,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    JobTimeout,
    PgJobsError,
    ProcessExitError,
    ResultError,
    SerializationError,
    UnknownJobError,
)
from pgjobs.events import Event, on_thread_error, subscribe, unsubscribe
from pgjobs.hooks import (
    on_dispatcher_start,
    on_dispatcher_stop,
    on_scheduler_start,
    on_scheduler_stop,
    on_start,
    on_stop,
    on_worker_start,
    on_worker_stop,
    unwrap_jobs,
    wrap_jobs,
)
from pgjobs.jobs.base import ConfiguredJob, Job, JobFunction, job
from pgjobs.jobs.callbacks import (
    after_enqueue,
    after_perform,
    around_enqueue,
    around_perform,
    before_enqueue,
    before_perform,
)
from pgjobs.jobs.control import Snooze, Step
from pgjobs.jobs.limits import (
    ConcurrencyLimit,
    Ordered,
    RateLimit,
    Uniqueness,
    limit,
    ordered,
    rate_limit,
    unique,
)
from pgjobs.jobs.rules import DiscardRule, RetryRule, discard_on, rescue_from, retry_on
from pgjobs.observability.logging_context import JobContextFilter, current_job
from pgjobs.operations.failed import FailedJob, FailedJobs, JobErrorRecord
from pgjobs.operations.queues import Queue, QueueInfo
from pgjobs.operations.recurring import schedule_recurring, unschedule_recurring
from pgjobs.operations.results import JobInfo, Progress, cancel, get_job, get_job_async
from pgjobs.operations.retention import clear_finished
from pgjobs.operations.waiting import WaitingJobs
from pgjobs.runtime import configure, get_database
from pgjobs.serialization import register_records, register_type
from pgjobs.workflows.builders import Batch, Workflow, batch, chain, workflow
from pgjobs.workflows.info import BatchInfo, Dependency, get_batch, wait_batch

__version__ = "0.1.0.dev0"

__all__ = [
    "Batch",
    "BatchFinished",
    "BatchInfo",
    "BatchNotFound",
    "ConcurrencyLimit",
    "ConfigurationError",
    "ConfiguredJob",
    "Database",
    "DatabaseError",
    "DatabaseNotMigrated",
    "DatabaseUnreachable",
    "Dependency",
    "DeserializationError",
    "DiscardRule",
    "DuplicateJobError",
    "EnqueuedJob",
    "Event",
    "FailedJob",
    "FailedJobs",
    "Job",
    "JobCancelled",
    "JobContextFilter",
    "JobError",
    "JobErrorRecord",
    "JobFailed",
    "JobFunction",
    "JobInfo",
    "JobNotFound",
    "JobTimeout",
    "Ordered",
    "PgJobsError",
    "ProcessExitError",
    "Progress",
    "Queue",
    "QueueInfo",
    "RateLimit",
    "ResultError",
    "RetryRule",
    "SerializationError",
    "Snooze",
    "Step",
    "Uniqueness",
    "UnknownJobError",
    "WaitingJobs",
    "Workflow",
    "__version__",
    "after_enqueue",
    "after_perform",
    "around_enqueue",
    "around_perform",
    "batch",
    "before_enqueue",
    "before_perform",
    "cancel",
    "chain",
    "clear_finished",
    "configure",
    "current_job",
    "discard_on",
    "get_batch",
    "get_database",
    "get_job",
    "get_job_async",
    "job",
    "limit",
    "migrate",
    "on_dispatcher_start",
    "on_dispatcher_stop",
    "on_scheduler_start",
    "on_scheduler_stop",
    "on_start",
    "on_stop",
    "on_thread_error",
    "on_worker_start",
    "on_worker_stop",
    "ordered",
    "perform_all_later",
    "perform_all_later_async",
    "rate_limit",
    "register_records",
    "register_type",
    "rescue_from",
    "retry_on",
    "schedule_recurring",
    "subscribe",
    "unique",
    "unschedule_recurring",
    "unsubscribe",
    "unwrap_jobs",
    "wait_batch",
    "workflow",
    "wrap_jobs",
]


def migrate(
    url: str,
    *,
    schema: str | None = None,
    revision: str = "heads",
    step: Callable[[str], None] | None = None,
) -> None:
    """Upgrade the pgjobs tables at ``url`` to ``revision`` (default: the latest); see
    :func:`pgjobs.db.migrate.migrate`.  Imports alembic and SQLAlchemy only when called: a
    process that runs jobs never needs them (~40 MiB)."""
    from pgjobs.db import migrate as migrations

    migrations.migrate(url, schema=schema, revision=revision, step=step)
