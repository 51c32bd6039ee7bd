"""Signals: a handler never takes a lock, so a signal landing anywhere cannot deadlock a process.

The first tests run a process object in a subprocess (a deadlock there is a timeout, not a hung
suite) and deliver signals while the main thread holds the locks an ``Event`` takes.  The last
ones press Ctrl-C on a real ``pgjobs start``: SIGINT to the whole process group, as a terminal
does, so every child gets the terminal's signal and then the supervisor's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pgjobs
from pgjobs.db.database import Database
from tests.engine_helpers import ROOT, config_file, log_lines, pgjobs_start, scalar, states
from tests.sample_jobs import Sleepy

BUILD = """
import os, signal, sys
from pgjobs.config.queue import Config
from pgjobs.db.database import Database
from pgjobs.processes.base import Process

process = Process(Database("postgresql://localhost/unused"), Config())
process.install_signal_handlers()
"""


def run_script(body: str, timeout: float = 10) -> list[str]:
    """Run ``BUILD + body`` in a fresh interpreter; a hang fails the test instead of the suite."""
    script = BUILD + textwrap.dedent(body)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process hung (deadlocked in a signal handler?); output: {exc.stdout!r}")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("held", ["wake", "stopping"])
def test_signals_landing_while_the_main_thread_holds_an_event_lock_stop_the_process(
    held: str,
) -> None:
    # The main thread holds an Event's (non-reentrant) condition lock inside wait(), set() and
    # clear(); a handler that called Event.set() there waited for itself forever.  Both signals
    # of a terminal's Ctrl-C under a supervisor arrive: SIGINT, then SIGTERM.
    lines = run_script(
        f"""
        with process.{held}._cond:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            print("handlers returned", flush=True)
        print("stopping", process.stopping.wait(5), process.wake.wait(5), flush=True)
        print("exit_now", process.exit_now, flush=True)
        """
    )
    assert lines == ["handlers returned", "stopping True True", "exit_now False"]


def test_a_signal_inside_logging_or_a_handler_and_sigquit_still_exit_at_once() -> None:
    # Every lock at once: logging's, both events'.  SIGINT then SIGQUIT: SIGQUIT wins.
    lines = run_script(
        """
        import logging
        handler = logging.StreamHandler(sys.stderr)
        with handler.lock, process.stopping._cond, process.wake._cond:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGQUIT)
        print("stopping", process.stopping.wait(5), flush=True)
        deadline = __import__("time").monotonic() + 5
        while not process.exit_now and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.01)
        print("exit_now", process.exit_now, flush=True)
        """
    )
    assert lines == ["stopping True", "exit_now True"]


def test_a_forked_child_gets_the_previous_handlers_and_never_stops_its_parent() -> None:
    # A job that forks (multiprocessing) and then terminates its child with SIGTERM must not stop
    # the worker: the child's SIGTERM kills the child, as it would without pgjobs.
    lines = run_script(
        """
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(7)  # not reached: SIGTERM's default action ends the child
        _, status = os.waitpid(pid, 0)
        print("child", os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
        print("parent stopping", process.stopping.wait(0.5), flush=True)
        """
    )
    assert lines == ["child True", "parent stopping False"]


# -- Ctrl-C on a real `pgjobs start` ---------------------------------------------------------------

WORKERS = '  - queues: "*"\n    threads: 3\n    processes: 3\n    polling_interval: 0.2'
SHUTDOWN_TIMEOUT = 3.0
KILLED = "did not stop in time; killing it"


def _stop_once(
    db: Database,
    tmp_path: Path,
    attempt: int,
    signals: list[signal.Signals],
    gap: float = 0.0,
    storm: float = 0.0,
) -> None:
    """Start ``pgjobs start`` with jobs running; send ``signals`` to its whole process group,
    ``gap`` seconds apart (over and over for ``storm`` seconds); it must stop gracefully: exit 0,
    drain its jobs, kill nothing."""
    log = tmp_path / f"log{attempt}"
    config = config_file(tmp_path, WORKERS, shutdown_timeout=SHUTDOWN_TIMEOUT)
    with pgjobs_start(db.url, config, log) as proc:
        deadline = time.monotonic() + 15
        while not any(" start" in line for line in log_lines(log)):
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.02)
        time.sleep(0.25 * (attempt % 4))  # land in different phases: claiming, running, idle
        started = time.monotonic()
        for i, sig in enumerate(signals):
            if i and gap:
                time.sleep(gap)
            os.killpg(proc.pid, sig)
        while time.monotonic() - started < storm:
            for sig in signals:
                os.killpg(proc.pid, sig)
        try:
            code: int | None = proc.wait(timeout=SHUTDOWN_TIMEOUT + 3)
        except subprocess.TimeoutExpired:
            code = None
        output = log.with_suffix(".out").read_text()
        assert code is not None, f"attempt {attempt}: pgjobs start hung\n{output}"
        assert code == 0, output
        assert KILLED not in output, f"attempt {attempt}: a child was killed\n{output}"
        # The running jobs (0.2 s) were drained: the stop waited for no timeout.
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT, output
    # Graceful: every job that started also finished (none was interrupted or given back).
    lines = log_lines(log)
    assert sum(line.endswith(" start") for line in lines) == sum(
        line.endswith(" done") for line in lines
    )
    assert "claimed" not in states(db.url)
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_processes") == 0


def _enqueue(count: int) -> None:
    pgjobs.perform_all_later([Sleepy(0.2) for _ in range(count)])


@pytest.mark.committed
@pytest.mark.slow
def test_ctrl_c_to_the_process_group_stops_cleanly_every_time(db: Database, tmp_path: Path) -> None:
    # A terminal sends SIGINT to every process; each child then gets the supervisor's SIGTERM.
    _enqueue(200)
    for attempt in range(8):
        _stop_once(db, tmp_path, attempt, [signal.SIGINT])
    assert "lost" not in states(db.url)


@pytest.mark.committed
@pytest.mark.slow
def test_sigint_then_sigterm_to_the_group_is_still_a_graceful_stop(
    db: Database, tmp_path: Path
) -> None:
    _enqueue(200)
    for attempt, gap in enumerate((0.0, 0.0005, 0.002)):
        _stop_once(db, tmp_path, attempt, [signal.SIGINT, signal.SIGTERM], gap)
    assert "lost" not in states(db.url)


@pytest.mark.committed
@pytest.mark.slow
def test_a_storm_of_sigint_and_sigterm_is_still_one_graceful_stop(
    db: Database, tmp_path: Path
) -> None:
    # Ctrl-C pressed again and again while a service manager sends SIGTERM: signals land in every
    # phase of every process's stopping, including inside the handling of the one before.
    _enqueue(200)
    for attempt in range(3):
        _stop_once(db, tmp_path, attempt, [signal.SIGINT, signal.SIGTERM], storm=0.02)
    assert "lost" not in states(db.url)
