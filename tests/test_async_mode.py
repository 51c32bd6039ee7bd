"""``pgjobs start --mode async``: workers, the dispatcher and the scheduler as threads of one
process, with the connection formula (W + 2) and the recovery guarantees of the fork mode; and
the residents of the fork mode (the dispatcher and the scheduler as threads of the supervisor)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

import pgjobs
from pgjobs.db.database import Database
from tests.engine_helpers import config_file, log_lines, pgjobs_start, scalar, states, wait_for
from tests.sample_jobs import Record, Sleepy

pytestmark = [pytest.mark.committed, pytest.mark.slow]

CONNECTIONS = (
    "SELECT application_name, count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name LIKE 'pgjobs-%' GROUP BY 1"
)


def connections(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {str(name): int(n) for name, n in conn.execute(CONNECTIONS).fetchall()}


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def finished(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL"))


def processes(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT kind, pid FROM pgjobs_processes ORDER BY kind").fetchall()
    return [(str(kind), int(pid)) for kind, pid in rows]


WORKERS = '  - queues: "*"\n    threads: 3\n    processes: 2\n    polling_interval: 0.2'


def test_async_mode_runs_everything_in_one_process_with_w_plus_2_connections(
    db: Database, tmp_path: Path
) -> None:
    """Two workers, the dispatcher and the scheduler in one process: no child process, four
    connections (a worker's each, the listener, the supervisor's shared one), scheduled jobs
    dispatched, recurring ticks enqueued, every job run once, a clean SIGTERM."""
    recurring = tmp_path / "recurring.yml"
    recurring.write_text(
        "development:\n  tick:\n    class: tests.sample_jobs:Record\n"
        '    args: ["tick"]\n    schedule: every second\n'
    )
    log = tmp_path / "log"
    pgjobs.perform_all_later([Record(str(i)) for i in range(300)])
    Record.set(wait=timedelta(seconds=1)).perform_later("scheduled")
    args = ("--mode", "async", "--recurring-schedule", str(recurring))
    env = {"PGJOBS_ENV": "development"}
    with pgjobs_start(db.url, config_file(tmp_path, WORKERS), log, *args, env=env) as proc:
        # (the ticks are Records too: wait for the scheduled job by its line, not by a count)
        wait_for(lambda: any(" scheduled" in line for line in log_lines(log)), timeout=60)
        wait_for(lambda: finished(db.url) >= 302, timeout=60)
        wait_for(lambda: any(" tick" in line for line in log_lines(log)), timeout=30)
        expected = {"pgjobs-supervisor": 1, "pgjobs-listener": 1, "pgjobs-worker": 2}
        wait_for(lambda: connections(db.url) == expected, timeout=30)
        assert children(proc.pid) == []  # one process
        kinds = Counter(kind for kind, _ in processes(db.url))
        assert kinds == {"worker": 2, "dispatcher": 1, "scheduler": 1, "supervisor": 1}
        assert {pid for _, pid in processes(db.url)} == {proc.pid}
        Record.perform_later("woken")  # LISTEN through the host's listener, relayed directly
        wait_for(lambda: any(" woken" in line for line in log_lines(log)), timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    runs = Counter(line.split()[0] for line in log_lines(log) if " tick" not in line)
    assert len(runs) == 302 and set(runs.values()) == {1}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 0


def test_async_mode_sigterm_lets_running_jobs_finish(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "log"
    pgjobs.perform_all_later([Sleepy(1.0) for _ in range(3)] + [Record(str(i)) for i in range(20)])
    workers = '  - queues: "*"\n    threads: 3\n    polling_interval: 0.2'
    config = config_file(tmp_path, workers, shutdown_timeout=5)
    with pgjobs_start(db.url, config, log, "--mode", "async") as proc:
        wait_for(lambda: sum(" start" in line for line in log_lines(log)) == 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert states(db.url) == {"finished": 3, "ready": 20}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 0


def test_async_mode_jobs_past_the_shutdown_timeout_are_recovered_not_run_twice_at_once(
    db: Database, tmp_path: Path
) -> None:
    """A job still running at shutdown_timeout cannot be given back while its thread lives:
    the process exits at once, the row stays, and the next start recovers the job once the
    heartbeat has expired (an interruption) — it never ran in two places at the same time."""
    log = tmp_path / "log"
    job = Sleepy.perform_later(30)
    workers = '  - queues: "*"\n    threads: 2\n    polling_interval: 0.2'
    config = config_file(tmp_path, workers, shutdown_timeout=1)
    with pgjobs_start(db.url, config, log, "--mode", "async") as proc:
        wait_for(lambda: any(" start" in line for line in log_lines(log)))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert states(db.url) == {"claimed": 1}  # left claimed: its thread died with the process
    assert [kind for kind, _ in processes(db.url)] == ["worker"]
    with pgjobs_start(db.url, config, log, "--mode", "async") as proc:
        wait_for(lambda: sum(" start" in line for line in log_lines(log)) == 2, timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    row = scalar(db.url, "SELECT interruptions FROM pgjobs_jobs WHERE job_id = %s", [job.job_id])
    assert row == 1  # recovered as an interruption, then started again


def test_async_mode_sigkill_loses_nothing(db: Database, tmp_path: Path) -> None:
    """SIGKILL of the whole process mid-drain: the next start recovers every claimed job once
    the dead rows' heartbeats expire, and every job finishes."""
    log = tmp_path / "log"
    pgjobs.perform_all_later([Sleepy(0.5) for _ in range(6)] + [Record(str(i)) for i in range(100)])
    config = config_file(tmp_path, WORKERS)
    with pgjobs_start(db.url, config, log, "--mode", "async") as proc:
        wait_for(lambda: sum(" start" in line for line in log_lines(log)) >= 3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert states(db.url).get("claimed", 0) > 0
    with pgjobs_start(db.url, config, log, "--mode", "async") as proc:
        wait_for(lambda: finished(db.url) == 106, timeout=90, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert states(db.url) == {"finished": 106}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 0


def test_fork_mode_runs_the_dispatcher_and_scheduler_as_threads_of_the_supervisor(
    db: Database, tmp_path: Path
) -> None:
    """Their rows carry the supervisor's pid; a worker wakes on a notification relayed by the
    host's listener within a fraction of its (long) polling interval."""
    recurring = tmp_path / "recurring.yml"
    recurring.write_text("development: {}\n")
    log = tmp_path / "log"
    workers = '  - queues: "*"\n    threads: 2\n    processes: 2\n    polling_interval: 30'
    args = ("--recurring-schedule", str(recurring))
    env = {"PGJOBS_ENV": "development"}
    with pgjobs_start(db.url, config_file(tmp_path, workers), log, *args, env=env) as proc:
        wait_for(lambda: len(processes(db.url)) == 5, timeout=30)
        pids = dict(Counter(kind for kind, _ in processes(db.url)))
        assert pids == {"worker": 2, "dispatcher": 1, "scheduler": 1, "supervisor": 1}
        by_kind = {kind: pid for kind, pid in processes(db.url) if kind != "worker"}
        assert set(by_kind.values()) == {proc.pid}
        assert len(children(proc.pid)) == 2
        time.sleep(1.0)  # the workers' first passes are done: they sleep for 30 s now
        started = time.monotonic()
        Record.perform_later("woken")
        wait_for(lambda: any(" woken" in line for line in log_lines(log)), timeout=10)
        assert time.monotonic() - started < 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 0


def test_a_bad_mode_names_the_key_and_the_choices(tmp_path: Path) -> None:
    from pgjobs.config.queue import parse_config
    from pgjobs.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"mode.*fork.*async.*'threads'"):
        parse_config({"mode": "threads"})
    cli = subprocess.run(
        [sys.executable, "-m", "pgjobs", "start", "--mode", "threads"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and "fork" in cli.stderr and "async" in cli.stderr


@pytest.mark.parametrize("mode", ["fork", "async"])
def test_sigterm_while_starting_is_a_clean_exit(tmp_path: Path, mode: str) -> None:
    """A stop that comes before the supervisor has registered anything (here: while it waits
    for a server that accepts the connection and never answers) exits 0, not killed by it."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/none?connect_timeout=30"
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgjobs", "start", "--mode", mode, "--skip-recurring",
             "--database-url", url, "--config", str(config_file(tmp_path))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(2.0)  # connecting
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
