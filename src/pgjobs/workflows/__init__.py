"""Batches and workflows: groups of jobs with callbacks, chains and dependencies
(docs/workflows.md).  The state lives in ``pgjobs_batches``, ``pgjobs_held_executions`` and
``pgjobs_job_dependencies``; the triggers of migration 0007 change it in the statement that ends
each job."""
