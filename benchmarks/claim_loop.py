"""``python -m benchmarks.claim_loop``: where one worker's claim loop spends a no-op drain.

One in-process :class:`~pgjobs.processes.worker.Worker` (its real job threads, its real loop)
drains ``--jobs`` no-op jobs from a fresh database, instrumented: the claims it made and their
sizes, the statements it ran per job and the time spent in them (round trip, planning, execution
and commit, as the loop sees them), the time the loop slept waiting for a job to end, and the
process's CPU time per job.  It is the measurement behind issue 22 (``threads: 10`` drained at a
fifth of ``threads: 200``): compare ``--prefetch 0`` with the default.

    python -m benchmarks.claim_loop [--jobs 20000] [--threads 10] [--prefetch 200] \\
        [--durable-claims false]
"""

from __future__ import annotations

import argparse
import collections
import os
import threading
import time
from typing import Any

import psycopg

import pgjobs
from benchmarks.common import DEFAULT_URL, Databases, with_database
from pgjobs import runtime
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.processes.executor import Claimed
from pgjobs.processes.worker import Worker

STARTED = "SELECT EXISTS (SELECT 1 FROM pgjobs_claimed_executions)"
DONE = (
    "SELECT NOT EXISTS (SELECT 1 FROM pgjobs_ready_executions)"
    " AND NOT EXISTS (SELECT 1 FROM pgjobs_claimed_executions)"
)


def drain(url: str, jobs: int, worker_config: WorkerConfig, durable: bool) -> dict[str, Any]:
    from benchmarks.jobs import noop

    database = pgjobs.configure(url)
    for first in range(0, jobs, 1000):
        pgjobs.perform_all_later([noop.build(i) for i in range(first, min(jobs, first + 1000))])
    worker = Worker(
        Database(url), Config(heartbeat_interval=30, durable_claims=durable), worker_config
    )
    sizes: collections.Counter[int] = collections.Counter()
    spent = {"statements": 0.0, "waits": 0.0}
    count = {"statements": 0, "waits": 0}
    execute, claim, wait = worker.execute, worker._claim, worker.wake.wait

    def timed_execute(template: str, params: dict[str, Any] | None = None) -> Any:
        began = time.perf_counter()
        try:
            return execute(template, params)
        finally:
            spent["statements"] += time.perf_counter() - began
            count["statements"] += 1

    def counted_claim(*args: Any, **kwargs: Any) -> list[Claimed]:
        got = claim(*args, **kwargs)
        sizes[len(got)] += 1
        return got

    def timed_wait(timeout: float | None = None) -> bool:
        began = time.perf_counter()
        try:
            return wait(timeout)
        finally:
            spent["waits"] += time.perf_counter() - began
            count["waits"] += 1

    worker.execute = timed_execute  # type: ignore[method-assign]
    worker._claim = counted_claim  # type: ignore[method-assign]
    worker.wake.wait = timed_wait  # type: ignore[method-assign]
    loop = threading.Thread(target=worker.run, daemon=True)
    with psycopg.connect(url, autocommit=True) as monitor:
        loop.start()
        while not _true(monitor, STARTED):
            time.sleep(0.002)
        began, cpu = time.perf_counter(), time.process_time()
        for key in spent:  # from the first claim on, like the drain scenario
            spent[key], count[key] = 0.0, 0
        while not _true(monitor, DONE):
            time.sleep(0.005)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    worker.stop()
    loop.join(10)
    runtime.use(None)
    database.close()
    claims = sum(sizes.values())
    return {
        "rate": jobs / seconds,
        "seconds": seconds,
        "claims": claims,
        "jobs_per_claim": sum(k * v for k, v in sizes.items()) / max(claims, 1),
        "statements_per_job": count["statements"] / jobs,
        "in_statements": spent["statements"],
        "waits": count["waits"],
        "waiting": spent["waits"],
        "cpu_us_per_job": cpu / jobs * 1e6,
        "sizes": dict(sorted(sizes.items())),
    }


def _true(conn: psycopg.Connection[Any], query: str) -> bool:
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claim_loop", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--prefetch", type=int, default=None, help="default: pgjobs' default")
    parser.add_argument("--durable-claims", choices=("true", "false"), default="true")
    args = parser.parse_args(argv)
    settings: dict[str, Any] = {"threads": args.threads}
    if args.prefetch is not None:
        settings["prefetch"] = args.prefetch
    dbs = Databases(args.database_url)
    try:
        name = dbs.create("claim_loop")
        url = with_database(args.database_url, name)
        pgjobs.migrate(url)
        found = drain(url, args.jobs, WorkerConfig(**settings), args.durable_claims == "true")
    finally:
        dbs.drop_all()
    print(
        f"{settings} durable_claims={args.durable_claims}: {found['rate']:,.0f} jobs/s "
        f"({args.jobs} jobs in {found['seconds']:.2f} s); {found['claims']} claims of "
        f"{found['jobs_per_claim']:.1f} jobs; {found['statements_per_job']:.3f} statements per "
        f"job, {found['in_statements']:.2f} s in them; {found['waits']} waits for a job to end, "
        f"{found['waiting']:.2f} s; worker CPU {found['cpu_us_per_job']:.0f} µs per job"
    )
    print(f"claim sizes (size: claims): {found['sizes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
