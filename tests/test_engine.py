"""`pgjobs start` end to end: real processes, signals, crashes and a database that drops us.

Every test ends by checking that each job is in exactly one state: nothing lost, nothing twice.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

import pgjobs
from pgjobs.db.database import Database
from tests.engine_helpers import (
    config_file,
    log_lines,
    pgjobs_start,
    scalar,
    states,
    wait_for,
    worker_pids,
)
from tests.sample_jobs import KillsItsWorker, Record, Sleepy, Stamp

pytestmark = [pytest.mark.committed, pytest.mark.slow]


def finished(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL"))


def test_jobs_flow_and_sigterm_drains_running_jobs(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "log"
    pgjobs.perform_all_later([Sleepy(1.0) for _ in range(3)] + [Record(str(i)) for i in range(20)])
    with pgjobs_start(db.url, config_file(tmp_path, shutdown_timeout=5), log) as proc:
        wait_for(lambda: sum(" start" in line for line in log_lines(log)) == 3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    # The running sleepers finished; the records waiting behind them were never claimed.
    assert states(db.url) == {"finished": 3, "ready": 20}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 0


def test_sigterm_gives_back_jobs_that_outlive_the_shutdown_timeout(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    job = Sleepy.perform_later(60)
    with pgjobs_start(db.url, config_file(tmp_path, shutdown_timeout=1), log) as proc:
        wait_for(lambda: any(" start" in line for line in log_lines(log)))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 1 + 2 + 1  # shutdown_timeout + grace + slack
    assert states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT executions FROM pgjobs_jobs WHERE job_id = %s", [job.job_id]) == 0


def test_sigkill_of_a_worker_loses_nothing_and_it_is_replaced(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "log"
    sleepers = [Sleepy(1.5) for _ in range(3)]
    pgjobs.perform_all_later(sleepers + [Record(str(i)) for i in range(200)])
    with pgjobs_start(db.url, config_file(tmp_path), log) as proc:
        wait_for(lambda: sum(" start" in line for line in log_lines(log)) >= 1)
        (victim,) = worker_pids(db.url)
        os.kill(victim, signal.SIGKILL)
        replacement = wait_for(lambda: [p for p in worker_pids(db.url) if p != victim])
        assert replacement
        wait_for(lambda: finished(db.url) == 203, timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert states(db.url) == {"finished": 203}
    # An interrupted attempt is an attempt: the killed sleeper ran again and counted both.
    assert scalar(db.url, "SELECT max(executions) FROM pgjobs_jobs") == 2


def test_a_job_that_always_kills_its_worker_ends_up_failed(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = KillsItsWorker.perform_later()
    with pgjobs_start(db.url, config_file(tmp_path, max_interruptions=2), log) as proc:
        wait_for(lambda: states(db.url).get("failed") == 1, timeout=60)
        Record.perform_later("the replacement worker carries on")
        wait_for(lambda: finished(db.url) == 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert states(db.url) == {"failed": 1, "finished": 1}
    assert sum("kill" in line for line in log_lines(log)) == 2
    with psycopg.connect(db.url) as conn:
        row = conn.execute(
            "SELECT f.exception_class, f.message FROM pgjobs_failed_executions f "
            "JOIN pgjobs_jobs j ON j.id = f.job_id WHERE j.job_id = %s",
            [job.job_id],
        ).fetchone()
    assert row is not None and row[0] == "pgjobs.errors.ProcessExitError"
    assert "exited 2 times" in row[1]


def test_four_worker_processes_race_over_10_000_jobs_without_running_one_twice(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    pgjobs.perform_all_later([Record(str(i)) for i in range(10_000)])
    workers = '  - queues: "*"\n    threads: 5\n    processes: 4\n    polling_interval: 0.1'
    with pgjobs_start(db.url, config_file(tmp_path, workers), log) as proc:
        wait_for(lambda: finished(db.url) == 10_000, timeout=120, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    runs = Counter(line.split()[0] for line in log_lines(log))
    assert len(runs) == 10_000 and set(runs.values()) == {1}
    assert states(db.url) == {"finished": 10_000}


def test_scheduled_jobs_run_on_time_and_once_with_two_dispatchers(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    enqueued_at = time.time()
    pgjobs.perform_all_later([Stamp.set(wait=1.5).build() for _ in range(50)])
    extra = "  - polling_interval: 0.2\n    batch_size: 7\n"
    config = config_file(tmp_path)
    config.write_text(config.read_text().replace("dispatchers:\n", "dispatchers:\n" + extra))
    with pgjobs_start(db.url, config, log) as proc:
        wait_for(lambda: finished(db.url) == 50, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    started = [float(line.split()[1]) for line in log_lines(log)]
    assert len(started) == 50 == len({line.split()[0] for line in log_lines(log)})
    assert min(started) >= enqueued_at + 1.5
    assert max(started) < enqueued_at + 1.5 + 3


def test_a_notification_wakes_an_idle_worker_within_milliseconds(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    workers = '  - queues: "*"\n    threads: 3\n    polling_interval: 10'
    with pgjobs_start(db.url, config_file(tmp_path, workers), log) as proc:
        wait_for(lambda: worker_pids(db.url))
        time.sleep(1.0)  # let the worker's first poll pass and its listener connect
        delays = []
        for _ in range(5):
            before = time.time()
            job = Stamp.perform_later()
            line = wait_for(
                lambda job=job: [x for x in log_lines(log) if x.startswith(str(job.job_id))],
                timeout=5,
                interval=0.005,
            )
            delays.append(float(line[0].split()[1]) - before)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert sorted(delays)[2] < 0.1, delays  # the median, with polling set to 10 s


def test_the_database_dropping_every_connection_mid_run_loses_nothing(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    pgjobs.perform_all_later([Record(str(i)) for i in range(3000)])
    workers = '  - queues: "*"\n    threads: 5\n    processes: 2\n    polling_interval: 0.1'
    with pgjobs_start(db.url, config_file(tmp_path, workers), log) as proc:
        for _ in range(3):
            wait_for(lambda: len(log_lines(log)) > 0, timeout=30)
            time.sleep(0.3)
            with psycopg.connect(db.url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        wait_for(lambda: finished(db.url) == 3000, timeout=90, interval=0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    runs = Counter(line.split()[0] for line in log_lines(log))
    assert len(runs) == 3000 and set(runs.values()) == {1}
    assert states(db.url) == {"finished": 3000}


def test_a_postgresql_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    """A real restart: a dedicated embedded server is stopped (fast shutdown) and started."""
    pytest.importorskip("pgserver", reason="the embedded server has no wheel for this Python")
    import shutil

    from pgjobs.db import embedded
    from tests.engine_helpers import ROOT

    directory = ROOT / ".pgjobs" / f"restart-test-{os.getpid()}"
    url = embedded.start(directory)
    try:
        pgjobs.migrate(url)
        with psycopg.connect(url) as conn:
            pgjobs.perform_all_later([Record(str(i)) for i in range(3000)], connection=conn)
            conn.commit()
        log = tmp_path / "log"
        workers = '  - queues: "*"\n    threads: 5\n    processes: 2\n    polling_interval: 0.1'
        with pgjobs_start(url, config_file(tmp_path, workers), log) as proc:
            wait_for(lambda: len(log_lines(log)) > 100, timeout=60)
            embedded.stop(directory)
            time.sleep(1.0)
            assert proc.poll() is None  # pgjobs waits for its database
            embedded.start(directory)
            wait_for(lambda: finished(url) == 3000, timeout=120, interval=0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        runs = Counter(line.split()[0] for line in log_lines(log))
        assert len(runs) == 3000
        assert states(url) == {"finished": 3000}
        # A job whose finish was lost in the restart may run again (at-least-once); none ran
        # more than twice, and none was lost.
        assert max(runs.values()) <= 2
    finally:
        embedded.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_sigquit_leaves_at_once_and_gives_the_running_jobs_back(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    job = Sleepy.perform_later(60)
    with pgjobs_start(db.url, config_file(tmp_path, shutdown_timeout=30), log) as proc:
        wait_for(lambda: any(" start" in line for line in log_lines(log)))
        started = time.monotonic()
        proc.send_signal(signal.SIGQUIT)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5  # not the 30 s shutdown_timeout
    assert states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT executions FROM pgjobs_jobs WHERE job_id = %s", [job.job_id]) == 0
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 0


def test_connections_per_process_are_what_docs_deployment_says(
    db: Database, tmp_path: Path
) -> None:
    """The formula of docs/deployment.md, counted in pg_stat_activity by application name for a
    host with W = 2 worker processes, a dispatcher and the scheduler: one connection per worker
    process, the host's listener, and one shared by the supervisor, the dispatcher and the
    scheduler (threads of the supervisor) — W + 2 = 4."""
    recurring = tmp_path / "recurring.yml"
    recurring.write_text("development: {}\n")
    workers = '  - queues: "*"\n    threads: 3\n    processes: 2\n    polling_interval: 0.2'
    log = tmp_path / "jobs.log"
    query = (
        "SELECT application_name, count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name LIKE 'pgjobs-%'"
        " GROUP BY 1"
    )
    expected = {"pgjobs-supervisor": 1, "pgjobs-listener": 1, "pgjobs-worker": 2}

    def counted() -> dict[str, int]:
        with psycopg.connect(db.url) as conn:
            return {str(name): int(n) for name, n in conn.execute(query).fetchall()}

    env = {"PGJOBS_ENV": "development"}
    with pgjobs_start(
        db.url, config_file(tmp_path, workers), log, "--recurring-schedule", str(recurring), env=env
    ) as proc:
        wait_for(lambda: counted() == expected, timeout=30)
        time.sleep(2)  # steady: a few heartbeats and polls later, still the same
        assert counted() == expected
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
