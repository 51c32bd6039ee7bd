"""The chaos suite: three hosts, one PostgreSQL, N minutes of faults, then the checks.

Skipped unless ``--chaos-minutes N`` (or ``PGJOBS_CHAOS_MINUTES``) is given; see conftest.py.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.cluster import ROOT
from tests.chaos.conftest import chaos_option

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc"),
]


def test_no_job_is_lost_or_run_twice_at_once_under_chaos(
    request: pytest.FixtureRequest, make_database: Callable[[], str]
) -> None:
    minutes = float(chaos_option(request.config, "minutes") or 1)
    seed_option = chaos_option(request.config, "seed")
    seed = int(seed_option) if seed_option is not None else random.SystemRandom().randrange(10**6)
    print(f"chaos: seed {seed}, {minutes} minutes (rerun with --chaos-seed {seed})")
    directory = ROOT / ".pgjobs" / f"chaos-{os.getpid()}"
    from tests.chaos.run import run_chaos  # imported here: a skipped run registers no jobs

    summary, violations = run_chaos(minutes, seed, directory, make_database())
    text = json.dumps(summary, indent=2)
    print(text)
    report = chaos_option(request.config, "report")
    if report:
        Path(report).write_text(text + "\n")
    assert not violations, (
        f"{len(violations)} violations (seed {seed}): {summary['violations_by_check']};"
        f" first: {[v.message for v in violations[:5]]}"
    )
