"""Options of the chaos suite; its tests are skipped unless a duration is given.

    scripts/test tests/chaos --chaos-minutes 1          # CI
    scripts/test tests/chaos --chaos-minutes 30 --chaos-seed 7 --chaos-report run.json

Each option has an environment variable too: ``PGJOBS_CHAOS_MINUTES``, ``PGJOBS_CHAOS_SEED``,
``PGJOBS_CHAOS_REPORT`` (the file the JSON summary is written to).
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "pgjobs chaos suite")
    group.addoption("--chaos-minutes", type=float, help="run the chaos suite for N minutes")
    group.addoption("--chaos-seed", type=int, help="seed of the fault driver (default: random)")
    group.addoption("--chaos-report", help="write the chaos run's summary as JSON to this file")


def chaos_option(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"--chaos-{name}", default=None)
    if value is None:
        value = os.environ.get(f"PGJOBS_CHAOS_{name.upper()}") or None
    return None if value is None else str(value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    minutes = chaos_option(config, "minutes")
    for item in items:
        if item.get_closest_marker("chaos") is None:
            continue
        if minutes is None:
            item.add_marker(pytest.mark.skip(reason="chaos suite: give --chaos-minutes N"))
        else:  # the run, the drain, start-up and shut-down
            item.add_marker(pytest.mark.timeout(float(minutes) * 60 + 420))
