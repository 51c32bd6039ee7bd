"""procrastinate, with its recommended async setup.

- schema: ``procrastinate --app ... schema --apply``;
- enqueue: ``await noop.defer_async(i=i)`` on a ``PsycopgConnector`` app (its pool; one
  transaction per job); bulk: ``await noop.batch_defer_async(*kwargs)`` per batch;
- workers: ``procrastinate --app benchmarks.systems.procrastinate_.app worker --concurrency C``,
  one or more processes, stopped with SIGTERM; finished jobs are kept (its default,
  ``--delete-jobs never``), as pgjobs keeps them;
- the task is ``async def`` (procrastinate's native kind: sync tasks go through a thread).

The worker processes import this module: :data:`app` reads ``BENCH_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import procrastinate
import psycopg

from benchmarks import probe
from benchmarks.common import (
    CHECK_EVERY,
    WARMUP,
    Stopwatch,
    System,
    Timed,
    WorkerSetup,
    paced_async,
    spawn,
)

APP_PATH = "benchmarks.systems.procrastinate_.app"
# The worker logs two INFO lines per job by default; pgjobs and pgqueuer log none per job.
LOG_LEVEL = os.environ.get("BENCH_PROCRASTINATE_LOG_LEVEL", "warning")


async def noop(i: int, sent_at: float | None = None) -> None:
    if sent_at is not None:
        probe.record(i)


def make_app(url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    app.task(name="noop", queue="default")(noop)
    return app


app = make_app(os.environ.get("BENCH_DATABASE_URL", ""))

# The backlog loader: what defer and a worker write.  A finished job is its row (succeeded,
# attempts 1) and its three events; a todo row goes through procrastinate's own insert
# triggers (its deferred event, its NOTIFY), as a defer does.
RESERVE = (
    "SELECT setval(s, nextval(s) + %(n)s - 1)"
    " FROM pg_get_serial_sequence('procrastinate_jobs', 'id') s"
)
LOAD_JOBS = """
INSERT INTO procrastinate_jobs (id, queue_name, task_name, args, status, attempts)
SELECT g, 'default', 'noop', jsonb_build_object('i', g - %(first)s),
       %(status)s::procrastinate_job_status, %(attempts)s
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""
LOAD_EVENTS = """
INSERT INTO procrastinate_events (job_id, type)
SELECT g, t::procrastinate_job_event_type
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g,
     unnest(ARRAY['deferred', 'started', 'succeeded']) t
"""


class Procrastinate(System):
    name = "procrastinate"
    packages = ("procrastinate", "psycopg", "psycopg-pool")
    started_sql = (
        "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status = 'doing')"
        " OR EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status = 'succeeded')"
    )
    done_sql = (
        "SELECT NOT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
    )
    finished_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
    done_upto_sql = (
        "SELECT NOT EXISTS (SELECT 1 FROM procrastinate_jobs"
        " WHERE id <= {upto} AND status IN ('todo', 'doing'))"
    )
    waiting_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
    tables = ("procrastinate_jobs", "procrastinate_events", "procrastinate_workers")

    def install(self, url: str) -> None:
        env = {**os.environ, "BENCH_DATABASE_URL": url}
        subprocess.run(
            [sys.executable, "-m", "procrastinate", "--app", APP_PATH, "schema", "--apply"],
            env=env,
            check=True,
            capture_output=True,
        )

    async def _run(self, url: str, body: Any) -> Any:
        bench_app = make_app(url)
        async with bench_app.open_async():
            task = bench_app.tasks["noop"]
            for i in range(-WARMUP, 0):
                await task.defer_async(i=i)
            return await body(task)

    def enqueue_single(self, url: str, n: int, limit: float = math.inf) -> Timed:
        async def body(task: Any) -> Timed:
            clock = Stopwatch(limit)
            for i in range(n):
                await task.defer_async(i=i)
                if i % CHECK_EVERY == 0 and clock.expired():
                    return clock.result(i + 1)
            return clock.result(n)

        result: Timed = asyncio.run(self._run(url, body))
        return result

    def enqueue_bulk(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        async def body(task: Any) -> Timed:
            clock = Stopwatch(limit)
            for first in range(0, n, batch):
                last = min(n, first + batch)
                await task.batch_defer_async(*({"i": i} for i in range(first, last)))
                if clock.expired():
                    return clock.result(last)
            return clock.result(n)

        result: Timed = asyncio.run(self._run(url, body))
        return result

    def enqueue_paced(self, url: str, ids: Sequence[int], rate: float) -> list[tuple[float, float]]:
        async def body(task: Any) -> list[tuple[float, float]]:
            return await paced_async(ids, rate, lambda i, t: task.defer_async(i=i, sent_at=t))

        result: list[tuple[float, float]] = asyncio.run(self._run(url, body))
        return result

    def drain_setups(self) -> list[WorkerSetup]:
        return [
            WorkerSetup(1, {"concurrency": 1}),
            WorkerSetup(1, {"concurrency": 10}),
            WorkerSetup(2, {"concurrency": 10}),
            WorkerSetup(2, {"concurrency": 50}),
        ]

    def latency_setup(self) -> WorkerSetup:
        return WorkerSetup(1, {"concurrency": 1})

    def soak_setup(self) -> WorkerSetup:
        return WorkerSetup(1, {"concurrency": 10})

    def load_backlog(self, url: str, ready: int, finished: int) -> int:
        first = 0
        with psycopg.connect(url, autocommit=True) as conn:
            for n, done in ((finished, True), (ready, False)):
                if n <= 0:
                    continue
                row = conn.execute(RESERVE, {"n": n}).fetchone()
                last = int(row[0]) if row else 0
                first = last - n + 1
                status, attempts = ("succeeded", 1) if done else ("todo", 0)
                params = {"first": first, "last": last, "status": status, "attempts": attempts}
                conn.execute(LOAD_JOBS, params)
                if done:
                    conn.execute(LOAD_EVENTS, params)
            conn.execute("VACUUM (ANALYZE) procrastinate_jobs, procrastinate_events")
        return first

    def start(
        self, url: str, setup: WorkerSetup, workdir: Path, env: dict[str, str]
    ) -> list[subprocess.Popen[bytes]]:
        concurrency = str(setup.settings.get("concurrency", 1))
        args = [
            sys.executable,
            "-m",
            "procrastinate",
            "--log-level",
            LOG_LEVEL,
            "--app",
            APP_PATH,
            "worker",
            "--concurrency",
            concurrency,
        ]
        return [spawn(args, workdir, f"procrastinate-{k}.log", env) for k in range(setup.processes)]

    def describe(self) -> dict[str, Any]:
        return {
            "job": "async def noop(i) (procrastinate task)",
            "single enqueue": "await noop.defer_async(i=i), PsycopgConnector pool",
            "bulk enqueue": "await noop.batch_defer_async(*kwargs) per batch",
            "workers": "procrastinate worker --concurrency C (listen_notify on, jobs kept)",
        }
