"""pytest fixtures for :mod:`pgjobs.testing`.

Enable them in your root ``conftest.py``::

    pytest_plugins = ["pgjobs.pytest_plugin"]

- ``pgjobs_capture``: a capturing :class:`~pgjobs.testing.TestAdapter`, installed for the test.
- ``pgjobs_inline``: an inline :class:`~pgjobs.testing.TestAdapter` (jobs run when enqueued).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgjobs.testing import TestAdapter, capture_jobs, inline_jobs

__all__ = ["pgjobs_capture", "pgjobs_inline"]


@pytest.fixture
def pgjobs_capture() -> Iterator[TestAdapter]:
    """Jobs enqueued during the test are recorded, not stored or run."""
    with capture_jobs() as adapter:
        yield adapter


@pytest.fixture
def pgjobs_inline() -> Iterator[TestAdapter]:
    """Jobs enqueued during the test are performed at once."""
    with inline_jobs() as adapter:
        yield adapter
