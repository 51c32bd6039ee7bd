"""The public surface: ``pgjobs.__all__`` is explicit, complete and importable."""

from __future__ import annotations

import pgjobs


def test_every_exported_name_exists() -> None:
    missing = [name for name in pgjobs.__all__ if not hasattr(pgjobs, name)]
    assert missing == []


def test_the_documented_entry_points_are_exported() -> None:
    expected = {
        "Job", "job", "perform_all_later", "perform_all_later_async", "configure", "migrate",
        "Queue", "FailedJobs", "retry_on", "discard_on", "rescue_from", "subscribe",
        "on_start", "on_worker_start", "schedule_recurring", "unschedule_recurring",
        "clear_finished", "register_type", "PgJobsError", "limit", "unique", "DuplicateJobError",
        "current_job", "JobContextFilter", "register_records", "wrap_jobs",
        "WaitingJobs",
    }  # fmt: skip
    assert expected <= set(pgjobs.__all__)


def test_no_private_names_leak() -> None:
    assert not [n for n in pgjobs.__all__ if n.startswith("_") and n != "__version__"]
    assert len(pgjobs.__all__) == len(set(pgjobs.__all__))
