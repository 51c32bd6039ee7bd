"""The ``pgjobs`` command line.

Every command takes the same database options (``--database-url``, ``--schema``, ``--config``)
and reports pgjobs errors as one line on stderr with exit status 1 — never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgjobs.cli.application import import_application
from pgjobs.cli.common import (
    COMMANDS,
    _database_options,
    _open,
    command,
    database_settings,
    ready_database,
)
from pgjobs.cli.progress import Ticker
from pgjobs.db.urls import redact
from pgjobs.errors import ConfigurationError, PgJobsError
from pgjobs.observability import logs

if TYPE_CHECKING:
    from pgjobs.config.queue import Config
    from pgjobs.observability.metrics import HostExporter


@command("migrate")
def _migrate(args: argparse.Namespace) -> int:
    from pgjobs.db.migrate import migrate, migration_sql  # alembic: only for this command

    if args.sql:
        print(migration_sql(schema=args.schema))
        return 0
    chosen = database_settings(args)
    url = chosen.direct_url or chosen.url  # PostgreSQL itself when we know it; a pooler works
    with Ticker("pgjobs migrate") as ticker:
        migrate(url, schema=chosen.schema, step=ticker)
    print(f"pgjobs: database {redact(url)} is up to date", file=sys.stderr)
    return 0


def _stopped_while_starting(signum: int, frame: object) -> None:
    # Nothing is registered before the supervisor's own handlers replace this one (its first
    # step): a stop that comes while we connect, migrate or import the application (systemd
    # stopping a unit that is still starting, a restart racing a shutdown) is a clean exit.
    os._exit(0)


@command("start")
def _start(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _stopped_while_starting)
    from pgjobs.config.queue import load_config
    from pgjobs.processes.supervisor import Supervisor

    logs.setup(args.log_level, args.log_format)
    os.environ["PGJOBS_LOG_LEVEL"], os.environ["PGJOBS_LOG_FORMAT"] = (
        args.log_level,
        args.log_format,
    )
    config = load_config(args.config)
    if args.mode:
        config = dataclasses.replace(config, mode=args.mode)
    chosen = ready_database(args)
    exporter = _metrics_exporter(args, config)  # before the application imports prometheus
    app = args.app or config.app
    if app:
        import_application(app)
    logs.capture_application_logs()  # after the import: logging the application set up wins
    recurring = args.recurring_schedule or os.environ.get("PGJOBS_RECURRING_SCHEDULE")
    extra = [] if args.skip_recurring else [("scheduler", 0)]
    if not args.skip_recurring:
        from pgjobs.config.recurring import load_recurring

        load_recurring(recurring)  # every problem in recurring.yml is reported before starting
    if chosen.transaction_pooling and not config.durable_claims:
        raise ConfigurationError(
            "durable_claims: false is a session setting (synchronous_commit), which a pooler in "
            "transaction mode does not keep: leave durable_claims on with transaction_pooling"
        )
    database = chosen.open(application_name="pgjobs-supervisor")
    supervisor = Supervisor(
        database,
        config,
        app=app,
        extra_children=extra,
        recurring_schedule=recurring,
        exporter=exporter,
    )
    return supervisor.run()


def _metrics_exporter(args: argparse.Namespace, config: Config) -> HostExporter | None:
    """The host's ``/metrics`` when ``--metrics-port`` or ``metrics.port`` asks for it."""
    port = args.metrics_port if args.metrics_port is not None else config.metrics.port
    if port is None:
        return None
    from pgjobs.observability.multiproc import multiprocess_directory

    directory = multiprocess_directory()  # before prometheus_client is first imported
    try:
        from pgjobs.observability.metrics import HostExporter
    except ImportError as exc:
        raise ConfigurationError(
            f"--metrics-port / metrics.port needs prometheus_client: {exc}"
        ) from exc
    return HostExporter(
        args.metrics_host or config.metrics.host,
        port,
        directory,
        refresh=config.metrics.refresh,
        alive_threshold=config.process_alive_threshold,
    )


@command("status")
def _status(args: argparse.Namespace) -> int:
    from pgjobs.operations.queues import all_queues, rate_limits
    from pgjobs.store import blocked as blocked_store
    from pgjobs.store import processes as processes_store
    from pgjobs.store import rates as rates_store
    from pgjobs.store import semaphores as semaphores_store

    database = _open(args)
    with database.connection() as conn:
        procs = conn.execute(database.sql(processes_store.LIST)).fetchall()
        slots = conn.execute(database.sql(semaphores_store.LIST)).fetchall()
        waiting = dict(conn.execute(database.sql(blocked_store.COUNT_BY_KEY)).fetchall())
    queues = all_queues(database)
    rates = rate_limits(database)
    holding = {str(r[0]): int(r[1]) for r in slots}
    limits: list[dict[str, Any]] = [
        {"key": key, "holding": holding.get(key, 0), "blocked": int(waiting.get(key, 0))}
        for key in sorted(set(holding) | set(waiting))
        if not key.startswith(rates_store.LINE)  # a rate limit's line: shown with its key
    ]
    database.close()
    now = datetime.now(UTC)
    if args.json:
        print(
            json.dumps(
                {
                    "processes": [
                        {"id": p[0], "kind": p[1], "name": p[2], "hostname": p[3], "pid": p[4],
                         "supervisor_id": p[5], "metadata": p[6],
                         "last_heartbeat_at": p[7].isoformat(), "running_jobs": p[9]}
                        for p in procs
                    ],
                    "queues": [vars(q) for q in queues],
                    "concurrency": limits,
                    "rate_limits": [
                        {"key": r.key, "limit": r.limit, "period": r.period.total_seconds(),
                         "started": r.started, "waiting": r.waiting,
                         "free_at": r.free_at.isoformat() if r.free_at else None}
                        for r in rates
                    ],
                },
                indent=2,
            )
        )  # fmt: skip
        return 0
    print(f"{'KIND':<11} {'HOST':<20} {'PID':>7} {'HEARTBEAT':>10} {'JOBS':>5}  NAME")
    for p in procs:
        age = f"{(now - p[7]).total_seconds():.0f}s ago"
        print(f"{p[1]:<11} {p[3][:20]:<20} {p[4]:>7} {age:>10} {p[9]:>5}  {p[2]}")
    if not procs:
        print("(no pgjobs processes are running)")
    print()
    print(f"{'QUEUE':<24} {'SIZE':>8} {'LATENCY':>10}  PAUSED")
    for q in queues:
        print(f"{q.name[:24]:<24} {q.size:>8} {q.latency:>9.1f}s  {'yes' if q.paused else ''}")
    if not queues:
        print("(no ready jobs)")
    if limits:
        print()
        print(f"{'CONCURRENCY KEY':<40} {'HOLDING':>8} {'BLOCKED':>8}")
        for limit in limits:
            print(f"{limit['key'][:40]:<40} {limit['holding']:>8} {limit['blocked']:>8}")
    if rates:
        print()
        print(f"{'RATE LIMIT KEY':<40} {'LIMIT':>12} {'STARTED':>8} {'WAITING':>8}")
        for r in rates:
            per = f"{r.limit}/{r.period.total_seconds():g}s"
            print(f"{r.key[:40]:<40} {per:>12} {r.started:>8} {r.waiting:>8}")
    return 0


@command("pause")
@command("resume")
def _pause_or_resume(args: argparse.Namespace) -> int:
    from pgjobs.operations.queues import Queue

    database = _open(args)
    for name in args.queues:
        queue = Queue(name, database=database)
        queue.pause() if args.command == "pause" else queue.resume()
        print(f"{args.command}d {name}")  # paused / resumed
    database.close()
    return 0


@command("check")
def _check(args: argparse.Namespace) -> int:
    """Validate queue.yml and recurring.yml; print every problem of both; exit 1 on any."""
    from pgjobs.config.queue import load_config
    from pgjobs.config.recurring import load_recurring
    from pgjobs.errors import ConfigurationError

    if args.app:
        import_application(args.app)
    failed = False
    try:
        config = load_config(args.config)
        where = config.path or "defaults (no config/queue.yml)"
        print(f"{where}: ok ({len(config.workers)} workers, {len(config.dispatchers)} dispatchers)")
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        failed = True
    try:
        tasks = load_recurring(args.recurring_schedule)
        print(f"recurring schedule: ok ({len(tasks)} tasks)")
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        failed = True
    return 1 if failed else 0


@command("recurring")
def _recurring(args: argparse.Namespace) -> int:
    from pgjobs.operations.recurring import list_tasks, run_now

    database = _open(args)
    try:
        if args.action == "run":
            handle = run_now(database, args.key)
            print(
                f"enqueued {args.key}: job {handle.job_id}"
                if handle
                else f"{args.key}: not enqueued"
            )
            return 0
        tasks = list_tasks(database)
    finally:
        database.close()
    if args.json:
        print(json.dumps([vars(t) for t in tasks], indent=2, default=str))
        return 0
    print(f"{'KEY':<28} {'SCHEDULE':<28} {'LAST RUN':<26} NEXT RUN")
    for t in tasks:
        last = t.last_run_at.isoformat(timespec="seconds") if t.last_run_at else "-"
        nxt = t.next_run_at.isoformat(timespec="seconds") if t.next_run_at else "-"
        print(f"{t.key[:28]:<28} {t.schedule[:28]:<28} {last:<26} {nxt}")
    if not tasks:
        print("(no recurring tasks; static ones appear once a scheduler has started)")
    return 0


@command("embedded")
def _embedded(args: argparse.Namespace) -> int:
    from pgjobs.db import embedded

    if args.action == "stop" and args.all:
        for directory in embedded.servers():
            stopped = embedded.stop(directory)
            state = "stopped" if stopped else "not running"
            print(f"{state}: the embedded PostgreSQL in {embedded.data_directory(directory)}")
        return 0
    where = embedded.data_directory(args.directory)
    if args.action == "stop":
        stopped = embedded.stop(args.directory)
        print(
            f"stopped the embedded PostgreSQL in {where}" if stopped else f"not running ({where})"
        )
        return 0
    if args.action == "url":  # started if it is not running: the URL then works at once
        print(embedded.start(args.directory))
        return 0
    pid = embedded.running_pid(args.directory)
    if not pid:
        print(f"not running ({where})")
        return 0
    print(f"running (pid {pid}) in {where}\nurl: {embedded.start(args.directory)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgjobs", description="A PostgreSQL-backed background job queue."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="create or upgrade the pgjobs tables")
    _database_options(p)
    p.add_argument("--sql", action="store_true", help="print the SQL instead of running it")

    p = sub.add_parser("start", help="run the supervisor with the configured processes")
    _database_options(p)
    p.add_argument("--app", help="module to import first (defines your jobs and hooks)")
    p.add_argument("--log-level", default=os.environ.get("PGJOBS_LOG_LEVEL", "INFO"))
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument(
        "--recurring-schedule",
        help="recurring.yml to use (default: $PGJOBS_RECURRING_SCHEDULE or config/recurring.yml)",
    )
    p.add_argument("--skip-recurring", action="store_true", help="run no scheduler")
    p.add_argument(
        "--mode",
        choices=["fork", "async"],
        help="fork: each worker a child process (default); async: workers, dispatchers and the "
        "scheduler as threads of one process (small deployments, development); overrides "
        "queue.yml's mode",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help='serve Prometheus /metrics for this host on this port (pip install "pgjobs[metrics]")',
    )
    p.add_argument("--metrics-host", help="address for /metrics (default 127.0.0.1)")

    p = sub.add_parser("status", help="live processes and queues")
    _database_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    for name, text in (
        ("pause", "pause queues (they still receive jobs)"),
        ("resume", "resume queues"),
    ):
        p = sub.add_parser(name, help=text)
        _database_options(p)
        p.add_argument("queues", nargs="+", metavar="QUEUE")

    p = sub.add_parser("check", help="validate queue.yml and recurring.yml; exit 1 on any problem")
    p.add_argument(
        "--config", help="queue.yml to check (default: $PGJOBS_CONFIG or config/queue.yml)"
    )
    p.add_argument("--recurring-schedule", help="recurring.yml to check")
    p.add_argument("--app", help="module to import first, so job classes resolve")

    p = sub.add_parser("recurring", help="recurring tasks: list, or run one now")
    rsub = p.add_subparsers(dest="action", required=True)
    q = rsub.add_parser("list", help="key, schedule, last run, next run")
    _database_options(q)
    q.add_argument("--json", action="store_true")
    q = rsub.add_parser("run", help="enqueue a task now (recorded as a manual run)")
    _database_options(q)
    q.add_argument("key")

    p = sub.add_parser(
        "embedded", help="the embedded development PostgreSQL: status, url (starts it) or stop"
    )
    p.add_argument("action", choices=["status", "url", "stop"])
    p.add_argument(
        "--all",
        action="store_true",
        help="stop: every embedded server of the project (the test suite's .pgjobs/test too)",
    )
    p.add_argument(
        "--directory",
        help="its directory (default: $PGJOBS_EMBEDDED_DIR, else .pgjobs in the project directory)",
    )

    # Failed jobs and retention; cancelling jobs; batches; the dashboard.  Each imports this module.
    from pgjobs.cli import batches as cli_batches
    from pgjobs.cli import control as cli_control
    from pgjobs.cli import jobs as cli_jobs
    from pgjobs.cli import web as cli_web

    cli_jobs.add_parsers(sub)
    cli_control.add_parser(sub)
    cli_batches.add_parser(sub)
    cli_web.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PgJobsError as exc:
        print(f"pgjobs: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output stopped (``| head``, ``| grep -q``): not an error.  Point
        # stdout at /dev/null so that flushing it at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
