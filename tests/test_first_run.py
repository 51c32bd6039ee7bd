"""The first ten minutes with pgjobs (issue 23), as a newcomer goes through them: the embedded
server found from a subdirectory of the project and named on stderr, stopped quietly, all of a
project's servers stopped at once, and the demo's counts that say which jobs are this run's.

Each test runs real ``pgjobs`` processes (and real embedded servers, under the repository's
``.pgjobs/``: as root, pgserver runs PostgreSQL as another user, who cannot enter pytest's
``/tmp/pytest-of-root``).  Not tested here: ``scripts/demo``'s first run, which creates ``.venv``
and installs pgjobs into it (a minute or more).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgjobs.db.migrate import migrate
from tests.engine_helpers import ROOT

pytestmark = pytest.mark.slow


def pgjobs(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "default", "-m", "pgjobs", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def newcomer() -> dict[str, str]:
    """The environment of someone who named no database and no embedded directory, and whose
    session has no XDG_RUNTIME_DIR (as under sudo, su or cron)."""
    unset = ("XDG_RUNTIME_DIR", "PGJOBS_EMBEDDED_DIR", "PGJOBS_CONFIG", "PGJOBS_SCHEMA")
    return {
        k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and k not in unset
    }


@pytest.fixture
def project() -> Iterator[Path]:
    """A new project (its pyproject.toml) with a package directory, its servers stopped and its
    directory removed afterwards."""
    pytest.importorskip("pgserver", reason="the embedded server has no wheel for this Python")
    from pgjobs.db import embedded

    path = ROOT / ".pgjobs" / f"first-run-{os.getpid()}" / "shop"
    (path / "shop" / "billing").mkdir(parents=True)
    (path / "pyproject.toml").write_text('[project]\nname = "shop"\n')
    try:
        yield path
    finally:
        for directory in embedded.servers(path):
            embedded.stop(directory)
        shutil.rmtree(path.parent, ignore_errors=True)


def test_the_projects_server_is_used_and_named_from_a_subdirectory(project: Path) -> None:
    deep = project / "shop" / "billing"
    done = pgjobs("status", cwd=deep, env=newcomer())
    assert done.returncode == 0, done.stdout + done.stderr
    data = project / ".pgjobs" / "pgdata"
    assert f"pgjobs: using the embedded PostgreSQL in {data} (" in done.stderr
    assert not (deep / ".pgjobs").exists()  # no second, empty server where the command ran
    # The same server from the project's directory: status prints its URL.
    done = pgjobs("embedded", "status", cwd=project, env=newcomer())
    assert done.stdout.startswith("running (pid") and f"host={data}" in done.stdout
    # Stopping it prints one line, and no warning about XDG_RUNTIME_DIR (warnings shown: -W).
    done = pgjobs("embedded", "stop", cwd=deep, env=newcomer())
    assert done.returncode == 0
    assert done.stdout == f"stopped the embedded PostgreSQL in {data}\n"
    assert done.stderr == ""


def test_embedded_stop_all_stops_every_server_of_the_project(project: Path) -> None:
    from pgjobs.db import embedded

    own, tests = project / ".pgjobs", project / ".pgjobs" / "test"
    for directory in (own, tests):
        embedded.start(directory)
    assert embedded.running_pid(own) and embedded.running_pid(tests)
    done = pgjobs("embedded", "stop", "--all", cwd=project / "shop", env=newcomer())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"stopped: the embedded PostgreSQL in {own / 'pgdata'}",
        f"stopped: the embedded PostgreSQL in {tests / 'pgdata'}",
    ]
    assert embedded.running_pid(own) is None and embedded.running_pid(tests) is None
    assert "XDG_RUNTIME_DIR" not in done.stderr
    done = pgjobs("embedded", "stop", "--all", cwd=project, env=newcomer())
    assert done.stdout.count("not running: ") == 2


def test_the_demo_counts_this_runs_jobs_and_the_ones_kept_from_earlier_runs(
    make_database: Callable[[], str],
) -> None:
    url = make_database()
    migrate(url)
    env = {**newcomer(), "PGJOBS_DATABASE_URL": url, "DEMO_SECONDS": "2"}
    summaries = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "pgjobs.cli.demo"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        summaries += [line for line in done.stdout.splitlines() if "this run's jobs" in line]
    first, second = summaries
    # 25 jobs per run (3 greetings, a delayed one, 20 reports, one that fails on purpose)
    assert re.fullmatch(r"pgjobs demo: this run's jobs by state: .*failed 1.*", first)
    assert "earlier runs" not in first
    kept = re.search(r"\((\d+) more from earlier runs are kept\)$", second)
    assert kept is not None, second
    assert int(kept.group(1)) >= 25  # the first run's (and its recurring task's, if it ticked)
    counted = sum(int(n) for n in re.findall(r"\b(\d+)\b", second.split(":", 1)[1].split("(")[0]))
    assert counted >= 25
