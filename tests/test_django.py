"""The Django integration's tests (tests/django), run in a pytest of their own.

pytest-django is disabled in this suite (``-p no:django`` in pyproject.toml: its ``db`` fixture
would replace this suite's), so the Django tests run in a subprocess with tests/django/pytest.ini,
where it is active; a failure shows their output.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.engine_helpers import ROOT

pytest.importorskip("django")
pytest.importorskip("pytest_django")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_django_integration_suite_passes(server_url: str) -> None:
    env = {**os.environ, "PGJOBS_TEST_DATABASE_URL": server_url}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/django"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
