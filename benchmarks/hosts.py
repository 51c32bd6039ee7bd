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
   ``pgjobs_processes`` and all of them are idle (the backlog scenario's test: < 15 % of a core
   over 1 s), so that the drain never overlaps interpreter start-up (32 processes starting on 2
   cores take many seconds).  Then it stops every process (``SIGSTOP``), enqueues ``--jobs``
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

from benchmarks.backlog import paused, wait_quiet
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

MODES = ("direct", "pgbouncer")
#: Connections per process, today's formula (docs/deployment.md, "Sizing max_connections"; the
#: scheduler's 3 as issue 21 states it).
FORMULA = {"supervisor": 2, "worker": 3, "dispatcher": 2, "scheduler": 3}
SAMPLE_IDLE = 1.0  # seconds between footprint samples while the hosts wait idle
SAMPLE_DRAIN = 0.25  # ... while they drain
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
                    f", start-up {result['startup']['seconds']:.0f} s"
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
            hostnames = _wait_registered(mon, hosts * per_host, procs, workdir, sampler)
            startup = wait_quiet(system, procs, mon, workdir)
            sampler.sample()
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
            self.admin = psycopg.connect(
                self.admin_url, autocommit=True, prepare_threshold=None
            )
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
        + f". {setup['jobs']:,} no-op jobs drained per run (enqueued in bulk while every "
        "host's processes were stopped, after all had started and gone idle); claim latency: "
        f"{setup['latency_rate']:g} jobs/s for {setup['latency_seconds']:g} s after the drain, "
        "from the enqueue's commit to the job's first line. PgBouncer: transaction mode, "
        f"`default_pool_size` {setup['pool_size']}. Median of the runs, (min{DASH}max).",
        "",
    ]
    rows = []
    bars = []
    for mode, by_h in modes.items():
        for h, e in by_h.items():
            lat = e["latency"]
            spread = (
                f" ({e['min']:,.0f}{DASH}{e['max']:,.0f})" if len(e["samples"]) > 1 else ""
            )
            rows.append(
                [
                    h,
                    mode,
                    f"{e['median']:,.0f}{spread}" + (" †" if e["time_limited"] else ""),
                    f"{e['ratio']:.2f}{TIMES}" if e["ratio"] is not None else DASH,
                    f"{lat['commit_p50']['median']:.2f}",
                    f"{lat['commit_p99']['median']:.2f}"
                    f" ({lat['commit_p99']['min']:.2f}{DASH}{lat['commit_p99']['max']:.2f})",
                    f"{e['cpu_us_per_job']['median']:.0f}",
                ]
            )
        hs = sorted(by_h, key=int)
        first, last = by_h[hs[0]], by_h[hs[-1]]
        if hs[0] == "1" and last["ratio"] is not None:
            ok = last["ratio"] >= BAR
            bars.append(
                [
                    mode,
                    f"H = {hs[-1]}: {last['median']:,.0f} vs H = 1: {first['median']:,.0f} jobs/s",
                    f"{last['ratio']:.0%}",
                    "yes" if ok else "**no**",
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
            "CPU µs/job",
        ],
        rows,
    )
    if bars:
        out += ["", f"No collapse: H = 8 keeps ≥ {BAR:.0%} of H = 1's drain rate:", ""]
        out += _table(["mode", "drain, medians", "H = 8 / H = 1", "met"], bars)
    out += [
        "",
        f"Connections (the most seen in one sample, of the run that held the most), against "
        f"today's formula per host: {shape} = {per_host}. In `pgbouncer` mode, "
        "`pg_stat_activity` counts PgBouncer's server connections (named after the last client "
        "that used them) plus the direct ones (the workers' LISTEN); PgBouncer's clients are "
        "counted by its `SHOW CLIENTS`.",
        "",
    ]
    rows = []
    for mode, by_h in modes.items():
        for h, e in by_h.items():
            fp = e["footprint"]
            names = _names(fp["connections"])
            bouncer = fp.get("pgbouncer")
            rows.append(
                [
                    h,
                    mode,
                    str(fp["total_connections"]),
                    str(per_host * int(h)),
                    names,
                    DASH if not bouncer else _bouncer_cell(bouncer),
                    f"{fp['rss_total_mb']:,.0f} ({fp['processes']})",
                ]
            )
    out += _table(
        [
            "H",
            "mode",
            "PostgreSQL connections",
            "formula",
            "by application_name (max each)",
            "PgBouncer",
            "RSS sum, MiB (processes)",
        ],
        rows,
    )
    kinds = sorted(
        {k for by_h in modes.values() for e in by_h.values() for k in e["cpu_by_kind"]}
    )
    if kinds:
        out += ["", "CPU µs per drained job, by process or backend (medians):", ""]
        rows = [
            [h, mode, *(f"{e['cpu_by_kind'].get(k, 0.0):.1f}" for k in kinds)]
            for mode, by_h in modes.items()
            for h, e in by_h.items()
        ]
        out += _table(["H", "mode", *kinds], rows)
    return out


def _names(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.removeprefix('pgjobs-')} {v}" for k, v in sorted(counts.items()))


def _bouncer_cell(b: dict[str, Any]) -> str:
    return (
        f"{b['clients']} clients ({_names(b['clients_by_name'])}); {b['servers']} server "
        f"connections, {b['direct']} direct; ≤ {b['waiting']} clients waiting, "
        f"longest wait {b['maxwait_ms']:g} ms"
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
