"""A real ``pgjobs start``: the application's own log lines inside ``perform`` carry the job."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from pgjobs.db.database import Database
from tests.engine_helpers import config_file, log_lines, pgjobs_start, wait_for
from tests.sample_jobs import AsyncLogsThroughTheApp, LogsThroughTheApp

pytestmark = [pytest.mark.committed, pytest.mark.slow]


def run(db: Database, tmp_path: Path, *args: str) -> tuple[list[Any], list[str]]:
    """Run both jobs under ``pgjobs start *args``; returns their handles and the output lines."""
    log = tmp_path / "log"
    jobs = [LogsThroughTheApp.perform_later("hello"), AsyncLogsThroughTheApp.perform_later("hi")]
    with pgjobs_start(db.url, config_file(tmp_path), log, *args) as proc:
        wait_for(lambda: sum(line.endswith(" logged") for line in log_lines(log)) == 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    return jobs, log.with_suffix(".out").read_text().splitlines()


def test_json_lines_from_the_applications_logger_carry_the_job(
    db: Database, tmp_path: Path
) -> None:
    (sync, async_), output = run(db, tmp_path, "--log-format", "json", "--log-level", "debug")
    lines = [json.loads(line) for line in output if line.startswith("{")]
    app = {line["message"]: line for line in lines if line["logger"] == "tests.app"}
    for job, message in ((sync, "app says hello"), (async_, "async app says hi")):
        line = app[message]
        assert line["level"] == "info"
        assert (line["job_id"], line["job_class"], line["queue"], line["attempt"]) == (
            str(job.job_id),
            job.class_name,
            "reports",
            1,
        )
    # pgjobs' own lines during the job get the fields too (its events name the class "class").
    (start,) = [
        line
        for line in lines
        if line.get("event") == "perform_start" and line["job_id"] == str(sync.job_id)
    ]
    assert (start["job_class"], start["attempt"]) == (sync.class_name, 1)
    # The supervisor runs no job: its lines are unchanged.
    supervisor = [line for line in lines if line["message"].startswith("supervisor: started")]
    assert supervisor and all("job_id" not in line for line in supervisor)


def test_text_lines_from_the_applications_logger_show_the_job_id(
    db: Database, tmp_path: Path
) -> None:
    (sync, async_), output = run(db, tmp_path)
    (hello,) = [line for line in output if line.endswith("app says hello")]
    assert " INFO tests.app[" in hello and f"] [job {sync.job_id}] app says hello" in hello
    (hi,) = [line for line in output if line.endswith("async app says hi")]
    assert f"[job {async_.job_id}] async app says hi" in hi
    pgjobs_lines = [line for line in output if " pgjobs[" in line]
    assert pgjobs_lines and not any("[job " in line for line in pgjobs_lines)
