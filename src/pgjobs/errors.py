"""The pgjobs exception tree.

Every error pgjobs raises derives from :class:`PgJobsError`; a docstring is the default message::

    PgJobsError
    ├── ConfigurationError          bad queue.yml / recurring.yml / arguments to pgjobs
    ├── DatabaseError               the database could not be used
    │   ├── DatabaseUnreachable     no server answers at the configured URL
    │   └── DatabaseNotMigrated     the pgjobs tables are missing or out of date
    ├── SerializationError          a job argument cannot be stored as JSON
    ├── DeserializationError        a stored argument cannot be turned back into Python
    ├── UnknownJobError             no job class is registered under a stored name
    ├── DuplicateJobError           a unique job's key is held (``on_conflict="raise"``)
    ├── JobNotFound                 no job has this id (``get_job``, ``cancel``, ``result``)
    ├── BatchNotFound               no batch or workflow has this id (``get_batch``)
    ├── BatchFinished               jobs added to a batch whose jobs have all ended
    ├── JobFailed                   ``result()``: the job failed for good (error class, message,
    │                               traceback)
    ├── JobCancelled                the job was cancelled: ``result()`` raises it to a waiter, and
    │                               ``check_cancelled()`` raises it inside the job
    └── JobError                    base for failures recorded *on a job* (never raised in callers)
        ├── JobTimeout              the job ran longer than its timeout
        ├── ProcessExitError        the process running the job died (recorded on recovery)
        └── ResultError             the job's return value cannot be stored (too large, or not
                                    serializable)

Database errors are wrapped at the boundary with ``raise ... from exc`` so the original driver
exception stays available as ``__cause__``.
"""

from __future__ import annotations


class PgJobsError(Exception):
    """An error in pgjobs."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class ConfigurationError(PgJobsError):
    """The pgjobs configuration is invalid."""

    def __init__(self, message: str | None = None, *, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if message is None and self.problems:
            message = "\n".join(self.problems)
        super().__init__(message)


class DatabaseError(PgJobsError):
    """The database could not be used."""


class DatabaseUnreachable(DatabaseError):
    """No PostgreSQL server answers at the configured database URL."""


class DatabaseNotMigrated(DatabaseError):
    """The pgjobs tables are missing or out of date: run `pgjobs migrate`."""


class SerializationError(PgJobsError, TypeError):
    """A job argument cannot be stored as JSON."""


class DeserializationError(PgJobsError):
    """A stored job argument cannot be turned back into Python."""


class UnknownJobError(PgJobsError):
    """No job class is registered under the stored name."""


class DuplicateJobError(PgJobsError):
    """A job with the same unique key is already waiting or running."""

    def __init__(self, existing_job_id: object, unique_key: str | None) -> None:
        self.existing_job_id = existing_job_id
        self.unique_key = unique_key
        holder = f"job {existing_job_id}" if existing_job_id is not None else "another job"
        super().__init__(f"{holder} holds the unique key {unique_key!r}")


class JobNotFound(PgJobsError):
    """No job has this id (it never existed, or finished jobs were cleared)."""


class BatchNotFound(PgJobsError):
    """No batch or workflow has this id (it never existed, or it was cleared)."""


class BatchFinished(PgJobsError):
    """Jobs cannot be added to a batch whose jobs have all ended (its on_finish callback has
    been written): add them from one of its jobs while it runs, or before the batch is written."""


class JobFailed(PgJobsError):
    """The job failed for good: ``error_class``, ``message`` and ``traceback`` are its last
    error's; ``state`` is ``"failed"``, or ``"discarded"`` when a ``discard_on`` rule or an
    operator gave it up."""

    def __init__(
        self,
        job_id: object,
        error_class: str | None,
        message: str | None,
        traceback: str | None,
        state: str = "failed",
    ) -> None:
        self.job_id = job_id
        self.error_class = error_class
        self.message = message
        self.traceback = traceback
        self.state = state
        error = f": {error_class}: {message}" if error_class else ""
        super().__init__(f"job {job_id} {state}{error}")


class JobCancelled(PgJobsError):
    """The job was cancelled.  ``job_id``: which job (``None`` when raised by a job about itself
    without saying); a job that raises it about itself ends as cancelled."""

    def __init__(self, message: str | None = None, *, job_id: object = None) -> None:
        self.job_id = job_id
        super().__init__(message)


class JobError(PgJobsError):
    """A failure recorded on a job rather than raised to a caller."""


class JobTimeout(JobError):
    """The job ran longer than its timeout."""


class ProcessExitError(JobError):
    """The process running the job exited before the job finished."""


class ResultError(JobError):
    """The job's return value could not be stored (not serializable, or too large): raised by
    ``result()``; the job itself finished."""
