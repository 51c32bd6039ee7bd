"""``pgjobs jobs list|show|discard|dispatch``, and the progress of long operator commands on a
terminal (``pgjobs.cli.progress``: drawn only when stderr is a TTY)."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys

import psycopg
import pytest

import pgjobs
from pgjobs.cli.progress import Progress
from pgjobs.db.database import Database
from tests import engine_helpers
from tests.engine_helpers import states
from tests.sample_jobs import OneAtATime, Record

pytestmark = pytest.mark.committed


def pgjobs_cli(db: Database, *argv: str) -> int:
    return engine_helpers.pgjobs_cli(db.url, *argv)


def test_jobs_list_and_show(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    ready = Record.perform_later("hello")
    scheduled = Record.set(wait=3600, queue="later").perform_later("x")
    holder = OneAtATime.perform_later()
    blocked = OneAtATime.perform_later()
    assert pgjobs_cli(db, "jobs", "list") == 0
    out = capsys.readouterr().out
    assert str(ready.job_id) in out and str(holder.job_id) in out
    assert str(scheduled.job_id) not in out
    assert pgjobs_cli(db, "jobs", "list", "--state", "scheduled", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [j["job_id"] for j in listed] == [str(scheduled.job_id)]
    assert pgjobs_cli(db, "jobs", "list", "--text", "hello", "--json") == 0
    assert [j["job_id"] for j in json.loads(capsys.readouterr().out)] == [str(ready.job_id)]
    assert pgjobs_cli(db, "jobs", "list", "--state", "blocked", "--queue", "none") == 0
    assert "(no blocked jobs)" in capsys.readouterr().out

    assert pgjobs_cli(db, "jobs", "show", str(blocked.job_id), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "blocked"
    assert shown["waiting_for"]["limit"] == 1 and shown["waiting_for"]["slots_taken"] == 1
    assert pgjobs_cli(db, "jobs", "show", str(scheduled.job_id)) == 0
    out = capsys.readouterr().out
    assert "waiting for" in out and "scheduled at" in out
    assert pgjobs_cli(db, "jobs", "show", "00000000-0000-0000-0000-000000000000") == 1
    assert "no job" in capsys.readouterr().err
    assert pgjobs_cli(db, "jobs", "show", "nope") == 1
    assert "is not a job id" in capsys.readouterr().out


def test_jobs_list_has_the_dashboards_error_and_process_filters(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.web_helpers import add_job, add_process

    with db.connection() as conn:
        _, gateway = add_job(conn, "failed", error="shop.payments.GatewayError")
        _, other = add_job(conn, "failed", error="shop.mail.SmtpError")
        one, two = add_process(conn), add_process(conn)
        _, mine = add_job(conn, "in_progress", process_id=one)
        _, theirs = add_job(conn, "in_progress", process_id=two)

    def listed(*argv: str) -> list[str]:
        assert pgjobs_cli(db, "jobs", "list", *argv, "--json") == 0
        return [job["job_id"] for job in json.loads(capsys.readouterr().out)]

    # As on the dashboard: the exception's full name, or its last dotted parts.
    assert listed("--state", "failed") == [str(other), str(gateway)]
    assert listed("--state", "failed", "--error", "GatewayError") == [str(gateway)]
    assert listed("--state", "failed", "--error", "payments.GatewayError") == [str(gateway)]
    assert listed("--state", "failed", "--error", "shop.mail.SmtpError") == [str(other)]
    assert listed("--state", "failed", "--error", "Gateway") == []
    assert listed("--state", "in_progress") == [str(theirs), str(mine)]
    assert listed("--state", "in_progress", "--process", str(one)) == [str(mine)]
    assert pgjobs_cli(db, "jobs", "list", "--error", "GatewayError") == 1
    assert "--error goes with --state failed" in capsys.readouterr().out
    assert pgjobs_cli(db, "jobs", "list", "--state", "failed", "--process", str(one)) == 1
    assert "--process goes with --state in_progress" in capsys.readouterr().out


def test_jobs_list_pages_failed_jobs_too(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    """The failed list is ordered by failure time: its cursor is that time and the id."""
    from tests.web_helpers import add_job

    with db.connection() as conn:
        failed = [add_job(conn, "failed")[1] for _ in range(3)]
    assert pgjobs_cli(db, "jobs", "list", "--state", "failed", "--limit", "2") == 0
    first = capsys.readouterr().out
    cursor = first.rsplit("next page: --after ", 1)[1].strip()
    assert str(failed[2]) in first and str(failed[0]) not in first
    assert pgjobs_cli(db, "jobs", "list", "--state", "failed", "--after", cursor) == 0
    second = capsys.readouterr().out
    assert str(failed[0]) in second and str(failed[2]) not in second
    assert "next page" not in second
    assert pgjobs_cli(db, "jobs", "list", "--after", "yesterday") == 1
    assert "is not a page cursor" in capsys.readouterr().out


def test_jobs_list_needs_none_of_the_dashboards_packages(db: Database) -> None:
    """``pgjobs jobs list`` runs where ``pgjobs[web]`` is not installed: jinja2, starlette and
    python-multipart cannot be imported in this process."""
    from tests.web_helpers import add_job

    with db.connection() as conn:
        _, failed = add_job(conn, "failed", error="shop.GatewayError")
    code = (
        "import sys\n"
        "for name in ('jinja2', 'starlette', 'python_multipart', 'multipart'):\n"
        "    sys.modules[name] = None  # import raises ImportError\n"
        "from pgjobs.cli.main import main\n"
        "code = main(['jobs', 'list', '--state', 'failed', '--error', 'GatewayError',\n"
        "             '--database-url', sys.argv[1]])\n"
        "loaded = sorted(n for n in ('jinja2', 'starlette') if sys.modules.get(n))\n"
        "print('loaded:', loaded)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, db.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(failed) in done.stdout and "loaded: []" in done.stdout


def test_jobs_discard_and_dispatch(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    ready = Record.perform_later("r")
    later = [Record.set(wait=3600).perform_later(i) for i in range(3)]
    assert pgjobs_cli(db, "jobs", "discard", str(ready.job_id)) == 0
    assert f"discarded {ready.job_id}" in capsys.readouterr().out
    assert pgjobs_cli(db, "jobs", "discard", str(ready.job_id)) == 1
    assert "is not ready, scheduled or blocked (it is discarded)" in capsys.readouterr().err
    assert pgjobs_cli(db, "jobs", "dispatch", str(later[0].job_id)) == 0
    assert f"dispatched {later[0].job_id} (ready)" in capsys.readouterr().out
    assert pgjobs_cli(db, "jobs", "dispatch", str(later[0].job_id)) == 1
    assert "is not scheduled (it is ready)" in capsys.readouterr().err
    assert pgjobs_cli(db, "jobs", "dispatch", "--all", "--text", "1") == 0
    assert "dispatched 1 scheduled job\n" in capsys.readouterr().out
    assert pgjobs_cli(db, "jobs", "discard", "--all", "--state", "scheduled") == 0
    assert "discarded 1 scheduled job\n" in capsys.readouterr().out
    assert states(db.url) == {"ready": 2, "finished": 2}
    assert pgjobs_cli(db, "jobs", "discard", "--all") == 1
    assert "give --state ready, scheduled or blocked" in capsys.readouterr().out
    assert pgjobs_cli(db, "jobs", "discard") == 1
    assert "give JOB_IDs or --all" in capsys.readouterr().out
    assert pgjobs_cli(db, "jobs", "dispatch", str(ready.job_id), "--queue", "q") == 1
    assert "filters go with --all" in capsys.readouterr().out


# -- progress ---------------------------------------------------------------------------------


def test_progress_is_silent_when_stderr_is_not_a_tty() -> None:
    stream = io.StringIO()
    with Progress("discarded", stream) as progress:
        progress(1000)
        progress(2000)
    assert stream.getvalue() == ""


def _read_all(fd: int) -> str:
    """Everything written to the pseudo-terminal so far: one read may return only part of it."""
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_progress_draws_a_count_and_rate_on_a_tty() -> None:
    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as stream, Progress("retried", stream) as progress:
            progress(10)  # too early for a rate
            progress.started -= 2  # two seconds later
            progress._drawn_at -= 2
            progress(1500)
        output = _read_all(leader)
    finally:
        os.close(leader)
        os.close(follower)
    assert "\r\x1b[Kretried: 10 jobs\r" in output
    assert "\r\x1b[Kretried: 1,500 jobs (7" in output and "/s)" in output  # 1,500 in ~2s
    assert output.endswith("\r\x1b[K")  # erased before the command prints its result


def _run_cli_on(db: Database, stderr_tty: bool, *argv: str) -> tuple[str, str]:
    """Run the real ``pgjobs ARGV`` with stderr on a pseudo-terminal or a pipe."""
    command = [sys.executable, "-m", "pgjobs", *argv, "--database-url", db.url]
    if not stderr_tty:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    try:
        process = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=follower, timeout=60, check=True
        )
        os.close(follower)
        chunks = []
        try:
            while chunk := os.read(leader, 4096):
                chunks.append(chunk)
        except OSError:  # the terminal closed: everything was read
            pass
        return process.stdout.decode(), b"".join(chunks).decode()
    finally:
        os.close(leader)


def test_cli_discard_shows_progress_only_on_a_terminal(db: Database) -> None:
    pgjobs.perform_all_later([Record(i) for i in range(30)])
    out, err = _run_cli_on(
        db, True, "jobs", "discard", "--all", "--state", "ready", "--batch-size", "10"
    )
    assert "discarded: 10 jobs" in err and err.endswith("\r\x1b[K")
    assert out == "discarded 30 ready jobs\n"
    pgjobs.perform_all_later([Record(i) for i in range(30)])
    out, err = _run_cli_on(
        db, False, "jobs", "discard", "--all", "--state", "ready", "--batch-size", "10"
    )
    assert (out, err) == ("discarded 30 ready jobs\n", "")


def test_cli_failed_retry_shows_progress_on_a_terminal(db: Database) -> None:
    pgjobs.perform_all_later([Record(i) for i in range(12)])
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "WITH r AS (DELETE FROM pgjobs_ready_executions RETURNING job_id) "
            "INSERT INTO pgjobs_failed_executions (job_id, exception_class, message, backtrace, "
            "attempt) SELECT job_id, 'E', 'm', '', 1 FROM r"
        )
    out, err = _run_cli_on(db, True, "failed", "retry", "--all", "--batch-size", "5")
    assert "retried: 5 jobs" in err
    assert out == "retried 12 failed jobs\n"
    assert states(db.url) == {"ready": 12}


def test_cli_clear_finished_shows_progress_on_a_terminal(db: Database) -> None:
    pgjobs.perform_all_later([Record(i) for i in range(12)])
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("DELETE FROM pgjobs_ready_executions")
        conn.execute(
            "UPDATE pgjobs_jobs SET finished_at = now() - interval '2 days', "
            "created_at = now() - interval '3 days'"
        )
    out, err = _run_cli_on(db, True, "clear-finished", "--older-than", "1d", "--batch-size", "5")
    assert "cleared: 5 jobs" in err
    assert out == "cleared 12 finished jobs\n"
    assert states(db.url) == {}
