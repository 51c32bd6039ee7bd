"""The four short scenarios, run the same way for every system (the long ones, backlog, soak and
hosts, are in :mod:`benchmarks.backlog`, :mod:`benchmarks.soak` and :mod:`benchmarks.hosts`).

Every measurement gets a fresh database: a copy of a per-system template into which the system
installed its schema (``CREATE DATABASE ... TEMPLATE``), dropped right after.  So no run sees
another's rows, dead tuples or statistics.  The Redis peers get the benchmark's redis-server,
flushed before and after each measurement (:meth:`System.fresh`).

- **single**: ``n`` jobs enqueued one per transaction from one client; jobs/s = n / loop time.
- **bulk**: ``n`` jobs enqueued in batches of ``batch`` (one transaction each); jobs/s likewise.
  A system with a fast path for many jobs of one kind (:meth:`System.enqueue_bulk_fast`) also
  runs it, right after its bulk run in each repetition: reported as ``bulk_fast``.
- **drain**: ``n`` jobs are enqueued (bulk), then the workers start.  The clock starts when a
  worker has claimed its first job (the system's ``started_sql`` turns true; polled every 2 ms,
  so interpreter start-up is not counted) and stops when no job is waiting or running
  (``done_sql``, polled every 10 ms; a Redis peer's monitor reads its keys instead).
  jobs/s = jobs / (stop - start).  Each configuration of the
  system's sweep runs once; the best runs ``repeat - 1`` more times.  The footprint (RSS of every
  process, connections in ``pg_stat_activity``) is sampled every 250 ms meanwhile.
- **latency**: the workers start idle; jobs are enqueued at a fixed ``rate`` for ``seconds``,
  each carrying ``time.time()`` taken just before its enqueue call; the job records its own
  start time first thing (:mod:`benchmarks.probe`).  latency = start - enqueue call.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import psycopg

from benchmarks import probe
from benchmarks.common import (
    WARMUP,
    Databases,
    Summary,
    System,
    Timed,
    WorkerSetup,
    check_alive,
    percentile,
    stop,
    subprocess_env,
    tail,
)
from benchmarks.footprint import Footprint

#: What ``--only`` runs by default: the short scenarios.
DEFAULT_SCENARIOS = ("single", "bulk", "drain", "latency")
#: Every scenario; backlog, soak, hosts and history take minutes each, so they run only when named.
SCENARIOS = (*DEFAULT_SCENARIOS, "backlog", "soak", "hosts", "history")
DONE_POLL = 0.01  # seconds between "is the queue empty" polls while draining
SETTLE = 2.0  # seconds after the drain clock starts before the last footprint sample
LATENCY_SKIP = 10  # first paced jobs not counted (the worker may still be on the warm-up jobs)


@dataclass(frozen=True)
class Options:
    url: str
    jobs: int
    repeat: int
    batch: int
    only: tuple[str, ...]
    latency_rate: float
    latency_seconds: float
    sweep: bool
    time_limit: float
    backlog_jobs: int = 1_000_000
    backlog_ready: int = 10_000
    backlog_window: float = 20.0
    soak_rate: float = 200.0
    soak_seconds: float = 600.0
    soak_sample: float = 10.0
    soak_hold: bool = True
    hosts: tuple[int, ...] = (1, 2, 4, 8)
    hosts_modes: tuple[str, ...] = ("direct", "pgbouncer")  # or "unprepared" (hosts.MODES)
    hosts_threads: int = 10
    hosts_scheduler: bool = False
    hosts_pool_size: int = 20
    history_jobs: int = 10_000_000
    history_drain_jobs: int = 50_000
    history_page_repeat: int = 5


class Runner:
    def __init__(self, options: Options, dbs: Databases, say: Callable[[str], None]) -> None:
        self.options = options
        self.dbs = dbs
        self.say = say
        #: The 1-minute load average after each measurement: other work on the machine shows here.
        self.loads: list[float] = []

    def note_load(self) -> None:
        self.loads.append(round(os.getloadavg()[0], 2))

    # -- the whole run --------------------------------------------------------------------------

    def run(self, systems: Sequence[System]) -> dict[str, dict[str, Any]]:
        """Every selected scenario for every system; results by system name.

        Scenario by scenario, the systems take turns within each repetition (pgjobs, peer,
        peer, pgjobs, ...), so a change in the machine's background load during the run is
        spread over all of them rather than landing on one.
        """
        from benchmarks import backlog, history, hosts, soak  # they use this module's helpers

        o = self.options
        results: dict[str, dict[str, Any]] = {s.name: {"settings": s.describe()} for s in systems}
        templates: dict[str, str] = {}
        try:
            for system in systems:
                templates[system.name] = system.prepare(self.dbs)
            for scenario in (s for s in SCENARIOS if s in o.only):
                self.say(scenario)
                if scenario == "drain":
                    found = self.drain(systems, templates)
                elif scenario == "latency":
                    found = self.latency(systems, templates)
                elif scenario == "backlog":
                    found = backlog.run(self, systems, templates)
                elif scenario == "soak":
                    found = soak.run(self, systems, templates)
                elif scenario == "hosts":
                    found = hosts.run(self, systems, templates)
                elif scenario == "history":
                    found = history.run(self, systems, templates)
                else:
                    for name, values in self.rates(systems, templates, scenario).items():
                        results[name].update(values)
                    continue
                for name, value in found.items():
                    results[name][scenario] = value
        finally:
            for system in systems:
                if system.name in templates:
                    system.discard(self.dbs, templates[system.name])
        return results

    # -- single and bulk enqueue --------------------------------------------------------------

    def rates(
        self, systems: Sequence[System], templates: dict[str, str], scenario: str
    ) -> dict[str, dict[str, Any]]:
        """Single or bulk enqueue, by system: ``{name: {scenario: summary}}`` (and, for bulk,
        ``"bulk_fast"`` for a system with a fast path, measured right after its bulk run)."""
        o = self.options
        timed: dict[tuple[str, str], list[Timed]] = {}
        for r in range(o.repeat):
            for system in systems:
                fast = scenario == "bulk" and system.has_bulk_fast()
                for kind in (scenario, "bulk_fast") if fast else (scenario,):
                    with system.fresh(self.dbs, templates[system.name]) as url:
                        if kind == "single":
                            result = system.enqueue_single(url, o.jobs, o.time_limit)
                        elif kind == "bulk":
                            result = system.enqueue_bulk(url, o.jobs, o.batch, o.time_limit)
                        else:
                            result = system.enqueue_bulk_fast(url, o.jobs, o.batch, o.time_limit)
                    self.note_load()
                    timed.setdefault((system.name, kind), []).append(result)
                    capped = "" if result.jobs >= o.jobs else f" (time limit: {result.jobs} jobs)"
                    rate = result.jobs / result.seconds
                    self.say(f"  {system.name} {kind} #{r + 1}: {rate:,.0f} jobs/s{capped}")
        found: dict[str, dict[str, Any]] = {s.name: {} for s in systems}
        for (name, kind), runs in timed.items():
            found[name][kind] = {
                "unit": "jobs/s",
                **Summary.of([t.jobs / t.seconds for t in runs]).as_dict(),
                "jobs": [t.jobs for t in runs],
                "time_limited": any(t.jobs < o.jobs for t in runs),
            }
        return found

    # -- drain --------------------------------------------------------------------------------

    def drain(self, systems: Sequence[System], templates: dict[str, str]) -> dict[str, Any]:
        setups = {
            s.name: s.drain_setups() if self.options.sweep else s.quick_drain_setups()
            for s in systems
        }
        sweep: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
        for k in range(max(len(v) for v in setups.values())):
            for system in systems:
                if k >= len(setups[system.name]):
                    continue
                setup = setups[system.name][k]
                run = self.drain_once(system, templates[system.name], setup)
                entry = {"setup": setup.label, "settings": setup.settings}
                sweep[system.name].append({**entry, "processes": setup.processes, **run})
                capped = f" (time limit: {run['jobs']} jobs)" if run["time_limited"] else ""
                self.say(
                    f"  {system.name} drain [{setup.label}]: {run['rate']:,.0f} jobs/s{capped}"
                )
        best = {name: _fastest(runs) for name, runs in sweep.items()}
        chosen = {name: [sweep[name][k]] for name, k in best.items()}
        for r in range(self.options.repeat - 1):
            for system in systems:
                setup = setups[system.name][best[system.name]]
                run = self.drain_once(system, templates[system.name], setup)
                chosen[system.name].append(run)
                self.say(
                    f"  {system.name} drain [{setup.label}] #{r + 2}: {run['rate']:,.0f} jobs/s"
                )
        return {
            name: {
                "unit": "jobs/s",
                "best": setups[name][best[name]].label,
                "time_limited": any(run["time_limited"] for run in runs),
                **Summary.of([run["rate"] for run in runs]).as_dict(),
                "footprint": runs[-1]["footprint"],
                "sweep": sweep[name],
            }
            for name, runs in chosen.items()
        }

    def drain_once(self, system: System, template: str, setup: WorkerSetup) -> dict[str, Any]:
        total = self.options.jobs + WARMUP
        with (
            system.fresh(self.dbs, template) as url,
            tempfile.TemporaryDirectory(prefix="bench-") as tmp,
            closing(system.monitor(url, total)) as mon,
        ):
            system.enqueue_bulk(url, self.options.jobs, self.options.batch)
            workdir = Path(tmp)
            procs = system.start(url, setup, workdir, subprocess_env(url))
            sampler = Footprint(system, procs, mon)
            try:
                started = wait_until(mon.started, "started", procs, workdir, 0.002, 120.0)
                limit = self.options.time_limit
                stopped = wait_until(
                    mon.done,
                    "done",
                    procs,
                    workdir,
                    DONE_POLL,
                    limit,
                    every=(0.25, sampler),
                    give_up=True,
                )
                if stopped is None:  # the time limit: count what was done by now
                    stopped = time.perf_counter()
                    done = mon.finished()
                else:
                    done = total
                # One more footprint sample with the workers still up, at least SETTLE seconds
                # after they started work (so connections opened on a timer are counted).
                time.sleep(max(0.0, started + SETTLE - time.perf_counter()))
                sampler.sample()
            finally:
                stop(procs)
            finished = mon.finished()
        self.note_load()
        if done == total and finished < total:
            self.say(f"  warning: {system.name} finished {finished} of {total} jobs")
        return {
            "rate": done / (stopped - started),
            "seconds": stopped - started,
            "jobs": done,
            "backlog": total,
            "time_limited": done < total,
            "finished": finished,
            "footprint": sampler.summary(),
        }

    # -- latency ------------------------------------------------------------------------------

    def latency(self, systems: Sequence[System], templates: dict[str, str]) -> dict[str, Any]:
        runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
        for r in range(self.options.repeat):
            for system in systems:
                run = self.latency_once(system, templates[system.name])
                runs[system.name].append(run)
                self.say(
                    f"  {system.name} latency #{r + 1}: p50 {run['p50']:.2f} ms, "
                    f"p95 {run['p95']:.2f} ms, p99 {run['p99']:.2f} ms"
                )
        out: dict[str, Any] = {}
        for system in systems:
            found = runs[system.name]
            summary: dict[str, Any] = {
                "unit": "ms",
                "setup": system.latency_setup().label,
                "runs": found,
            }
            for key in ("p50", "p95", "p99", "max", "commit_p50", "commit_p99", "enqueue_p50"):
                summary[key] = Summary.of([run[key] for run in found]).as_dict()
            out[system.name] = summary
        return out

    def latency_once(self, system: System, template: str) -> dict[str, Any]:
        o = self.options
        setup = system.latency_setup()
        count = int(o.latency_rate * o.latency_seconds) + LATENCY_SKIP
        with (
            system.fresh(self.dbs, template) as url,
            tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        ):
            workdir = Path(tmp)
            path = workdir / "latency.txt"
            path.touch()
            env = subprocess_env(url, {"BENCH_LATENCY_FILE": str(path)})
            procs = system.start(url, setup, workdir, env)
            try:
                # Ready: a first timed job went through.  Then let the worker go idle.
                system.enqueue_paced(url, [-1000], o.latency_rate)
                wait_for_records(path, {-1000}, procs, workdir, 120.0)
                time.sleep(1.0)
                sent = system.enqueue_paced(url, range(count), o.latency_rate)
                started = wait_for_records(path, set(range(count)), procs, workdir, 60.0)
            finally:
                stop(procs)
        self.note_load()
        ids = range(LATENCY_SKIP, count)
        from_call = [(started[i] - sent[i][0]) * 1000 for i in ids]
        from_commit = [(started[i] - sent[i][1]) * 1000 for i in ids]
        enqueue = [(sent[i][1] - sent[i][0]) * 1000 for i in ids]
        return {
            "jobs": len(from_call),
            "p50": percentile(from_call, 50),
            "p95": percentile(from_call, 95),
            "p99": percentile(from_call, 99),
            "max": max(from_call),
            "commit_p50": percentile(from_commit, 50),
            "commit_p99": percentile(from_commit, 99),
            "enqueue_p50": percentile(enqueue, 50),
        }


# -- helpers --------------------------------------------------------------------------------


def _fastest(runs: Sequence[dict[str, Any]]) -> int:
    """The index of the run with the highest rate."""
    return max(range(len(runs)), key=lambda k: float(runs[k]["rate"]))


def _count(mon: psycopg.Connection[Any], query: str) -> int:
    row = mon.execute(query).fetchone()
    return int(row[0]) if row else 0


@overload
def wait_for(
    mon: psycopg.Connection[Any],
    query: str,
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    interval: float,
    timeout: float,
    every: tuple[float, Footprint] | None = None,
    give_up: Literal[False] = False,
) -> float: ...


@overload
def wait_for(
    mon: psycopg.Connection[Any],
    query: str,
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    interval: float,
    timeout: float,
    every: tuple[float, Footprint] | None = None,
    *,
    give_up: Literal[True],
) -> float | None: ...


def wait_for(
    mon: psycopg.Connection[Any],
    query: str,
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    interval: float,
    timeout: float,
    every: tuple[float, Footprint] | None = None,
    give_up: bool = False,
) -> float | None:
    """Poll ``query`` until it returns true; the ``perf_counter`` time it was first seen true.

    After ``timeout`` seconds: ``None`` if ``give_up``, else :class:`TimeoutError`.
    """

    def check() -> bool:
        row = mon.execute(query).fetchone()
        return bool(row and row[0])

    return wait_until(check, repr(query), procs, workdir, interval, timeout, every, give_up)


@overload
def wait_until(
    check: Callable[[], bool],
    what: str,
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    interval: float,
    timeout: float,
    every: tuple[float, Footprint] | None = None,
    give_up: Literal[False] = False,
) -> float: ...


@overload
def wait_until(
    check: Callable[[], bool],
    what: str,
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    interval: float,
    timeout: float,
    every: tuple[float, Footprint] | None = None,
    *,
    give_up: Literal[True],
) -> float | None: ...


@overload
def wait_until(
    check: Callable[[], bool],
    what: str,
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    interval: float,
    timeout: float,
    every: tuple[float, Footprint] | None,
    give_up: bool,
) -> float | None: ...


def wait_until(
    check: Callable[[], bool],
    what: str,
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    interval: float,
    timeout: float,
    every: tuple[float, Footprint] | None = None,
    give_up: bool = False,
) -> float | None:
    """:func:`wait_for` with any ``check``: the ``perf_counter`` time it first returned true."""
    deadline = time.perf_counter() + timeout
    next_sample = 0.0
    while True:
        now = time.perf_counter()
        if check():
            return now
        if now > deadline:
            if give_up:
                return None
            raise TimeoutError(f"{what} not true after {timeout:.0f}s\n{tail(workdir)}")
        check_alive(procs, workdir)
        if every is not None and now >= next_sample:
            every[1].sample()
            next_sample = now + every[0]
        time.sleep(interval)


def wait_for_records(
    path: Path,
    wanted: set[int],
    procs: Sequence[subprocess.Popen[bytes]],
    workdir: Path,
    timeout: float,
) -> dict[int, float]:
    """Wait until every job in ``wanted`` recorded its start in ``path``; their start times."""
    deadline = time.monotonic() + timeout
    while True:
        seen = probe.read(path)
        if wanted <= seen.keys():
            return seen
        if time.monotonic() > deadline:
            missing = len(wanted - seen.keys())
            raise TimeoutError(f"{missing} jobs never started\n{tail(workdir)}")
        check_alive(procs, workdir)
        time.sleep(0.05)
