"""Many hosts (issue 21): H supervisors against one PostgreSQL, directly and through PgBouncer.

``python -m benchmarks run --only hosts`` runs, for each H in ``--hosts`` (default 1, 2, 4, 8)
and each mode in ``--hosts-modes`` (``direct``, ``pgbouncer``), ``--repeat`` times, on a fresh
database each time:

1. H ``pgjobs start`` processes, each a "host" of its own: ``PGJOBS_HOSTNAME=bench-host-<k>``
   (pgjobs records it for every process), one worker process of ``--hosts-threads`` threads
   (default 10), one dispatcher, and no scheduler (``--skip-recurring``; ``--hosts-scheduler``
   starts it).  ``direct``: ``--database-url`` is PostgreSQL.  ``pgbouncer``: a PgBouncer 1.18
   in transaction mode (``tests/pgbouncer.py``, ``default_pool_size`` = ``--hosts-pool-size``,
   default 20) in front of the server; the supervisors get the PgBouncer URL as
   ``--database-url``/``PGJOBS_DATABASE_URL``, ``PGJOBS_TRANSACTION_POOLING=1`` and
   ``PGJOBS_DIRECT_DATABASE_URL`` = the server (their LISTEN connections go there).
2. The benchmark waits until every process of every host is registered in
   ``pgjobs_processes`` and all of them are idle (the backlog scenario's test, with 15 % of a
   core per host: processes, backends and PgBouncer over 1 s), so that the drain never overlaps
   interpreter start-up (24 processes starting on 2 cores take seconds); then measures the CPU
   the idle hosts use over 2 s.  Then it stops every process (``SIGSTOP``), enqueues ``--jobs``
   no-op jobs in bulk (``pgjobs.perform_all_later``, batches of ``--batch-size``, straight to
   PostgreSQL), and continues them (``SIGCONT``).
3. **Drain**: the drain scenario's clock: from the moment a worker has claimed a job (polled every
   2 ms) to the moment no job is waiting or running (every 10 ms); jobs/s = jobs / that time.
   The CPU time of the pgjobs processes, their backends and PgBouncer over the drain, per job.
4. **Claim latency**: after the drain, with every host idle for a second, jobs are enqueued one
   per transaction at ``--latency-rate`` jobs/s for ``--latency-seconds`` (straight to
   PostgreSQL, the latency scenario's probe: :mod:`benchmarks.probe`).  Claim latency = the
   job's start (its first line, on the same clock) minus the moment its enqueue call returned
   (the enqueue had committed): LISTEN/NOTIFY wake-up, the claim's own commit, the hand-off to a
   thread.  The first 10 jobs are not counted.
5. **Footprint**: every second while the hosts wait idle and every 250 ms while they drain (not
   while the latency enqueuer runs, whose own pool would be counted): the connections to the
   run's database in ``pg_stat_activity`` by ``application_name`` (through PgBouncer a server
   connection shows the name of the last client that used it), the pgjobs processes' RSS, and
   through PgBouncer ``SHOW POOLS`` / ``SHOW CLIENTS``: its server connections, its clients by
   ``application_name``, and the clients waiting for a server connection.  The maximum seen.

``BENCH_WAIT_WHILE=<pattern>``: before each measurement, wait while ``pgrep -f <pattern>`` finds
a process (e.g. ``pytest``, on a machine shared with test suites); a measurement that ends with
one running is reported.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import psutil  # type: ignore[import-untyped, unused-ignore]
import psycopg

from benchmarks.backlog import QUIET_CPU, QUIET_MIN, QUIET_WINDOW, paused
from benchmarks.common import (
    ROOT,
    WARMUP,
    Summary,
    System,
    check_alive,
    percentile,
    spawn,
    stop,
    subprocess_env,
)
from benchmarks.footprint import Footprint, _task_seconds, cpu_delta, cpu_seconds
from benchmarks.runner import DONE_POLL, LATENCY_SKIP, _count, wait_for, wait_for_records

if TYPE_CHECKING:
    from benchmarks.runner import Runner

#: ``unprepared`` (a control, not in the default set): direct to PostgreSQL, but with
#: ``PGJOBS_TRANSACTION_POOLING=1`` -- no server-side prepared statements, no session SET -- to
#: tell PgBouncer's own effect from transaction_pooling's.
MODES = ("direct", "pgbouncer", "unprepared")
DEFAULT_MODES = ("direct", "pgbouncer")
#: Connections per host, today's formula (docs/deployment.md, "Sizing max_connections"): W + 2 —
#: one per worker process (each host here runs one), the host's listener, and the supervisor's,
#: which its dispatcher and scheduler (threads of the supervisor) share.
FORMULA = {"supervisor": 1, "listener": 1, "worker": 1}
SAMPLE_IDLE = 1.0  # seconds between footprint samples while the hosts wait idle
SAMPLE_DRAIN = 0.25  # ... while they drain
IDLE_WINDOW = 2.0  # seconds over which the idle hosts' CPU is measured
SETTLE = 2.0  # the last drain sample at least this long after the first claim
DASH = "\u2013"  # en dash: ranges, empty cells
TIMES = "\u00d7"  # multiplication sign: ratios
BAR = 0.8  # issue 21: H = 8 keeps >= 80 % of H = 1's drain rate

QUEUE_YML = """\
# Written by the benchmark (benchmarks/hosts.py): one host of the many-hosts scenario.
heartbeat_interval: 1          # so the heartbeat connection is open (and counted) at once
shutdown_timeout: 5
listen_notify: true
preserve_finished_jobs: true
dispatchers:
  - polling_interval: 1
    batch_size: 500
workers:
  - queues: "*"
    threads: {threads}
    processes: 1
    polling_interval: 0.1
"""

POOLING_ENV = ("PGJOBS_TRANSACTION_POOLING", "PGJOBS_DIRECT_DATABASE_URL", "PGJOBS_DATABASE_URL")


def run(runner: Runner, systems: Sequence[System], templates: dict[str, str]) -> dict[str, Any]:
    o = runner.options
    system = next((s for s in systems if s.name == "pgjobs"), None)
    for other in systems:
        if other is not system:
            runner.say(f"  {other.name}: the hosts scenario runs pgjobs only, skipped")
    if system is None:
        return {}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {
        m: {h: [] for h in o.hosts} for m in o.hosts_modes
    }
    for r in range(o.repeat):
        # The modes take turns, and swap places every repetition.
        modes = list(o.hosts_modes) if r % 2 == 0 else list(reversed(o.hosts_modes))
        for h in o.hosts:
            for mode in modes:
                result = once(runner, system, templates[system.name], h, mode)
                runs[mode][h].append(result)
                fp = result["footprint"]
                runner.say(
                    f"  pgjobs hosts [H={h} {mode}] #{r + 1}: drain {result['rate']:,.0f} jobs/s"
                    f" ({result['seconds']:.2f} s), claim p50/p99 "
                    f"{result['latency']['commit_p50']:.2f}/{result['latency']['commit_p99']:.2f}"
                    f" ms, {fp['total_connections']} connections"
                    + (
                        f" (PgBouncer: {fp['pgbouncer']['clients']} clients,"
                        f" {fp['pgbouncer']['servers']} servers,"
                        f" {fp['pgbouncer']['waiting']} waiting at most)"
                        if fp.get("pgbouncer")
                        else ""
                    )
                    + f", CPU {result['cpu_us_per_job']['total']:.0f} µs/job"
                    f", idle {_idle_share(result):.0%} of a core"
                    f", start-up {_startup_s(result):.0f} s"
                    + (f", waited {result['waited_s']:.0f} s" if result["waited_s"] else "")
                    + (f" (overlapped: {result['overlapped']})" if result["overlapped"] else "")
                )
    out: dict[str, Any] = {}
    for mode in o.hosts_modes:
        by_h: dict[str, Any] = {}
        for h in o.hosts:
            found = runs[mode][h]
            lat = [x["latency"] for x in found]
            by_h[str(h)] = {
                **Summary.of([x["rate"] for x in found]).as_dict(),
                "time_limited": any(x["time_limited"] for x in found),
                "latency": {
                    k: Summary.of([x[k] for x in lat]).as_dict()
                    for k in ("commit_p50", "commit_p95", "commit_p99", "p99", "max")
                },
                "cpu_us_per_job": Summary.of(
                    [x["cpu_us_per_job"]["total"] for x in found]
                ).as_dict(),
                "cpu_by_kind": _median_by_kind([x["cpu_us_per_job"] for x in found]),
                "cpu_groups": _median_by_kind([_groups(x["cpu_us_per_job"]) for x in found]),
                "startup_s": Summary.of([_startup_s(x) for x in found]).as_dict(),
                "idle_cpu_cores": _median_by_kind([x["idle_cpu_cores"] for x in found]),
                "footprint": _widest([x["footprint"] for x in found]),
                "runs": found,
            }
        base = by_h.get("1") or by_h[str(o.hosts[0])]
        for entry in by_h.values():
            entry["ratio"] = entry["median"] / base["median"] if base["median"] else None
        out[mode] = by_h
    return {
        system.name: {
            "unit": "jobs/s",
            "setup": {
                "threads": o.hosts_threads,
                "processes_per_host": 1,
                "dispatchers_per_host": 1,
                "scheduler": o.hosts_scheduler,
                "pool_size": o.hosts_pool_size,
                "jobs": o.jobs,
                "latency_rate": o.latency_rate,
                "latency_seconds": o.latency_seconds,
                "queue.yml": QUEUE_YML.format(threads=o.hosts_threads),
            },
            "formula": {k: v for k, v in FORMULA.items() if o.hosts_scheduler or k != "scheduler"},
            "modes": out,
        }
    }


def once(runner: Runner, system: System, template: str, hosts: int, mode: str) -> dict[str, Any]:
    o = runner.options
    total = o.jobs + WARMUP
    waited = _wait_while(runner)
    with (
        runner.dbs.fresh(f"{system.name}_hosts", template) as url,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        psycopg.connect(url, autocommit=True, application_name="bench-monitor") as mon,
        ExitStack() as stack,
    ):
        workdir = Path(tmp)
        path = workdir / "latency.txt"
        path.touch()
        extra = {"BENCH_LATENCY_FILE": str(path)}
        target, bouncer = url, None
        if mode == "unprepared":
            extra |= {
                "PGJOBS_TRANSACTION_POOLING": "1",
                "PGJOBS_DIRECT_DATABASE_URL": url,
                "PGJOBS_DATABASE_URL": url,
            }
        if mode == "pgbouncer":
            bouncer = stack.enter_context(_pgbouncer(url, o.hosts_pool_size))
            target = bouncer.url
            extra |= {
                "PGJOBS_TRANSACTION_POOLING": "1",
                "PGJOBS_DIRECT_DATABASE_URL": url,
                "PGJOBS_DATABASE_URL": target,
            }
        procs = start_hosts(target, hosts, workdir, extra, o.hosts_threads, o.hosts_scheduler)
        sampler = HostsFootprint(system, procs, mon, bouncer)
        try:
            per_host = 4 if o.hosts_scheduler else 3
            began = time.perf_counter()
            hostnames = _wait_registered(mon, hosts * per_host, procs, workdir, sampler)
            registered = time.perf_counter() - began
            startup = _wait_quiet(system, procs, mon, workdir, bouncer, hosts)
            startup["registered_s"] = registered
            sampler.sample()
            idle = _idle(system, procs, mon, bouncer)
            with paused(procs):  # the backlog appears at once, to warm, idle processes
                system.enqueue_bulk(url, o.jobs, o.batch)
                cpu_before = _cpu(system, procs, mon, bouncer)
            started = wait_for(mon, system.started_sql, procs, workdir, 0.002, 120.0)
            stopped = wait_for(
                mon,
                system.done_sql,
                procs,
                workdir,
                DONE_POLL,
                o.time_limit,
                every=(SAMPLE_DRAIN, sampler),
                give_up=True,
            )
            if stopped is None:  # the time limit: count what was done by now
                stopped = time.perf_counter()
                done = _count(mon, system.finished_sql)
            else:
                done = total
            cpu = cpu_delta(cpu_before, _cpu(system, procs, mon, bouncer))
            time.sleep(max(0.0, started + SETTLE - time.perf_counter()))
            sampler.sample()
            finished = _count(mon, system.finished_sql)
            # Claim latency: a trickle of jobs to idle hosts.
            time.sleep(1.0)
            count = int(o.latency_rate * o.latency_seconds) + LATENCY_SKIP
            sent = system.enqueue_paced(url, range(count), o.latency_rate)
            seen = wait_for_records(path, set(range(count)), procs, workdir, 60.0)
        finally:
            stop(procs)
    runner.note_load()
    overlapped = _running()
    if done == total and finished < total:
        runner.say(f"  warning: finished {finished} of {total} jobs")
    ids = range(LATENCY_SKIP, count)
    from_call = [(seen[i] - sent[i][0]) * 1000 for i in ids]
    from_commit = [(seen[i] - sent[i][1]) * 1000 for i in ids]
    return {
        "hosts": hosts,
        "mode": mode,
        "rate": done / (stopped - started),
        "seconds": stopped - started,
        "jobs": done,
        "backlog": total,
        "time_limited": done < total,
        "finished": finished,
        "cpu_us_per_job": {
            "total": sum(cpu.values()) / max(done, 1) * 1e6,
            **{k: v / max(done, 1) * 1e6 for k, v in sorted(cpu.items())},
        },
        "latency": {
            "jobs": len(from_commit),
            "commit_p50": percentile(from_commit, 50),
            "commit_p95": percentile(from_commit, 95),
            "commit_p99": percentile(from_commit, 99),
            "p99": percentile(from_call, 99),
            "max": max(from_commit),
        },
        "startup": startup,
        "idle_cpu_cores": idle,
        "waited_s": waited,
        "overlapped": overlapped,
        "hostnames": hostnames,
        "footprint": sampler.summary(),
    }


# -- the hosts ------------------------------------------------------------------------------


def start_hosts(
    url: str,
    hosts: int,
    workdir: Path,
    extra: dict[str, str],
    threads: int,
    scheduler: bool,
) -> list[subprocess.Popen[bytes]]:
    """``hosts`` supervisors, ``bench-host-1`` ..., each in its own session, one log each."""
    config = workdir / "queue.yml"
    config.write_text(textwrap.dedent(QUEUE_YML).format(threads=threads))
    args = [sys.executable, "-m", "pgjobs", "start", "--app", "benchmarks.jobs"]
    args += ["--database-url", url, "--config", str(config)]
    if not scheduler:
        args.append("--skip-recurring")
    procs = []
    for k in range(1, hosts + 1):
        env = subprocess_env(url, {"PGJOBS_HOSTNAME": f"bench-host-{k}"})
        for key in POOLING_ENV:  # only what this run sets (not the caller's environment)
            env.pop(key, None)
        env.update(extra)
        procs.append(spawn(args, workdir, f"host-{k}.log", env))
    return procs


def _wait_registered(
    mon: psycopg.Connection[Any],
    expected: int,
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    sampler: Footprint,
) -> dict[str, dict[str, int]]:
    """Wait until ``expected`` processes are registered; their kinds by host name."""
    deadline = time.monotonic() + 180.0
    while True:
        check_alive(procs, workdir)
        rows = mon.execute(
            "SELECT hostname, kind, count(*) FROM pgjobs_processes GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        if sum(int(n) for _, _, n in rows) >= expected:
            found: dict[str, dict[str, int]] = defaultdict(dict)
            for host, kind, n in rows:
                found[str(host)][str(kind)] = int(n)
            return dict(found)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{rows} registered, {expected} expected")
        sampler.sample()
        time.sleep(SAMPLE_IDLE)


def _cpu(
    system: System,
    procs: Sequence[subprocess.Popen[bytes]],
    mon: psycopg.Connection[Any],
    bouncer: Bouncer | None,
) -> dict[str, float]:
    found = cpu_seconds(system, procs, mon)
    if bouncer is not None and bouncer.pid:
        found["pgbouncer"] = _task_seconds(bouncer.pid)
    return found


def _wait_quiet(
    system: System,
    procs: Sequence[subprocess.Popen[bytes]],
    mon: psycopg.Connection[Any],
    workdir: Path,
    bouncer: Bouncer | None,
    hosts: int,
) -> dict[str, Any]:
    """The backlog scenario's "started and idle", with an allowance per host.

    Idle: less than ``QUIET_CPU`` of a core per host over ``QUIET_WINDOW`` s (processes, their
    backends and PgBouncer), at least ``QUIET_MIN`` s after the start; gives up after 120 s.
    (Eight idle hosts poll 80 times a second: through PgBouncer their backends alone may use
    more than the backlog scenario's 15 % of one core.)
    """
    began = time.perf_counter()
    last = _cpu(system, procs, mon, bouncer)
    while True:
        time.sleep(QUIET_WINDOW)
        check_alive(procs, workdir)
        now = _cpu(system, procs, mon, bouncer)
        recent = sum(cpu_delta(last, now).values())
        last = now
        elapsed = time.perf_counter() - began
        if elapsed >= QUIET_MIN and recent < QUIET_CPU * hosts * QUIET_WINDOW:
            return {"seconds": elapsed, "quiet": True}
        if elapsed > 120.0:
            return {"seconds": elapsed, "quiet": False}


def _idle(
    system: System,
    procs: Sequence[subprocess.Popen[bytes]],
    mon: psycopg.Connection[Any],
    bouncer: Bouncer | None,
) -> dict[str, float]:
    """The CPU the idle hosts use, in cores, over ``IDLE_WINDOW`` s: processes, backends,
    PgBouncer (:func:`_groups`)."""
    before = _cpu(system, procs, mon, bouncer)
    began = time.perf_counter()
    time.sleep(IDLE_WINDOW)
    used = cpu_delta(before, _cpu(system, procs, mon, bouncer))
    seconds = time.perf_counter() - began
    return {k: v / seconds for k, v in _groups(used).items()}


def _idle_share(result: dict[str, Any]) -> float:
    return float(sum(result["idle_cpu_cores"].values()))


def _running() -> str:
    """The processes matching ``$BENCH_WAIT_WHILE`` (``pgrep -f``) now: ``""`` when none."""
    pattern = os.environ.get("BENCH_WAIT_WHILE")
    if not pattern:
        return ""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return " ".join(found.stdout.split())


def _wait_while(runner: Runner) -> float:
    """Before a measurement: wait until no process matches ``$BENCH_WAIT_WHILE``; seconds."""
    began = time.monotonic()
    said = False
    while _running():
        if not said:
            runner.say(f"  waiting: {os.environ['BENCH_WAIT_WHILE']!r} is running")
            said = True
        time.sleep(10.0)
    return time.monotonic() - began


def _startup_s(result: dict[str, Any]) -> float:
    """Seconds from spawning the hosts to every process registered and idle."""
    startup = result["startup"]
    return float(startup["registered_s"] + startup["seconds"])


def _groups(cpu: dict[str, float]) -> dict[str, float]:
    """CPU per job of the pgjobs processes, of their PostgreSQL backends, and of PgBouncer.

    (Through PgBouncer a backend carries the name of the last client that used it, so only
    the backends' sum means anything there.)"""
    out = {"processes": 0.0, "backends": 0.0, "pgbouncer": 0.0}
    for kind, value in cpu.items():
        if kind == "total":
            continue
        group = "backends" if kind.startswith("db:") else kind if kind == "pgbouncer" else ""
        out[group or "processes"] += value
    return out


def _median_by_kind(cpu: list[dict[str, float]]) -> dict[str, float]:
    kinds = sorted({k for c in cpu for k in c if k != "total"})
    return {k: statistics.median(c.get(k, 0.0) for c in cpu) for k in kinds}


def _widest(prints: list[dict[str, Any]]) -> dict[str, Any]:
    """The footprint of the run that held the most connections (they differ little)."""
    return max(prints, key=lambda fp: int(fp["total_connections"]))


# -- PgBouncer ------------------------------------------------------------------------------


class Bouncer:
    def __init__(self, url: str, admin_url: str, directory: Path) -> None:
        self.url = url
        self.admin_url = admin_url
        self.directory = directory
        self.dbname = unquote(urlsplit(url).path.lstrip("/"))
        self.admin: psycopg.Connection[Any] | None = None

    @property
    def pid(self) -> int | None:
        with suppress(OSError, ValueError):
            return int((self.directory / "pgbouncer.pid").read_text().strip())
        return None

    def show(self, what: str) -> list[dict[str, Any]]:
        if self.admin is None or self.admin.closed:
            self.admin = psycopg.connect(self.admin_url, autocommit=True, prepare_threshold=None)
        cur = self.admin.execute(f"SHOW {what}")
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@contextmanager
def _pgbouncer(server_url: str, pool_size: int) -> Iterator[Bouncer]:
    """tests/pgbouncer.py's PgBouncer (transaction mode) in front of ``server_url``."""
    if str(ROOT) not in sys.path:  # tests/ is the repository's (python -m benchmarks: the cwd)
        sys.path.insert(0, str(ROOT))
    from tests import pgbouncer

    # PgBouncer runs as the postgres user: a directory of its own under /tmp.
    directory = Path(tempfile.mkdtemp(prefix="bench-pgbouncer-", dir="/tmp"))
    try:
        with pgbouncer.start(server_url, directory, pool_size=pool_size) as template:
            dbname = unquote(urlsplit(server_url).path.lstrip("/"))
            bouncer = Bouncer(
                template.format(dbname=dbname), template.format(dbname="pgbouncer"), directory
            )
            try:
                yield bouncer
            finally:
                if bouncer.admin is not None:
                    bouncer.admin.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- footprint ------------------------------------------------------------------------------


class HostsFootprint(Footprint):
    """:class:`Footprint` plus the sum of the RSS of every process of every host, and PgBouncer's
    pools and clients."""

    def __init__(
        self,
        system: System,
        procs: Sequence[subprocess.Popen[bytes]],
        mon: psycopg.Connection[Any],
        bouncer: Bouncer | None,
    ) -> None:
        super().__init__(system, procs, mon)
        self.bouncer = bouncer
        self.rss_total = 0
        self.processes = 0
        self.servers = 0  # PgBouncer's server connections to the run's database
        self.direct = 0  # pg_stat_activity rows that are not PgBouncer's server connections
        self.clients = 0  # PgBouncer's clients of the run's database
        self.client_names: dict[str, int] = defaultdict(int)
        self.waiting = 0  # clients waiting for a server connection
        self.maxwait_ms = 0.0

    def sample(self) -> None:
        super().sample()
        rss, n = 0, 0
        for popen in self.procs:
            with suppress(psutil.Error):
                root = psutil.Process(popen.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with suppress(psutil.Error):
                        rss += proc.memory_info().rss
                        n += 1
        self.rss_total = max(self.rss_total, rss)
        self.processes = max(self.processes, n)
        if self.bouncer is None:
            return
        row = self.mon.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchone()
        in_pg = int(row[0]) if row else 0
        db = self.bouncer.dbname
        for pool in self.bouncer.show("POOLS"):
            if pool.get("database") != db:
                continue
            servers = sum(int(v) for k, v in pool.items() if k.startswith("sv_"))
            self.servers = max(self.servers, servers)
            self.direct = max(self.direct, in_pg - servers)
            self.waiting = max(self.waiting, int(pool.get("cl_waiting", 0)))
            wait = float(pool.get("maxwait", 0)) * 1000 + float(pool.get("maxwait_us", 0)) / 1000
            self.maxwait_ms = max(self.maxwait_ms, wait)
        names: dict[str, int] = defaultdict(int)
        clients = 0
        for client in self.bouncer.show("CLIENTS"):
            if client.get("database") != db:
                continue
            clients += 1
            names[str(client.get("application_name") or "(unnamed)")] += 1
        self.clients = max(self.clients, clients)
        for name, k in names.items():
            self.client_names[name] = max(self.client_names[name], k)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["rss_total_mb"] = round(self.rss_total / 2**20, 1)
        out["processes"] = self.processes
        if self.bouncer is not None:
            out["pgbouncer"] = {
                "servers": self.servers,
                "direct": self.direct,
                "clients": self.clients,
                "clients_by_name": dict(sorted(self.client_names.items())),
                "waiting": self.waiting,
                "maxwait_ms": round(self.maxwait_ms, 1),
            }
        return out


# -- the report -----------------------------------------------------------------------------


def render(results: dict[str, Any]) -> list[str]:
    """The Markdown section of the hosts scenario (empty when it did not run)."""
    data = results["systems"].get("pgjobs", {}).get("hosts")
    if not data:
        return []
    setup, modes, formula = data["setup"], data["modes"], data["formula"]
    per_host = sum(formula.values())
    shape = " + ".join(f"{k} {v}" for k, v in formula.items())
    out = ["", "## Many hosts (issue 21)", ""]
    out += [
        f"Each host: `pgjobs start` with its own `PGJOBS_HOSTNAME`, 1 worker process of "
        f"{setup['threads']} threads, 1 dispatcher, "
        + ("the scheduler" if setup["scheduler"] else "no scheduler (`--skip-recurring`)")
        + f". {setup['jobs']:,} no-op jobs drained per run, enqueued in bulk while every "
        "host's processes were stopped (`SIGSTOP`, after all had started and gone idle); drain "
        "clock from the first claim to the empty queue. Claim latency: "
        f"{setup['latency_rate']:g} jobs/s for {setup['latency_seconds']:g} s after the drain, "
        "one transaction each, from the moment the enqueue call returned (committed) to the "
        "job's first line; the first 10 not counted. Enqueues go straight to PostgreSQL in both "
        f"modes. PgBouncer 1.18: transaction mode, `default_pool_size` {setup['pool_size']}. "
        f"Median of the runs, (min{DASH}max) when there are several."
        + (
            " `unprepared`: direct to PostgreSQL with `PGJOBS_TRANSACTION_POOLING=1` (no "
            "server-side prepared statements, no session `SET`), a control that tells "
            "PgBouncer's own effect from `transaction_pooling`'s."
            if "unprepared" in modes
            else ""
        ),
        "",
    ]
    rows = []
    bars = []
    for mode, by_h in modes.items():
        for h, e in by_h.items():
            lat, cpu = e["latency"], e["cpu_groups"]
            rows.append(
                [
                    h,
                    mode,
                    _spread(e, "{:,.0f}") + (" †" if e["time_limited"] else ""),
                    f"{e['ratio']:.2f}{TIMES}" if e["ratio"] is not None else DASH,
                    f"{lat['commit_p50']['median']:.2f}",
                    _spread(lat["commit_p99"], "{:.2f}"),
                    f"{lat['p99']['median']:.2f}",
                    f"{e['cpu_us_per_job']['median']:.0f} = {cpu['processes']:.0f} + "
                    f"{cpu['backends']:.0f}"
                    + (f" + {cpu['pgbouncer']:.0f}" if mode == "pgbouncer" else ""),
                    f"{e['startup_s']['median']:.0f}",
                ]
            )
        hs = sorted(by_h, key=int)
        first, last = by_h[hs[0]], by_h[hs[-1]]
        if hs[0] == "1" and len(hs) > 1 and last["ratio"] is not None:
            bars.append(
                [
                    mode,
                    f"H = {hs[-1]}: {last['median']:,.0f}; H = 1: {first['median']:,.0f}",
                    f"{last['ratio']:.0%}",
                    "yes" if last["ratio"] >= BAR else "**no**",
                ]
            )
    out += _table(
        [
            "H",
            "mode",
            "drain jobs/s",
            "ratio to H = 1",
            "claim p50 (ms)",
            "claim p99 (ms)",
            "p99 from the enqueue call (ms)",
            "CPU µs/job = pgjobs processes + backends (+ PgBouncer)",
            "start-up (s)",
        ],
        rows,
    )
    if any(e["time_limited"] for by_h in modes.values() for e in by_h.values()):
        out += ["", "† a run reached the time limit: its rate is that of the jobs done by then."]
    if bars:
        out += ["", f"Issue 21's bar, no collapse: the most hosts keep ≥ {BAR:.0%} of one host's "
                "drain rate (medians):", ""]  # fmt: skip
        out += _table(["mode", "drain jobs/s", "ratio", "met"], bars)
    out += [
        "",
        "Connections: the most seen in one sample (while idle and while draining; of the run "
        f"that held the most), against today's formula per host, {shape} = {per_host}. In "
        "`pgbouncer` mode `pg_stat_activity` holds PgBouncer's server connections (each named "
        "after the last client that used it) and the direct ones (the workers' LISTEN); "
        "PgBouncer's clients are its `SHOW CLIENTS`, the waits its `SHOW POOLS`. RSS: the sum "
        "over every process of every host (shared pages counted in each).",
        "",
    ]
    rows = []
    for mode, by_h in modes.items():
        for h, e in by_h.items():
            fp = e["footprint"]
            bouncer = fp.get("pgbouncer")
            rows.append(
                [
                    h,
                    mode,
                    str(fp["total_connections"]),
                    str(per_host * int(h)),
                    _names(fp["connections"]),
                    DASH if not bouncer else _bouncer_cell(bouncer),
                    f"{fp['rss_total_mb']:,.0f} ({fp['processes']})",
                    _idle_cell(e["idle_cpu_cores"], mode),
                ]
            )
    out += _table(
        [
            "H",
            "mode",
            "PostgreSQL connections",
            "formula",
            "by application_name",
            "PgBouncer",
            "RSS sum, MiB (processes)",
            "idle CPU, % of a core = processes + backends (+ PgBouncer)",
        ],
        rows,
    )
    overlaps = [
        f"H = {run['hosts']} {run['mode']} ({run['overlapped']})"
        for by_h in modes.values()
        for e in by_h.values()
        for run in e["runs"]
        if run.get("overlapped")
    ]
    if overlaps:
        out += ["", "Runs that ended with a `$BENCH_WAIT_WHILE` process running (counted): "
                + "; ".join(overlaps) + "."]  # fmt: skip
    out += [
        "",
        "Each host's `queue.yml` (the *Settings used* section below describes the other "
        "scenarios' `pgjobs start`, not this one's):",
        "",
        "```yaml",
        setup["queue.yml"].split("\n", 1)[1].rstrip(),
        "```",
    ]
    return out


def _idle_cell(idle: dict[str, float], mode: str) -> str:
    total = sum(idle.values())
    text = f"{total:.0%} = {idle['processes']:.0%} + {idle['backends']:.0%}"
    return text + (f" + {idle['pgbouncer']:.0%}" if mode == "pgbouncer" else "")


def _spread(summary: dict[str, Any], fmt: str) -> str:
    text = fmt.format(summary["median"])
    if len(summary["samples"]) > 1:
        text += f" ({fmt.format(summary['min'])}{DASH}{fmt.format(summary['max'])})"
    return text


def _names(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.removeprefix('pgjobs-')} {v}" for k, v in sorted(counts.items()))


def _bouncer_cell(b: dict[str, Any]) -> str:
    return (
        f"{b['clients']} clients ({_names(b['clients_by_name'])}); {b['servers']} server "
        f"connections + {b['direct']} direct; at most {b['waiting']} clients waiting, "
        f"longest wait {b['maxwait_ms']:g} ms"
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
