"""pgqueuer, with its recommended setup (asyncpg driver, ``pgq run`` workers).

- schema: ``pgq install`` (durable tables, its default);
- enqueue: ``await queries.enqueue("noop", payload, 0)`` on one asyncpg connection (one
  statement and one commit per job); bulk: ``queries.enqueue([...], [...], [...])`` per batch;
- workers: what ``pgq run benchmarks.systems.pgqueuer_:create --batch-size B`` does, one or
  more processes, stopped with SIGTERM.  pgqueuer 1.6's own ``pgq run`` cannot start with
  typer 0.29 (``--log-level`` arrives as a str: ``AttributeError: 'str' object has no attribute
  'name'``), so :func:`main` does the same two calls as that command: pgqueuer's logging setup,
  then ``pgqueuer.run(factory, batch_size=B)`` on its ``asyncio_run`` (uvloop);
- the entrypoint is ``async def`` (pgqueuer's native kind of job).

The worker processes import this module: :func:`create` reads ``BENCH_DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pgqueuer
import psycopg
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries

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

WORKER = "benchmarks.systems.pgqueuer_"

# The backlog loader: what enqueue and a worker write.  A job's history is its log rows
# (queued, picked, successful), already folded into the statistics as pgqueuer's periodic
# aggregation would have done (aggregated = true); queued jobs have their row and a queued log row.
RESERVE = "SELECT setval(s, nextval(s) + %(n)s - 1) FROM pg_get_serial_sequence('pgqueuer', 'id') s"
LOAD_LOG = """
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority, aggregated)
SELECT g, st::pgqueuer_status, 'noop', 0, %(aggregated)s
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g, unnest(%(statuses)s::text[]) st
"""
LOAD_QUEUED = """
INSERT INTO pgqueuer (id, priority, entrypoint, payload, status)
SELECT g, 0, 'noop', convert_to((g - %(first)s)::text, 'UTF8'), 'queued'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """The worker factory for ``pgq run``."""
    conn = await asyncpg.connect(os.environ["BENCH_DATABASE_URL"])
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        payload = job.payload or b""
        if b" " in payload:  # "<i> <sent_at>": the latency scenario
            probe.record(int(payload.split(b" ", 1)[0]))

    try:
        yield pgq
    finally:
        await conn.close()


async def _with_queries(url: str, body: Callable[[Queries], Awaitable[Any]]) -> Any:
    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        for i in range(-WARMUP, 0):
            await queries.enqueue("noop", str(i).encode(), 0)
        return await body(queries)
    finally:
        await conn.close()


class PgQueuerSystem(System):
    name = "pgqueuer"
    packages = ("pgqueuer", "asyncpg", "uvloop")
    started_sql = "SELECT EXISTS (SELECT 1 FROM pgqueuer WHERE status = 'picked')"
    done_sql = "SELECT NOT EXISTS (SELECT 1 FROM pgqueuer)"
    finished_sql = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
    done_upto_sql = "SELECT NOT EXISTS (SELECT 1 FROM pgqueuer WHERE id <= {upto})"
    waiting_sql = "SELECT count(*) FROM pgqueuer WHERE status = 'queued'"
    tables = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics")

    def install(self, url: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pgqueuer", "--pg-dsn", url, "install"],
            check=True,
            capture_output=True,
        )

    def enqueue_single(self, url: str, n: int, limit: float = math.inf) -> Timed:
        async def body(queries: Queries) -> Timed:
            clock = Stopwatch(limit)
            for i in range(n):
                await queries.enqueue("noop", str(i).encode(), 0)
                if i % CHECK_EVERY == 0 and clock.expired():
                    return clock.result(i + 1)
            return clock.result(n)

        result: Timed = asyncio.run(_with_queries(url, body))
        return result

    def enqueue_bulk(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        async def body(queries: Queries) -> Timed:
            clock = Stopwatch(limit)
            for first in range(0, n, batch):
                ids = range(first, min(n, first + batch))
                await queries.enqueue(
                    ["noop"] * len(ids), [str(i).encode() for i in ids], [0] * len(ids)
                )
                if clock.expired():
                    return clock.result(ids.stop)
            return clock.result(n)

        result: Timed = asyncio.run(_with_queries(url, body))
        return result

    def enqueue_paced(self, url: str, ids: Sequence[int], rate: float) -> list[tuple[float, float]]:
        async def body(queries: Queries) -> list[tuple[float, float]]:
            async def one(i: int, sent_at: float) -> None:
                await queries.enqueue("noop", f"{i} {sent_at!r}".encode(), 0)

            return await paced_async(ids, rate, one)

        result: list[tuple[float, float]] = asyncio.run(_with_queries(url, body))
        return result

    def drain_setups(self) -> list[WorkerSetup]:
        return [
            WorkerSetup(processes, {"batch_size": batch})
            for processes in (1, 2)
            for batch in (10, 50, 200)
        ]

    def latency_setup(self) -> WorkerSetup:
        return WorkerSetup(1, {"batch_size": 10})

    def load_backlog(self, url: str, ready: int, finished: int) -> int:
        first = 0
        with psycopg.connect(url, autocommit=True) as conn:
            for n, done in ((finished, True), (ready, False)):
                if n <= 0:
                    continue
                row = conn.execute(RESERVE, {"n": n}).fetchone()
                last = int(row[0]) if row else 0
                first = last - n + 1
                statuses = ["queued", "picked", "successful"] if done else ["queued"]
                params = {"first": first, "last": last, "statuses": statuses, "aggregated": done}
                if not done:
                    conn.execute(LOAD_QUEUED, params)
                conn.execute(LOAD_LOG, params)
            conn.execute("VACUUM (ANALYZE) pgqueuer, pgqueuer_log")
        return first

    def start(
        self, url: str, setup: WorkerSetup, workdir: Path, env: dict[str, str]
    ) -> list[subprocess.Popen[bytes]]:
        batch = str(setup.settings.get("batch_size", 10))
        args = [sys.executable, "-m", WORKER, "--batch-size", batch]
        return [spawn(args, workdir, f"pgqueuer-{k}.log", env) for k in range(setup.processes)]

    def describe(self) -> dict[str, Any]:
        return {
            "job": "async def noop(job) (pgqueuer entrypoint)",
            "single enqueue": 'await queries.enqueue("noop", payload, 0), one asyncpg connection',
            "bulk enqueue": "await queries.enqueue([...], [...], [...]) per batch",
            "workers": "pgq run --batch-size B, i.e. pgqueuer.run(factory, batch_size=B) on uvloop"
            " (PgQueuer + AsyncpgDriver; pgq's CLI itself fails under typer 0.29)",
        }


def main(argv: Sequence[str] | None = None) -> None:
    """``pgq run benchmarks.systems.pgqueuer_:create --batch-size B``, minus the CLI parsing."""
    from pgqueuer.adapters.cli.cli import asyncio_run
    from pgqueuer.core import logconfig

    parser = argparse.ArgumentParser(prog="python -m benchmarks.systems.pgqueuer_")
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args(argv)
    logconfig.setup_fancy_logger(logconfig.LogLevel.INFO)
    asyncio_run(pgqueuer.run(create, batch_size=args.batch_size))


if __name__ == "__main__":
    main()
