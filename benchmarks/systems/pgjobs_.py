"""pgjobs: the system under test.

- enqueue: ``noop.perform_later(i)`` on pgjobs' own pool (autocommit: one statement and one
  commit per job); bulk: ``pgjobs.perform_all_later`` (COPY), in one transaction per batch;
  bulk of one class (``bulk_fast``): ``noop.perform_all_later_args([(i,), ...])`` (one statement
  per batch, no handles returned);
- workers: ``python -m pgjobs start --app benchmarks.jobs --config <queue.yml>`` (a supervisor,
  its worker processes and one dispatcher), stopped with SIGTERM;
- the job is a plain ``def`` run in the worker's thread pool (pgjobs' native kind of job).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

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
durable_claims: {durable_claims}
preserve_finished_jobs: true
dispatchers:
  - polling_interval: 1
    batch_size: 500
workers:
  - queues: "*"
    threads: {threads}
    processes: {processes}
    polling_interval: {polling_interval}
{extra}"""
# The settings QUEUE_YML places itself; any other setting of a WorkerSetup (e.g. prefetch) is
# written as a key of the worker entry.
PLACED = frozenset(("threads", "polling_interval", "listen_notify", "durable_claims"))

# BENCH_PGJOBS_DURABLE_CLAIMS=false measures every scenario with workers that commit claims and
# finishes without waiting for the WAL flush (docs/configuration.md, durable_claims).
DEFAULTS: dict[str, Any] = {
    "threads": 3,
    "polling_interval": 0.1,
    "listen_notify": "true",
    "durable_claims": os.environ.get("BENCH_PGJOBS_DURABLE_CLAIMS", "true"),
}

# The backlog loader: the rows perform_all_later and a worker's finish write, by the million.
RESERVE = (
    "SELECT setval(s, nextval(s) + %(n)s - 1) FROM pg_get_serial_sequence('pgjobs_jobs', 'id') s"
)
LOAD_JOBS = """
INSERT INTO pgjobs_jobs (id, job_id, queue_name, class_name, arguments, executions, finished_at)
SELECT g, gen_random_uuid(), 'default', %(class_name)s,
       jsonb_build_object('args', jsonb_build_array(g - %(first)s), 'kwargs', '{}'::jsonb),
       %(executions)s, %(finished_at)s
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""
LOAD_READY = """
INSERT INTO pgjobs_ready_executions (job_id, queue_name)
SELECT g, 'default' FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""


class PgJobs(System):
    name = "pgjobs"
    #: ``--pgjobs-drain`` / ``--pgjobs-latency``: configurations given on the command line, used
    #: instead of the sweep below and of the latency scenario's default (set by __main__).
    drain_override: tuple[WorkerSetup, ...] = ()
    latency_override: WorkerSetup | None = None
    packages = ("pgjobs", "psycopg", "psycopg-pool", "psycopg-binary")
    started_sql = "SELECT EXISTS (SELECT 1 FROM pgjobs_claimed_executions)"
    done_sql = (
        "SELECT NOT EXISTS (SELECT 1 FROM pgjobs_ready_executions)"
        " AND NOT EXISTS (SELECT 1 FROM pgjobs_claimed_executions)"
    )
    finished_sql = "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL"
    done_upto_sql = (
        "SELECT NOT EXISTS (SELECT 1 FROM pgjobs_ready_executions WHERE job_id <= {upto})"
        " AND NOT EXISTS (SELECT 1 FROM pgjobs_claimed_executions WHERE job_id <= {upto})"
    )
    waiting_sql = "SELECT count(*) FROM pgjobs_ready_executions"
    tables = (
        "pgjobs_jobs",
        "pgjobs_ready_executions",
        "pgjobs_claimed_executions",
        "pgjobs_processes",
    )

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

    def has_bulk_fast(self) -> bool:
        return hasattr(pgjobs.Job, "perform_all_later_args")  # pgjobs from issue 22 on

    def enqueue_bulk_fast(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        from benchmarks.jobs import noop

        database = self._configure(url)
        try:
            clock = Stopwatch(limit)
            for first in range(0, n, batch):
                last = min(n, first + batch)
                noop.perform_all_later_args([(i,) for i in range(first, last)])
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
        if self.drain_override:
            return list(self.drain_override)
        # A worker claims as many jobs as it has idle threads: threads is the claim batch.  One
        # more commits its claims without waiting for the disk (durable_claims: false).  The
        # last (the one --no-sweep and the backlog scenario run) is 200 threads x 2, durable.
        return [
            *(
                WorkerSetup(processes, {"threads": threads})
                for threads in (20, 50)
                for processes in (1, 2)
            ),
            WorkerSetup(1, {"threads": 200}),
            WorkerSetup(2, {"threads": 200, "durable_claims": "false"}),
            WorkerSetup(2, {"threads": 200}),
        ]

    def latency_setup(self) -> WorkerSetup:
        if self.latency_override is not None:
            return self.latency_override
        return WorkerSetup(1, {"threads": DEFAULTS["threads"]})

    def soak_setup(self) -> WorkerSetup:
        return WorkerSetup(1, {"threads": 10})

    def load_backlog(self, url: str, ready: int, finished: int) -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            first = _load(conn, finished, finished=True)
            if ready:
                first = _load(conn, ready, finished=False)
            conn.execute("VACUUM (ANALYZE) pgjobs_jobs, pgjobs_ready_executions")
        return first

    def claim_plan(self, url: str, limit: int, insert: int = 0) -> str | None:
        from pgjobs.db.names import sql
        from pgjobs.store import ready

        try:
            from pgjobs.processes import floors

            no_floor = floors.NO_FLOOR
        except ImportError:  # pgjobs before claim floors (274fb5b): the parameters go unused
            no_floor = (0, 0)

        params = {"finished": "{}", "process_id": 0, "now": datetime.now(UTC), "limit": limit,
                  "floor_priority": no_floor[0], "floor_id": no_floor[1]}  # fmt: skip
        with psycopg.connect(url) as conn:
            try:
                if insert:
                    _load(conn, insert, finished=False)
                explain = "EXPLAIN (ANALYZE, BUFFERS) " + sql(ready.CLAIM_ALL, None)
                rows = conn.execute(explain, params).fetchall()
            finally:
                conn.rollback()
        return "\n".join(str(row[0]) for row in rows)

    def start(
        self, url: str, setup: WorkerSetup, workdir: Path, env: dict[str, str]
    ) -> list[subprocess.Popen[bytes]]:
        settings = {**DEFAULTS, **setup.settings}
        config = workdir / "queue.yml"
        extra = "".join(f"    {k}: {v}\n" for k, v in settings.items() if k not in PLACED)
        placed = {k: v for k, v in settings.items() if k in PLACED}
        text = textwrap.dedent(QUEUE_YML).format(processes=setup.processes, extra=extra, **placed)
        if str(settings["durable_claims"]) == "true":  # the default: pgjobs before 893b74b
            text = text.replace("durable_claims: true\n", "")  # does not know the key
        config.write_text(text)
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
        if os.environ.get("BENCH_PGJOBS_SKIP_RECURRING"):  # no scheduler process (diagnostics)
            args.append("--skip-recurring")
        if os.environ.get("BENCH_PGJOBS_METRICS_PORT"):  # Prometheus metrics on (pgjobs[metrics])
            args += ["--metrics-port", os.environ["BENCH_PGJOBS_METRICS_PORT"]]
        if os.environ.get("BENCH_PGJOBS_MODE"):  # async: everything as threads of one process
            args += ["--mode", os.environ["BENCH_PGJOBS_MODE"]]
        return [spawn(args, workdir, "pgjobs.log", env)]

    def describe(self) -> dict[str, Any]:
        return {
            "job": "def noop(i) in the worker's thread pool",
            "single enqueue": "noop.perform_later(i): pgjobs' pool, autocommit, 1 statement/job",
            "bulk enqueue": "pgjobs.perform_all_later([...]) (COPY), one transaction per batch",
            "bulk enqueue, one class (bulk_fast)": "noop.perform_all_later_args([(i,), ...]): one "
            "statement per batch, no handles",
            "workers": "python -m pgjobs start (supervisor + workers + 1 dispatcher + the "
            "scheduler, which runs clear_finished at start-up, then hourly)"
            if not os.environ.get("BENCH_PGJOBS_SKIP_RECURRING")
            else "python -m pgjobs start --skip-recurring (supervisor + workers + 1 dispatcher, "
            "no scheduler: BENCH_PGJOBS_SKIP_RECURRING is set)",
            "mode": os.environ.get("BENCH_PGJOBS_MODE", "fork"),
            "metrics": f"--metrics-port {os.environ['BENCH_PGJOBS_METRICS_PORT']}"
            if os.environ.get("BENCH_PGJOBS_METRICS_PORT")
            else "off",
            "queue.yml": QUEUE_YML.split("\n", 1)[1].format(
                processes="P", extra="", **{**DEFAULTS, "threads": "T"}
            ),
        }

    def process_kind(self, cmdline: Sequence[str]) -> str:
        # pgjobs processes set their title: "pgjobs-worker: * (5 threads)", "pgjobs-supervisor: …"
        title = " ".join(cmdline)
        if title.startswith("pgjobs-"):
            return title.removeprefix("pgjobs-").split(":", 1)[0].split(" ", 1)[0]
        return ""  # a child still starting (before it sets its title): not counted


def _load(conn: psycopg.Connection[Any], n: int, *, finished: bool) -> int:
    """Insert ``n`` noop jobs (finished, or ready with their ready rows); the first id."""
    if n <= 0:
        return 0
    row = conn.execute(RESERVE, {"n": n}).fetchone()
    last = int(row[0]) if row else 0
    first = last - n + 1
    params = {
        "first": first,
        "last": last,
        "class_name": "benchmarks.jobs:noop",
        "executions": 1 if finished else 0,
        "finished_at": datetime.now(UTC) if finished else None,
    }
    conn.execute(LOAD_JOBS, params)
    if not finished:
        conn.execute(LOAD_READY, params)
    return first
