"""``python -m benchmarks.claim_ahead``: what claiming ahead (the ``prefetch`` worker key) costs
the jobs that wait in a worker's buffer behind long ones (issue 22).

The worst case for a buffer: two worker processes of ``threads`` threads, each of which has just
run short jobs (so it claims ahead), receive in one enqueue ``threads`` long jobs followed by
``--short`` short ones.  The worker that claims first takes the long jobs — all its threads — and,
with a buffer, short jobs behind them, which can start only when the long jobs end or when the
buffer is given back (``pgjobs.processes.prefetch.GIVE_BACK_AFTER``); the other worker is idle
meanwhile.  Without a buffer the other worker takes the short jobs at once.  Measured: each short
job's start time minus the time taken just before the enqueue call (p50, p99, max), for each
``--prefetch`` value in turn, ``--rounds`` times, every round on a fresh database.

    python -m benchmarks.claim_ahead [--prefetch 0,200] [--rounds 3] [--threads 10] \\
        [--short 100] [--long-seconds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pgjobs
from benchmarks import probe
from benchmarks.common import (
    DEFAULT_URL,
    Databases,
    WorkerSetup,
    percentile,
    stop,
    subprocess_env,
    with_database,
)
from benchmarks.runner import wait_for_records
from benchmarks.systems.pgjobs_ import PgJobs
from pgjobs import runtime

WARM = 400  # short jobs each round starts with, so that both workers know their jobs are short


def one_round(
    url: str, prefetch: int, threads: int, short: int, long_seconds: float
) -> list[float]:
    """The start latencies (ms) of the short jobs of one burst."""
    from benchmarks.jobs import noop, sleepy

    system = PgJobs()
    dbs = Databases(url)
    name = dbs.create("claim_ahead")
    db_url = with_database(url, name)
    try:
        pgjobs.migrate(db_url)
        database = pgjobs.configure(db_url)
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            workdir = Path(tmp)
            path = workdir / "latency.txt"
            path.touch()
            env = subprocess_env(db_url, {"BENCH_LATENCY_FILE": str(path)})
            setup = WorkerSetup(2, {"threads": threads, "prefetch": prefetch})
            procs = system.start(db_url, setup, workdir, env)
            try:
                sent = time.time()
                pgjobs.perform_all_later([noop.build(-i - 1, sent) for i in range(WARM)])
                wait_for_records(path, {-i - 1 for i in range(WARM)}, procs, workdir, 120.0)
                time.sleep(1.0)  # both idle again
                sent = time.time()
                burst = [sleepy.build(10_000 + i, long_seconds, sent) for i in range(threads)]
                burst += [noop.build(i, sent) for i in range(short)]
                pgjobs.perform_all_later(burst)
                wait_for_records(path, set(range(short)), procs, workdir, 60.0)
            finally:
                stop(procs)
            started = probe.read(path)
        runtime.use(None)
        database.close()
    finally:
        dbs.drop_all()
    return [(started[i] - sent) * 1000 for i in range(short)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claim_ahead", description=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--prefetch", default="0,200", help="prefetch values, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--short", type=int, default=100, help="short jobs behind the long ones")
    parser.add_argument("--long-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    values = [int(v) for v in args.prefetch.split(",")]
    found: dict[int, list[dict[str, Any]]] = {v: [] for v in values}
    for r in range(args.rounds):
        for value in values:  # in turn, so that the machine's load falls on each
            ms = one_round(args.database_url, value, args.threads, args.short, args.long_seconds)
            run = {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms)}
            found[value].append(run)
            print(
                f"prefetch={value} round {r + 1}: short jobs' start p50 {run['p50']:.1f} ms, "
                f"p99 {run['p99']:.1f} ms, max {run['max']:.1f} ms",
                flush=True,
            )
    print()
    print("| prefetch | p50 ms (median of rounds) | p99 ms | max ms |")
    print("| --- | --- | --- | --- |")
    for value, runs in found.items():
        cells = [
            f"{sorted(run[key] for run in runs)[len(runs) // 2]:.1f}"
            for key in ("p50", "p99", "max")
        ]
        print(f"| {value} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
