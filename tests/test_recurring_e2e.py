"""Recurring tasks through `pgjobs start`: three supervisors, one job per tick; the CLI."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from pgjobs.db.database import Database
from tests.engine_helpers import ROOT, config_file, pgjobs_start, scalar, states, wait_for

pytestmark = [pytest.mark.committed, pytest.mark.slow]

EVERY_SECOND = """
tick:
  class: tests.sample_jobs:Stamp
  schedule: every second
"""


def test_three_supervisors_enqueue_exactly_one_job_per_tick(db: Database, tmp_path: Path) -> None:
    recurring = tmp_path / "recurring.yml"
    recurring.write_text(EVERY_SECOND)
    config = config_file(tmp_path)
    with ExitStack() as stack:
        procs = [
            stack.enter_context(
                pgjobs_start(
                    db.url, config, tmp_path / f"log{i}", "--recurring-schedule", str(recurring)
                )
            )
            for i in range(3)
        ]
        wait_for(
            lambda: (
                scalar(db.url, "SELECT count(*) FROM pgjobs_processes WHERE kind = 'scheduler'")
                == 3
            )
        )
        time.sleep(7)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=15) == 0
    with psycopg.connect(db.url) as conn:
        runs = [r[0] for r in conn.execute(
            "SELECT run_at FROM pgjobs_recurring_executions WHERE task_key = 'tick' ORDER BY run_at"
        )]  # fmt: skip
        jobs = conn.execute(
            "SELECT count(*) FROM pgjobs_jobs WHERE class_name = 'tests.sample_jobs:Stamp'"
        ).fetchone()
    assert len(runs) >= 5
    assert jobs == (len(runs),)  # one job per recorded tick, none for the losers
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(runs))
    assert set(states(db.url)) <= {"finished", "ready", "claimed"}


def test_recurring_cli_lists_and_runs_tasks(db: Database, tmp_path: Path) -> None:
    recurring = tmp_path / "recurring.yml"
    recurring.write_text(EVERY_SECOND.replace("every second", "every day at 3am"))
    with pgjobs_start(
        db.url, config_file(tmp_path), tmp_path / "log", "--recurring-schedule", str(recurring)
    ) as proc:
        deadline = time.monotonic() + 20
        while scalar(db.url, "SELECT count(*) FROM pgjobs_recurring_tasks") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pgjobs", "recurring", *args, "--database-url", db.url],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "tick" in cli("list") and "every day at 3am" in cli("list")
    assert "enqueued tick" in cli("run", "tick")
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_recurring_executions WHERE manual") == 1
