"""``pgjobs cancel``, ``pgjobs jobs cancel`` and what ``pgjobs jobs show|list`` say about a job's
control state (result, progress, steps, cancellation)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import pgjobs
from pgjobs.db.database import Database
from tests import engine_helpers
from tests.control_jobs import Cooperative
from tests.engine_helpers import config_file, log_lines, pgjobs_start, wait_for
from tests.sample_jobs import Record
from tests.web_helpers import set_control

pytestmark = pytest.mark.committed


def pgjobs_cli(db: Database, *argv: str) -> int:
    return engine_helpers.pgjobs_cli(db.url, *argv)


def _sql(db: Database, statement: str, *params: object) -> None:
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(statement, list(params))


def _run(db: Database, job_id: uuid.UUID) -> None:
    """The job as a worker holds it: its ready row moved to claimed."""
    _sql(
        db,
        "WITH r AS (DELETE FROM pgjobs_ready_executions WHERE job_id = "
        "(SELECT id FROM pgjobs_jobs WHERE job_id = %s) RETURNING job_id) "
        "INSERT INTO pgjobs_claimed_executions (job_id, process_id) SELECT job_id, 0 FROM r",
        job_id,
    )


def _finish(db: Database, job_id: uuid.UUID, result: object = None) -> None:
    _sql(
        db,
        "WITH r AS (DELETE FROM pgjobs_ready_executions WHERE job_id = "
        "(SELECT id FROM pgjobs_jobs WHERE job_id = %s) RETURNING job_id) "
        "UPDATE pgjobs_jobs SET finished_at = now(), executions = 1 WHERE id IN (SELECT * FROM r)",
        job_id,
    )
    if result is not None:
        with psycopg.connect(db.url, autocommit=True) as conn:
            set_control(conn, job_id, result=result)


def _fail(db: Database, job_id: uuid.UUID) -> None:
    _sql(
        db,
        "WITH r AS (DELETE FROM pgjobs_ready_executions WHERE job_id = "
        "(SELECT id FROM pgjobs_jobs WHERE job_id = %s) RETURNING job_id), "
        "e AS (INSERT INTO pgjobs_job_errors (job_id, attempt, exception_class, message, "
        "backtrace) SELECT job_id, 1, 'app.GatewayError', 'card declined', "
        "'Traceback (most recent call last):\n  File \"pay.py\", line 9' FROM r) "
        "INSERT INTO pgjobs_failed_executions (job_id, exception_class, message, backtrace, "
        "attempt) SELECT job_id, 'app.GatewayError', 'card declined', "
        "'Traceback (most recent call last):\n  File \"pay.py\", line 9', 1 FROM r",
        job_id,
    )


# -- pgjobs cancel ---------------------------------------------------------------------------------


def test_cancel_waiting_running_and_ended_jobs(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = Record.perform_later("r").job_id
    later = Record.set(wait=3600).perform_later("s").job_id
    running = Record.perform_later("c").job_id
    _run(db, running)
    done = Record.perform_later("d").job_id
    _finish(db, done)
    failed = Record.perform_later("f").job_id
    _fail(db, failed)

    assert pgjobs_cli(db, "cancel", str(ready), str(later), str(running)) == 0
    assert capsys.readouterr().out == (
        f"{ready}: cancelled\n{later}: cancelled\n{running}: cancelling (running; asked to stop)\n"
    )
    assert [pgjobs.get_job(j).state for j in (ready, later, running)] == [
        "cancelled", "cancelled", "running"
    ]  # fmt: skip
    asked = pgjobs.get_job(running).cancel_requested_at
    assert asked is not None

    # Again: the cancelled ones say so (exit 1, like discarding a discarded job); the running
    # one is asked again, its first request kept.
    assert pgjobs_cli(db, "cancel", str(ready), str(running)) == 1
    assert capsys.readouterr().out == (
        f"{ready}: already cancelled\n{running}: cancelling (running; asked to stop)\n"
    )
    assert pgjobs.get_job(running).cancel_requested_at == asked

    assert pgjobs_cli(db, "cancel", str(done), str(failed)) == 1
    assert capsys.readouterr().out == (
        f"{done}: finished: not cancelled\n{failed}: failed: not cancelled\n"
    )
    assert pgjobs.get_job(done).state == "finished" and pgjobs.get_job(failed).state == "failed"


def test_cancel_unknown_ids_and_json(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    ready = Record.perform_later("r").job_id
    done = Record.perform_later("d").job_id
    _finish(db, done)
    nobody = uuid.UUID(int=0)
    # An unknown id: the others are acted on, exit 2, and the id is named on stderr.
    assert pgjobs_cli(db, "cancel", str(nobody), str(ready), str(done)) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{nobody}: no such job", f"{ready}: cancelled", f"{done}: finished: not cancelled"
    ]  # fmt: skip
    assert captured.err == f"pgjobs: error: no job {nobody} (never enqueued, or cleared)\n"
    # Not a UUID: refused before anything is done, like any bad argument.
    later = Record.set(wait=60).perform_later("s").job_id
    with pytest.raises(SystemExit) as exited:
        pgjobs_cli(db, "cancel", str(later), "nope")
    assert exited.value.code == 2
    assert "argument JOB_ID: 'nope' is not a job id (a UUID)" in capsys.readouterr().err
    assert pgjobs.get_job(later).state == "scheduled"

    assert pgjobs_cli(db, "cancel", str(later), str(ready), str(nobody), "--json") == 2
    assert json.loads(capsys.readouterr().out) == [
        {"job_id": str(later), "outcome": "cancelled"},
        {"job_id": str(ready), "outcome": "already_cancelled"},
        {"job_id": str(nobody), "outcome": "not_found"},
    ]


# -- pgjobs jobs cancel --------------------------------------------------------------------------


def test_jobs_cancel_in_bulk_and_by_id(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    mail = [Record.set(queue="mail").perform_later(f"m{i}").job_id for i in range(3)]
    other = Record.perform_later("o").job_id
    running = [Record.perform_later(f"run {word}").job_id for word in ("report", "send")]
    for job_id in running:
        _run(db, job_id)

    assert pgjobs_cli(db, "jobs", "cancel", "--all", "--state", "ready", "--queue", "mail") == 0
    assert capsys.readouterr().out == "cancelled 3 ready jobs\n"
    assert {pgjobs.get_job(j).state for j in mail} == {"cancelled"}
    assert pgjobs.get_job(other).state == "ready"

    argv = ("jobs", "cancel", "--all", "--state", "running", "--text", "report")
    assert pgjobs_cli(db, *argv) == 0
    assert capsys.readouterr().out == "asked 1 running job to stop\n"
    requested = [pgjobs.get_job(j).cancel_requested_at is not None for j in running]
    assert requested == [True, False]

    assert pgjobs_cli(db, "jobs", "cancel", str(other), str(running[1]), "--json") == 0
    assert json.loads(capsys.readouterr().out) == [
        {"job_id": str(other), "outcome": "cancelled"},
        {"job_id": str(running[1]), "outcome": "cancelling"},
    ]
    assert pgjobs_cli(db, "jobs", "cancel", "--all", "--state", "ready") == 0
    assert capsys.readouterr().out == "cancelled 0 ready jobs\n"

    assert pgjobs_cli(db, "jobs", "cancel", "--all") == 1
    assert "give --state ready, scheduled, blocked or running" in capsys.readouterr().out
    assert pgjobs_cli(db, "jobs", "cancel", str(other), "--state", "running") == 1
    assert "--state and filters go with --all" in capsys.readouterr().out
    assert pgjobs_cli(db, "jobs", "cancel") == 1
    assert "give JOB_IDs or --all" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        pgjobs_cli(db, "jobs", "cancel", "not-a-uuid")
    assert "'not-a-uuid' is not a job id" in capsys.readouterr().err


# -- what jobs show and jobs list say ------------------------------------------------------------


def test_jobs_show_a_running_job(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    job_id = Record.perform_later("import").job_id
    _run(db, job_id)
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with psycopg.connect(db.url, autocommit=True) as conn:
        set_control(
            conn,
            job_id,
            progress={"done": 40, "total": 100, "message": "item 40", "at": at.isoformat()},
            checkpoint={"completed": ["fetch", "parse"], "step": "load", "cursor": ("row", 399)},
            cancel_requested_at=at + timedelta(seconds=5),
        )
    assert pgjobs_cli(db, "jobs", "show", str(job_id)) == 0
    lines = capsys.readouterr().out.splitlines()
    for expected in (
        "state                running",
        'arguments            {"args": ["import"], "kwargs": {}}',
        "attempts             0",
        "progress             40/100 (40%) item 40, updated 2026-03-01T12:00:00+00:00",
        "steps completed      fetch, parse",
        "step                 load",
        "cursor               ('row', 399)",
        "cancel requested at  2026-03-01T12:00:05+00:00",
    ):
        assert expected in lines, (expected, lines)
    assert not any(line.startswith(("result", "cancelled at", "finished at")) for line in lines)

    assert pgjobs_cli(db, "jobs", "show", str(job_id), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "running" and shown["arguments"] == {"args": ["import"], "kwargs": {}}
    assert shown["progress"] == {
        "done": 40, "total": 100, "percent": 40.0, "message": "item 40",
        "updated_at": "2026-03-01T12:00:00+00:00",
    }  # fmt: skip
    assert (shown["steps_completed"], shown["step"]) == (["fetch", "parse"], "load")
    assert shown["cursor"] == "('row', 399)"
    assert shown["cancel_requested_at"] == "2026-03-01T12:00:05+00:00"
    assert shown["cancelled_at"] is None and shown["result"] is None and shown["errors"] == []


def test_jobs_show_ended_jobs(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    done = Record.perform_later("d").job_id
    _finish(db, done, result={"rows": 3, "on": datetime(2026, 1, 2, tzinfo=UTC).date()})
    big = Record.perform_later("b").job_id
    _finish(db, big, result="x" * 5000)
    failed = Record.perform_later("f").job_id
    _fail(db, failed)
    cancelled = Record.perform_later("c").job_id
    assert pgjobs.cancel(cancelled) == "cancelled"

    assert pgjobs_cli(db, "jobs", "show", str(done)) == 0
    out = capsys.readouterr().out
    assert "state                finished\n" in out
    assert "result               {'on': datetime.date(2026, 1, 2), 'rows': 3}\n" in out
    assert pgjobs_cli(db, "jobs", "show", str(big), "--json") == 0
    result = json.loads(capsys.readouterr().out)["result"]
    assert len(result) == 500 and result.startswith("'xxx") and result.endswith("x…")

    assert pgjobs_cli(db, "jobs", "show", str(failed)) == 0
    out = capsys.readouterr().out
    assert "state                failed\n" in out
    assert "error class          app.GatewayError\nerror message        card declined\n" in out
    assert 'Traceback (most recent call last):\n  File "pay.py", line 9\n' in out
    assert "error history (1):\n  attempt   1  " in out and "app.GatewayError: card declined" in out

    assert pgjobs_cli(db, "jobs", "show", str(cancelled), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "cancelled" and shown["cancelled_at"] is not None
    assert shown["cancelled_at"] == shown["finished_at"] == shown["cancel_requested_at"]

    # A result this process cannot decode says why instead.
    _sql(db, """UPDATE pgjobs_jobs SET result = '{"__pgjobs__": "martian"}' WHERE job_id = %s""",
         done)  # fmt: skip
    assert pgjobs_cli(db, "jobs", "show", str(done)) == 0
    assert "result               <cannot be decoded here: unknown tag 'martian'" in (
        capsys.readouterr().out
    )


def test_jobs_list_shows_the_progress_of_running_jobs(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    counted, silent = Record.perform_later("a").job_id, Record.perform_later("b").job_id
    for job_id in (counted, silent):
        _run(db, job_id)
    with psycopg.connect(db.url, autocommit=True) as conn:
        set_control(conn, counted, progress={"done": 3, "total": 4, "message": "rows", "at": None},
                    cancel_requested_at=datetime.now(UTC))  # fmt: skip
    assert pgjobs_cli(db, "jobs", "list", "--state", "in_progress") == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines[0].endswith(Record.job_name)  # the newest first: no progress
    assert lines[1].endswith(f"{Record.job_name}  [3/4 (75%) rows]  stopping")
    assert pgjobs_cli(db, "jobs", "list", "--state", "in_progress", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["progress"] for row in listed] == [
        None, {"done": 3, "total": 4, "percent": 75.0, "message": "rows", "updated_at": None}
    ]  # fmt: skip
    assert listed[0]["cancel_requested_at"] is None and listed[1]["cancel_requested_at"]
    # A job may report progress(None): no progress shown, and no traceback.
    with psycopg.connect(db.url, autocommit=True) as conn:
        set_control(conn, counted, progress={"done": None, "total": 4, "message": None, "at": None})
    assert pgjobs_cli(db, "jobs", "show", str(counted), "--json") == 0
    assert json.loads(capsys.readouterr().out)["progress"] is None


# -- end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_cancel_a_job_a_real_worker_runs(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    job_id = Cooperative.perform_later("coop").job_id
    with pgjobs_start(db.url, config_file(tmp_path), log):
        wait_for(lambda: "coop start" in log_lines(log), timeout=20)
        done = subprocess.run(
            [sys.executable, "-m", "pgjobs", "cancel", str(job_id), "--database-url", db.url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (
            0,
            f"{job_id}: cancelling (running; asked to stop)\n",
        )
        wait_for(lambda: pgjobs.get_job(job_id).state == "cancelled", timeout=10)
    assert log_lines(log) == ["coop start", "coop after_cancel"]
    info = pgjobs.get_job(job_id)
    assert info.attempts == 1 and info.cancelled_at is not None
