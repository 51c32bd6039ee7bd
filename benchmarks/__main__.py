"""``python -m benchmarks run --against procrastinate,pgqueuer,celery,dramatiq,rq [--jobs N] ...``

Measures pgjobs and the named peers in turn, in the same run, on the PostgreSQL server at
``--database-url`` (each measurement on a fresh database it creates and drops; the Redis peers
on a redis-server the command starts, flushed per measurement, and stops), then writes
``benchmarks/results/<date>.json`` and ``<date>.md``.  ``python -m benchmarks chart
<results.json> <out.png>`` draws a run's jobs/s.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import chart, hosts, limits, machine, redis_server, report
from benchmarks.common import DEFAULT_URL, ROOT, Databases, WorkerSetup
from benchmarks.runner import DEFAULT_SCENARIOS, SCENARIOS, Options, Runner
from benchmarks.systems import SYSTEMS, load
from benchmarks.systems.pgjobs_ import PgJobs


def _names(value: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}: choose from {', '.join(allowed)}"
        )
    return names


def _setup(value: str) -> WorkerSetup:
    try:
        return WorkerSetup.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=" ".join(__doc__.split("\n\n")[1].split())
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the benchmarks and write the results")
    peers = [n for n in SYSTEMS if n != "pgjobs"]
    run.add_argument(
        "--against",
        type=lambda v: _names(v, peers, "system"),
        default=(),
        help=f"peers to measure beside pgjobs, comma-separated ({', '.join(peers)}; celery, "
        "dramatiq and rq need a redis-server binary: the command starts its own)",
    )
    run.add_argument("--no-pgjobs", action="store_true", help="measure only the peers")
    run.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL),
        help="a role that may CREATE/DROP DATABASE (default: $BENCH_DATABASE_URL or "
        f"{DEFAULT_URL})",
    )
    run.add_argument("--jobs", type=int, default=20_000, help="jobs per run (default 20000)")
    run.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3)")
    run.add_argument(
        "--only",
        type=lambda v: _names(v, SCENARIOS, "scenario"),
        default=DEFAULT_SCENARIOS,
        help=f"scenarios to run, comma-separated, from {','.join(SCENARIOS)} (default: "
        f"{','.join(DEFAULT_SCENARIOS)}; backlog and soak take minutes and run only when named)",
    )
    run.add_argument("--batch-size", type=int, default=1000, help="bulk batch (default 1000)")
    run.add_argument(
        "--latency-rate", type=float, default=50.0, help="jobs/s in the latency scenario"
    )
    run.add_argument("--latency-seconds", type=float, default=10.0, help="seconds per latency run")
    run.add_argument(
        "--no-sweep",
        action="store_true",
        help="drain: skip the sweep, run only each system's last (largest) configuration",
    )
    run.add_argument(
        "--pgjobs-drain",
        action="append",
        type=_setup,
        default=[],
        metavar="SETUP",
        help="drain: run pgjobs with this worker configuration instead of its sweep, e.g. "
        '"threads=10 processes=2" (any worker key of queue.yml; repeat the option to sweep '
        "several); the peers sweep as usual",
    )
    run.add_argument(
        "--pgjobs-latency",
        type=_setup,
        metavar="SETUP",
        help='latency: pgjobs\' worker configuration, e.g. "threads=10" (default: threads=3 '
        "processes=1)",
    )
    run.add_argument(
        "--time-limit",
        type=float,
        default=30.0,
        help="seconds after which a single/bulk/drain run stops early and reports the rate of "
        "the jobs done so far (default 30; keeps slow systems from dominating the run time)",
    )
    run.add_argument(
        "--no-limits", action="store_true", help="skip the physical-limit proxy (pgbench)"
    )
    run.add_argument(
        "--backlog-jobs",
        type=int,
        default=1_000_000,
        help="backlog: the large backlog, ready or finished (default 1000000)",
    )
    run.add_argument(
        "--backlog-ready",
        type=int,
        default=10_000,
        help="backlog: the small backlog, and the jobs timed in every case (default 10000)",
    )
    run.add_argument(
        "--backlog-window",
        type=float,
        default=20.0,
        help="backlog: seconds the large ready backlog keeps draining for the sustained rate "
        "(default 20; 0: not measured)",
    )
    run.add_argument("--soak-rate", type=float, default=200.0, help="soak: jobs/s (default 200)")
    run.add_argument(
        "--soak-seconds",
        type=float,
        default=600.0,
        help="soak: seconds of enqueueing (default 600)",
    )
    run.add_argument(
        "--soak-sample", type=float, default=10.0, help="soak: seconds between samples (default 10)"
    )
    run.add_argument(
        "--soak-no-hold",
        action="store_true",
        help="soak: no long transaction (a control run)",
    )
    run.add_argument(
        "--hosts",
        type=lambda v: tuple(int(n) for n in v.split(",") if n.strip()),
        default=(1, 2, 4, 8),
        help="hosts: the numbers of hosts (supervisors) to run, comma-separated (default 1,2,4,8)",
    )
    run.add_argument(
        "--hosts-modes",
        type=lambda v: _names(v, hosts.MODES, "mode"),
        default=hosts.DEFAULT_MODES,
        help="hosts: direct to PostgreSQL, through PgBouncer, and/or unprepared (direct with "
        "PGJOBS_TRANSACTION_POOLING=1: a control); default direct,pgbouncer",
    )
    run.add_argument(
        "--hosts-threads", type=int, default=10, help="hosts: threads of each host's worker (10)"
    )
    run.add_argument(
        "--hosts-scheduler",
        action="store_true",
        help="hosts: start each host's scheduler too (default: --skip-recurring)",
    )
    run.add_argument(
        "--hosts-pool-size",
        type=int,
        default=20,
        help="hosts: PgBouncer's default_pool_size (default 20)",
    )
    run.add_argument(
        "--history-jobs",
        type=int,
        default=10_000_000,
        help="history: finished jobs of history to fill (default 10000000)",
    )
    run.add_argument(
        "--history-drain-jobs",
        type=int,
        default=50_000,
        help="history: jobs of each drain measured beside the history (default 50000)",
    )
    run.add_argument(
        "--history-page-repeat",
        type=int,
        default=5,
        help="history: timed requests per dashboard page (default 5)",
    )
    run.add_argument(
        "--name",
        help="file name of the results, without extension (default: the date, then -2, -3, ...)",
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="where to write <date>.json and <date>.md (default benchmarks/results)",
    )
    run.add_argument(
        "--chart",
        type=Path,
        metavar="PNG",
        help="also draw the run's jobs/s to this PNG (as the chart command does)",
    )
    render = sub.add_parser("render", help="rewrite a results .md from its .json")
    render.add_argument("json", type=Path, help="benchmarks/results/<date>.json")
    draw = sub.add_parser(
        "chart", help="draw a run's jobs/s per system and scenario (log scale) to a PNG"
    )
    draw.add_argument("json", type=Path, help="benchmarks/results/<date>.json")
    draw.add_argument("png", type=Path, help="the image to write, e.g. docs/images/benchmarks.png")
    return parser


def say(text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    names = ([] if args.no_pgjobs else ["pgjobs"]) + [n for n in args.against if n != "pgjobs"]
    if not names:
        raise SystemExit("benchmarks: nothing to measure")
    systems = [load(name) for name in names]  # fail early when a peer is not installed
    for system in systems:
        if isinstance(system, PgJobs):  # configurations given on the command line
            system.drain_override = tuple(args.pgjobs_drain)
            system.latency_override = args.pgjobs_latency
    options = Options(
        url=args.database_url,
        jobs=args.jobs,
        repeat=args.repeat,
        batch=args.batch_size,
        only=args.only,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        sweep=not args.no_sweep,
        time_limit=args.time_limit,
        backlog_jobs=args.backlog_jobs,
        backlog_ready=args.backlog_ready,
        backlog_window=args.backlog_window,
        soak_rate=args.soak_rate,
        soak_seconds=args.soak_seconds,
        soak_sample=args.soak_sample,
        soak_hold=not args.soak_no_hold,
        hosts=args.hosts,
        hosts_modes=args.hosts_modes,
        hosts_threads=args.hosts_threads,
        hosts_scheduler=args.hosts_scheduler,
        hosts_pool_size=args.hosts_pool_size,
        history_jobs=args.history_jobs,
        history_drain_jobs=args.history_drain_jobs,
        history_page_repeat=args.history_page_repeat,
    )
    began = time.monotonic()
    results: dict[str, Any] = {
        "command": "python -m benchmarks " + shlex.join(argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in vars(options).items()
            if k != "url"
        },
        "machine": machine.describe(args.database_url),
        "systems": {},
    }
    dbs = Databases(args.database_url)
    runner = Runner(options, dbs, say)
    try:
        if not args.no_limits:
            say("physical-limit proxy")
            results["limits"] = limits.measure(
                args.database_url, dbs, args.repeat, args.latency_rate, say
            )
        found = runner.run(systems)
        for system in systems:
            versions = {p: _version(p) for p in system.packages}
            results["systems"][system.name] = {
                "version": ", ".join(f"{p} {v}" for p, v in versions.items() if v),
                "store": system.store,
                **found[system.name],
            }
        redis = redis_server.describe()
        if redis:
            results["machine"]["redis"] = redis
    finally:
        dbs.drop_all()
        redis_server.shutdown()
    results["duration_s"] = time.monotonic() - began
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["load_average_after_each_measurement"] = runner.loads
    json_path, md_path = report.write(results, args.output_dir, args.name)
    say("")
    say(md_path.read_text())
    say(f"wrote {json_path} and {md_path}")
    if args.chart:
        chart.draw(results, args.chart)
        say(f"wrote {args.chart}")
    return 0


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "render":
        results = json.loads(args.json.read_text())
        args.json.with_suffix(".md").write_text(report.render(results))
        say(f"wrote {args.json.with_suffix('.md')}")
        return 0
    if args.command == "chart":
        chart.draw(json.loads(args.json.read_text()), args.png)
        say(f"wrote {args.png}")
        return 0
    return run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
