"""pgjobs: the system under test.

- enqueue: ``noop.perform_later(i)`` on pgjobs' own pool (autocommit: one statement and one
  commit per job); bulk: ``pgjobs.perform_all_later`` (COPY), in one transaction per batch;
- workers: ``python -m pgjobs start --app benchmarks.jobs --config <queue.yml>`` (a supervisor,
  its worker processes and one dispatcher), stopped with SIGTERM;
- the job is a plain ``def`` run in the worker's thread pool (pgjobs' native kind of job).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pgjobs
from benchmarks.common import (
    CHECK_EVERY,
    WARMUP,
    Stopwatch,
    System,
    Timed,
    WorkerSetup,
    paced,
    spawn,
)
from pgjobs import runtime

QUEUE_YML = """\
# Written by the benchmark (benchmarks/systems/pgjobs_.py).
heartbeat_interval: 1          # so the heartbeat connection is open (and counted) at once
shutdown_timeout: 5
listen_notify: {listen_notify}
preserve_finished_jobs: true
dispatchers:
  - polling_interval: 1
    batch_size: 500
workers:
  - queues: "*"
    threads: {threads}
    processes: {processes}
    polling_interval: {polling_interval}
"""

DEFAULTS: dict[str, Any] = {"threads": 3, "polling_interval": 0.1, "listen_notify": "true"}


class PgJobs(System):
    name = "pgjobs"
    packages = ("pgjobs", "psycopg", "psycopg-pool", "psycopg-binary")
    started_sql = "SELECT EXISTS (SELECT 1 FROM pgjobs_claimed_executions)"
    done_sql = (
        "SELECT NOT EXISTS (SELECT 1 FROM pgjobs_ready_executions)"
        " AND NOT EXISTS (SELECT 1 FROM pgjobs_claimed_executions)"
    )
    finished_sql = "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL"

    def install(self, url: str) -> None:
        pgjobs.migrate(url)

    def _configure(self, url: str) -> pgjobs.Database:
        database = pgjobs.configure(url)
        from benchmarks.jobs import noop

        for i in range(-WARMUP, 0):  # warm up: open the pool, let psycopg prepare the statement
            noop.perform_later(i)
        return database

    def _close(self, database: pgjobs.Database) -> None:
        runtime.use(None)
        database.close()

    def enqueue_single(self, url: str, n: int, limit: float = math.inf) -> Timed:
        from benchmarks.jobs import noop

        database = self._configure(url)
        try:
            clock = Stopwatch(limit)
            for i in range(n):
                noop.perform_later(i)
                if i % CHECK_EVERY == 0 and clock.expired():
                    return clock.result(i + 1)
            return clock.result(n)
        finally:
            self._close(database)

    def enqueue_bulk(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        from benchmarks.jobs import noop

        database = self._configure(url)
        try:
            clock = Stopwatch(limit)
            for first in range(0, n, batch):
                last = min(n, first + batch)
                pgjobs.perform_all_later([noop.build(i) for i in range(first, last)])
                if clock.expired():
                    return clock.result(last)
            return clock.result(n)
        finally:
            self._close(database)

    def enqueue_paced(self, url: str, ids: Sequence[int], rate: float) -> list[tuple[float, float]]:
        from benchmarks.jobs import noop

        database = self._configure(url)
        try:
            return paced(ids, rate, noop.perform_later)
        finally:
            self._close(database)

    def drain_setups(self) -> list[WorkerSetup]:
        return [
            WorkerSetup(processes, {"threads": threads})
            for processes in (1, 2)
            for threads in (5, 20, 50)
        ]

    def latency_setup(self) -> WorkerSetup:
        return WorkerSetup(1, {"threads": DEFAULTS["threads"]})

    def start(
        self, url: str, setup: WorkerSetup, workdir: Path, env: dict[str, str]
    ) -> list[subprocess.Popen[bytes]]:
        settings = {**DEFAULTS, **setup.settings}
        config = workdir / "queue.yml"
        config.write_text(textwrap.dedent(QUEUE_YML).format(processes=setup.processes, **settings))
        args = [
            sys.executable,
            "-m",
            "pgjobs",
            "start",
            "--app",
            "benchmarks.jobs",
            "--database-url",
            url,
            "--config",
            str(config),
        ]
        return [spawn(args, workdir, "pgjobs.log", env)]

    def describe(self) -> dict[str, Any]:
        return {
            "job": "def noop(i) in the worker's thread pool",
            "single enqueue": "noop.perform_later(i): pgjobs' pool, autocommit, 1 statement/job",
            "bulk enqueue": "pgjobs.perform_all_later([...]) (COPY), one transaction per batch",
            "workers": "python -m pgjobs start (supervisor + workers + 1 dispatcher)",
            "queue.yml": QUEUE_YML.split("\n", 1)[1].format(
                processes="P", **{**DEFAULTS, "threads": "T"}
            ),
        }

    def process_kind(self, cmdline: Sequence[str]) -> str:
        # pgjobs processes set their title: "pgjobs-worker: * (5 threads)", "pgjobs-supervisor: …"
        title = " ".join(cmdline)
        if title.startswith("pgjobs-"):
            return title.removeprefix("pgjobs-").split(":", 1)[0].split(" ", 1)[0]
        return ""  # a child still starting (before it sets its title): not counted
