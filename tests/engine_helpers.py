"""Helpers for tests that run real pgjobs processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from pgjobs.processes.executor import Claimed
    from pgjobs.processes.worker import Worker

ROOT = Path(__file__).resolve().parent.parent

FAST_CONFIG = """
heartbeat_interval: 0.5
process_alive_threshold: 3
shutdown_timeout: {shutdown_timeout}
max_interruptions: {max_interruptions}
dispatchers:
  - polling_interval: 0.2
    batch_size: 100
workers:
{workers}
"""


def config_file(
    tmp_path: Path,
    workers: str = '  - queues: "*"\n    threads: 3\n    polling_interval: 0.2',
    *,
    shutdown_timeout: float = 3,
    max_interruptions: int = 3,
    extra: str = "",
) -> Path:
    path = tmp_path / "queue.yml"
    body = FAST_CONFIG.format(
        workers=workers, shutdown_timeout=shutdown_timeout, max_interruptions=max_interruptions
    )
    path.write_text(textwrap.dedent(body) + extra)
    return path


@contextmanager
def pgjobs_start(
    url: str, config: Path, log: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """Run ``pgjobs start`` as a real subprocess; SIGKILL it (and its children) if left running."""
    full_env = {
        **os.environ,
        "PGJOBS_TEST_LOG": str(log),
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    if "--recurring-schedule" not in args:
        args = (*args, "--skip-recurring")  # the repository's config/recurring.yml is not ours
    output = log.with_suffix(".out")
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgjobs", "start", "--app", "tests.sample_jobs",
             "--database-url", url, "--config", str(config), *args],
            env=full_env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # Shown by pytest when the test fails.
            print(f"--- pgjobs start output ({output}) ---\n{output.read_text()}")


def free_port() -> int:
    """A TCP port nobody listens on now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def scalar(url: str, sql: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def states(url: str) -> dict[str, int]:
    """How many jobs are in each state (every job must be in exactly one)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT CASE
                 WHEN r.job_id IS NOT NULL THEN 'ready'
                 WHEN c.job_id IS NOT NULL THEN 'claimed'
                 WHEN s.job_id IS NOT NULL THEN 'scheduled'
                 WHEN b.job_id IS NOT NULL THEN 'blocked'
                 WHEN f.job_id IS NOT NULL THEN 'failed'
                 WHEN j.finished_at IS NOT NULL THEN 'finished'
                 ELSE 'lost' END AS state, count(*)
               FROM pgjobs_jobs j
               LEFT JOIN pgjobs_ready_executions r ON r.job_id = j.id
               LEFT JOIN pgjobs_claimed_executions c ON c.job_id = j.id
               LEFT JOIN pgjobs_scheduled_executions s ON s.job_id = j.id
               LEFT JOIN pgjobs_blocked_executions b ON b.job_id = j.id
               LEFT JOIN pgjobs_failed_executions f ON f.job_id = j.id
               GROUP BY 1"""
        ).fetchall()
    return {state: int(n) for state, n in rows}


def children(supervisor_pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def worker_pids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT pid FROM pgjobs_processes WHERE kind = 'worker'").fetchall()
    return [int(r[0]) for r in rows]


def log_lines(log: Path) -> list[str]:
    """What the jobs wrote (lifecycle hook lines left out)."""
    return [line for line in _lines(log) if not line.startswith("hook ")]


def hook_lines(log: Path) -> list[str]:
    return [line for line in _lines(log) if line.startswith("hook ")]


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def run_once(worker: Worker, limit: int = 10) -> list[Claimed]:
    """One pass of an in-process worker with the jobs performed in this thread: claim up to
    ``limit``, perform each, record the outcomes, finish the finished."""
    from pgjobs.processes.executor import perform

    claimed = worker.claim(limit)
    for job in claimed:
        worker.in_flight[job.id] = job
        worker.outbox.put(perform(job, worker.loop))
    worker._collect()
    if worker.to_finish:
        worker._finish_only()
    if worker.to_finish_results:
        worker._finish_results()
    return claimed


def drive(worker: Worker, until: Callable[[], Any], timeout: float = 15) -> float:
    """Run an in-process worker's main loop until ``until()``; returns the seconds it took."""
    started = time.monotonic()
    while not until():
        assert time.monotonic() - started < timeout, "condition not met in time"
        delay = worker.poll()
        worker.wake.wait(min(delay, 0.02))
        worker.wake.clear()
    return time.monotonic() - started


def pgjobs_cli(url: str, *argv: str) -> int:
    """``pgjobs ARGV`` in this process, on the database at ``url`` (``SystemExit`` for a usage
    error, as argparse raises; a pgjobs error printed as the command line prints it)."""
    import pgjobs
    from pgjobs.cli import main as cli

    args = cli.build_parser().parse_args([*argv, "--database-url", url])
    try:
        return cli.COMMANDS[args.command](args)
    except pgjobs.PgJobsError as exc:
        print(f"pgjobs: error: {exc}")
        return 1


class Running:
    """The worker's main loop in a thread, until stopped."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            delay = self.worker.poll()
            self.worker.wake.wait(min(delay, 0.02))
            self.worker.wake.clear()

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)
