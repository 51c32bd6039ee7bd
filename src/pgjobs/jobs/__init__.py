"""Defining jobs: the :class:`~pgjobs.jobs.base.Job` class and the ``@job`` decorator
(:mod:`~pgjobs.jobs.base`), their callbacks, error rules, concurrency limits and unique keys,
and what a job can do while it runs (:mod:`~pgjobs.jobs.control`).

The public names are re-exported by :mod:`pgjobs`; import from there.
"""
