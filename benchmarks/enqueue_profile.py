"""Where an enqueue's time goes: CPU per job of the client and of its server backend, and the
Python path alone (issue 22; ``docs/performance.md#enqueue-issue-22``).

    python -m benchmarks.enqueue_profile db single|bulk|fast [--jobs N] [--database-url URL]
                                           [--profile]
    python -m benchmarks.enqueue_profile python

``db``: empties pgjobs' job tables in the database at ``URL`` (it must hold pgjobs' schema:
``pgjobs migrate``; default ``$BENCH_DATABASE_URL``), then enqueues ``N`` no-op jobs —
``single``: ``noop.perform_later(i)`` one by one; ``bulk``: ``pgjobs.perform_all_later([...])`` in
batches of 1,000; ``fast``: ``noop.perform_all_later_args([(i,), ...])`` in batches of 1,000 —
and prints the rate, the client's CPU time per job (``time.process_time``) and its pooled
connection's backend's (``/proc/<pid>/stat``: the server must run on this machine). CPU time is
what to compare on a busy machine; run the commits to compare in turn, several times
(``PYTHONPATH=<export>/src``). ``--profile``: the loop under cProfile (its times are inflated).

``python``: each step of the Python path with no database: process time per job, best of 7.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

import pgjobs
from pgjobs import runtime

DEFAULT_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 1000
TABLES = "pgjobs_jobs, pgjobs_ready_executions, pgjobs_scheduled_executions"


def _backend_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:  # the server runs elsewhere
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loops(n: int) -> dict[str, Callable[[], None]]:
    from benchmarks.jobs import noop

    def single() -> None:
        for i in range(n):
            noop.perform_later(i)

    def bulk() -> None:
        for first in range(0, n, BATCH):
            pgjobs.perform_all_later([noop.build(i) for i in range(first, min(n, first + BATCH))])

    def fast() -> None:
        for first in range(0, n, BATCH):
            noop.perform_all_later_args([(i,) for i in range(first, min(n, first + BATCH))])

    return {"single": single, "bulk": bulk, "fast": fast}


def on_database(url: str, mode: str, n: int, profile: bool) -> None:
    from benchmarks.jobs import noop

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES}")
        conn.execute("CHECKPOINT")  # the same start for every run
    database = pgjobs.configure(url)
    try:
        for i in range(-10, 0):  # the pool open, the statement prepared
            noop.perform_later(i)
        with database.connection() as conn:
            pid = conn.info.backend_pid  # the pool keeps one connection while nothing waits
        loop = loops(n)[mode]
        profiler = cProfile.Profile() if profile else None
        server = _backend_cpu(pid)
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        loop()
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = _backend_cpu(pid)
    finally:
        runtime.use(None)
        database.close()
    backend = f"{(after - server) / n * 1e6:.1f}" if server is not None and after else "?"
    print(
        f"{mode}: {n / wall:,.0f} jobs/s; CPU per job: client {cpu / n * 1e6:.1f} µs, "
        f"backend {backend} µs; 1-minute load {os.getloadavg()[0]:.2f}"
    )
    if profiler:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(30)


def python_path() -> None:
    """The per-job steps of perform_later and perform_all_later, no database."""
    from benchmarks.jobs import noop
    from pgjobs import clock
    from pgjobs.enqueue import core
    from pgjobs.enqueue.ids import new_job_id
    from pgjobs.jobs.base import NO_OPTIONS

    n = 20_000
    now = clock.now()
    jobs = [noop.build(i) for i in range(n)]
    plan = core._plan_bulk(jobs, "pgjobs_ready", None)
    for i, record in enumerate(plan.records):
        record[0] = i + 1
    many = core._plan_many(noop.job_class, NO_OPTIONS, [(i,) for i in range(n)])
    stamp = (1, now, "")

    class Cursor:
        def execute(self, *args: Any) -> Cursor:
            return self

        def fetchone(self) -> tuple[Any, ...]:
            return stamp

    class Database:
        schema = None

        def checkout(self) -> tuple[Cursor, Cursor]:
            return Cursor(), Cursor()

        def checkin(self, conn: object) -> None:
            pass

    steps: dict[str, Callable[[], object]] = {
        "noop.build(i): a Job": lambda: [noop.build(i) for i in range(n)],
        "  of which new_job_id()": lambda: [new_job_id() for _ in range(n)],
        "bulk: checks and arguments (_record)": lambda: [core._record(j, now) for j in jobs],
        "bulk: _plan_bulk (records and group)": lambda: core._plan_bulk(jobs, "pgjobs_ready", None),
        "bulk: statement parameters": lambda: core._many_statements(None, plan.group),
        "bulk: EnqueuedJob handles": lambda: core._handles(plan.records),
        "fast: rows' arguments (_plan_many)": lambda: core._plan_many(
            noop.job_class, NO_OPTIONS, [(i,) for i in range(n)]
        ),
        "fast: statement parameters": lambda: core._many_statements(None, many),
    }
    for name, step in steps.items():
        print(f"{name:40s} {_best(step, n):6.2f} µs per job")
    with _fake_database(core, Database()):
        single = _best(lambda: [noop.perform_later(i) for i in range(n)], n)
    print(f"{'single: perform_later, no connection':40s} {single:6.2f} µs per job")


@contextlib.contextmanager
def _fake_database(core: Any, database: Any) -> Iterator[None]:
    real = core._database
    core._database = lambda: database
    try:
        yield
    finally:
        core._database = real


def _best(step: Callable[[], object], n: int, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        started = time.process_time()
        step()
        times.append(time.process_time() - started)
    return min(times) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enqueue_profile")
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="CPU per job of the client and its backend")
    db.add_argument("mode", choices=("single", "bulk", "fast"))
    db.add_argument("--jobs", type=int, default=20_000)
    db.add_argument("--database-url", default=DEFAULT_URL)
    db.add_argument("--profile", action="store_true", help="the loop under cProfile")
    sub.add_parser("python", help="the Python path, no database")
    args = parser.parse_args()
    if args.command == "db":
        on_database(args.database_url, args.mode, args.jobs, args.profile)
    else:
        python_path()


if __name__ == "__main__":
    main()
