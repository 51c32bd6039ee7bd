"""examples/django runs: migrate, the transactional view, `manage.py pgjobs start`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.engine_helpers import ROOT

pytest.importorskip("django")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_django_example_confirms_its_orders(make_database: Callable[[], str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGJOBS_", "DJANGO_"))}
    env.update(DATABASE_URL=make_database(), DEMO_SECONDS="90")
    done = subprocess.run(
        [sys.executable, "demo.py"],
        check=False,
        cwd=ROOT / "examples" / "django",
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "card=declined -> 402" in output
    assert "orders in the database: 2" in output
    assert output.count(": confirmed") == 2, output
