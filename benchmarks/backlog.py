"""Backlog scaling: does the drain rate depend on how many jobs wait, or on how many are kept?

Three cases, each on a fresh database whose jobs are written straight into the system's tables
with SQL (:meth:`System.load_backlog`: the rows the system's own enqueue and worker write, then
``VACUUM (ANALYZE)``), drained by the system's largest drain configuration (pgjobs: 50 threads x
2 processes):

- **ready_small**: ``small`` ready jobs (``--backlog-ready``, default 10,000);
- **ready_large**: ``large`` ready jobs (``--backlog-jobs``, default 1,000,000);
- **finished_large**: ``large`` finished jobs kept in the tables, then ``small`` ready ones.

Timed in every case: the first ``small`` jobs in claim order less a warm-up (the first tenth:
processes starting, connections opening, statements being prepared), from the moment every job
up to the ``small/10``-th is done to the moment every job up to the ``small``-th is done
(``done_upto_sql``, polled every 10 ms): jobs/s, and the CPU time the system's processes and
their PostgreSQL backends used meanwhile, per job (:func:`benchmarks.common.cpu_seconds`, much
less sensitive than the rate to other work on the machine).  For ready_small that is the drain's
end; every case does the same work, so the figures compare like with like.  In ready_large the
workers then go on until ``--backlog-window`` seconds (default 20) after the first claim: the
jobs done by then give a *sustained* rate over a deep backlog — which, on a server without
autovacuum, also pays for the dead rows of the jobs claimed so far.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped, unused-ignore]
import psycopg

from benchmarks.common import Summary, System, check_alive, stop, subprocess_env
from benchmarks.footprint import cpu_delta, cpu_seconds
from benchmarks.runner import DONE_POLL, _count, wait_for

if TYPE_CHECKING:
    from benchmarks.runner import Options, Runner

PLAN_LIMIT = 50  # jobs claimed by the EXPLAINed claim (pgjobs' 50 threads)
WARMUP_SHARE = 10  # the first 1/10 of the timed jobs are the warm-up, not timed
QUIET_MIN, QUIET_WINDOW, QUIET_CPU = 3.0, 1.0, 0.15  # idle: < 15 % of a core over 1 s, after 3 s


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    ready: int
    finished: int


def cases(o: Options) -> list[Case]:
    small, large = o.backlog_ready, o.backlog_jobs
    return [
        Case("ready_small", f"{small:,} ready", small, 0),
        Case("ready_large", f"{large:,} ready", large, 0),
        Case("finished_large", f"{large:,} finished + {small:,} ready", small, large),
    ]


def supports(system: System) -> bool:
    return bool(system.done_upto_sql) and type(system).load_backlog is not System.load_backlog


def run(runner: Runner, systems: Sequence[System], templates: dict[str, str]) -> dict[str, Any]:
    o = runner.options
    chosen = [s for s in systems if supports(s)]
    for system in systems:
        if system not in chosen:
            runner.say(f"  {system.name}: no backlog loader, skipped")
    found: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.name: {c.key: [] for c in cases(o)} for s in chosen
    }
    plans: dict[str, dict[str, str]] = {s.name: {} for s in chosen}
    for r in range(o.repeat):
        for case in cases(o):
            for system in chosen:
                result = once(runner, system, templates[system.name], case, plan=r == 0)
                plan = result.pop("claim_plan", None)
                if plan:
                    plans[system.name][case.key] = plan
                found[system.name][case.key].append(result)
                sustained = result.get("sustained")
                extra = (
                    f"; sustained {sustained['rate']:,.0f} jobs/s over {sustained['seconds']:.1f}"
                    f" s ({sustained['jobs']:,} jobs)"
                    if sustained
                    else ""
                )
                capped = " (time limit)" if result["time_limited"] else ""
                runner.say(
                    f"  {system.name} backlog [{case.label}] #{r + 1}: {result['rate']:,.0f} jobs/s"
                    f", {result['cpu_us_per_job']['total']:.0f} µs CPU/job over the first "
                    f"{result['jobs']:,}{capped}{extra} (loaded in {result['load_s']:.0f} s)"
                )
    out: dict[str, Any] = {}
    for system in chosen:
        by_case: dict[str, Any] = {}
        for case in cases(o):
            runs = found[system.name][case.key]
            entry: dict[str, Any] = {
                "label": case.label,
                "ready": case.ready,
                "finished": case.finished,
                **Summary.of([x["rate"] for x in runs]).as_dict(),
                "time_limited": any(x["time_limited"] for x in runs),
                "runs": runs,
            }
            cpu = [x["cpu_us_per_job"] for x in runs]
            entry["cpu_us_per_job"] = Summary.of([c["total"] for c in cpu]).as_dict()
            kinds = sorted({k for c in cpu for k in c if k != "total"})
            entry["cpu_by_kind"] = {k: statistics.median(c.get(k, 0.0) for c in cpu) for k in kinds}
            sustained = [x["sustained"] for x in runs if x.get("sustained")]
            if sustained:
                entry["sustained"] = Summary.of([x["rate"] for x in sustained]).as_dict()
                entry["sustained_cpu_us_per_job"] = Summary.of(
                    [x["cpu_us_per_job"]["total"] for x in sustained]
                ).as_dict()
            by_case[case.key] = entry
        base = by_case["ready_small"]["median"]
        cpu_base = by_case["ready_small"]["cpu_us_per_job"]["median"]
        out[system.name] = {
            "unit": "jobs/s",
            "setup": system.drain_setups()[-1].label,
            "measured_jobs": o.backlog_ready,
            "window_s": o.backlog_window,
            "cases": by_case,
            "ratios": {k: v["median"] / base if base else None for k, v in by_case.items()},
            "cpu_ratios": {k: v["cpu_us_per_job"]["median"] / cpu_base for k, v in by_case.items()},
            "claim_plans": plans[system.name],
        }
    return out


def once(runner: Runner, system: System, template: str, case: Case, plan: bool) -> dict[str, Any]:
    o = runner.options
    setup = system.drain_setups()[-1]
    with (
        runner.dbs.fresh(system.name, template) as url,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        psycopg.connect(url, autocommit=True, application_name="bench-monitor") as mon,
    ):
        began = time.perf_counter()
        if case.finished:  # the history is there before the system starts
            system.load_backlog(url, 0, case.finished)
        load_s = time.perf_counter() - began
        workdir = Path(tmp)
        procs = system.start(url, setup, workdir, subprocess_env(url))
        try:
            startup = wait_quiet(system, procs, mon, workdir)
            with paused(procs):  # the ready jobs appear at once, to warm, idle processes
                began = time.perf_counter()
                first = system.load_backlog(url, case.ready, 0)
                load_s += time.perf_counter() - began
                claim_plan = system.claim_plan(url, PLAN_LIMIT) if plan else None
                before = _count(mon, system.finished_sql)
            n, skip = o.backlog_ready, o.backlog_ready // WARMUP_SHARE
            upto = {k: system.done_upto_sql.format(upto=int(first + k - 1)) for k in (skip, n)}
            started = wait_for(mon, system.started_sql, procs, workdir, 0.002, 120.0)
            warm = wait_for(mon, upto[skip], procs, workdir, DONE_POLL, o.time_limit)
            cpu_warm = cpu_seconds(system, procs, mon)
            stopped = wait_for(mon, upto[n], procs, workdir, DONE_POLL, o.time_limit, give_up=True)
            cpu_stop = cpu_delta(cpu_warm, cpu_seconds(system, procs, mon))
            if stopped is None:  # the time limit: the jobs done by now
                stopped = time.perf_counter()
                done = min(n, _count(mon, system.finished_sql) - before)
            else:
                done = n
            sustained = None
            if case.ready > n and o.backlog_window > 0:
                sustained = _sustained(mon, system, procs, workdir, started, o)
                jobs = sustained["jobs"] = sustained.pop("done") - before - skip
                sustained["seconds"] = sustained.pop("at") - warm
                sustained["rate"] = jobs / sustained["seconds"]
                used = cpu_delta(cpu_warm, sustained.pop("cpu"))
                sustained["cpu_us_per_job"] = _per_job(used, jobs)
        finally:
            stop(procs)
    runner.note_load()
    return {
        "rate": (done - skip) / (stopped - warm),
        "cpu_us_per_job": _per_job(cpu_stop, done - skip),
        "seconds": stopped - warm,
        "jobs": done - skip,
        "warmup_jobs": skip,
        "warmup_seconds": warm - started,
        "rate_from_first_claim": done / (stopped - started),
        "time_limited": done < n,
        "load_s": load_s,
        "startup": startup,
        "sustained": sustained,
        "claim_plan": claim_plan,
    }


def wait_quiet(
    system: System, procs: Sequence[Any], mon: psycopg.Connection[Any], workdir: Path
) -> dict[str, Any]:
    """Wait until the system's processes (and backends) are started and idle.

    Idle: less than ``QUIET_CPU`` of a core over ``QUIET_WINDOW`` s, at least ``QUIET_MIN`` s
    after the start.  Returns how long that took and the CPU seconds used by then, by kind.
    """
    began = time.perf_counter()
    deadline = began + 120.0
    last = cpu_seconds(system, procs, mon)
    while True:
        time.sleep(QUIET_WINDOW)
        check_alive(procs, workdir)
        now = cpu_seconds(system, procs, mon)
        recent = sum(cpu_delta(last, now).values())
        last = now
        elapsed = time.perf_counter() - began
        if (elapsed >= QUIET_MIN and recent < QUIET_CPU * QUIET_WINDOW) or elapsed > 120.0:
            break
        if time.perf_counter() > deadline:
            break
    cpu = {k: round(v, 3) for k, v in sorted(now.items())}
    return {"seconds": elapsed, "cpu_s": {"total": round(sum(now.values()), 3), **cpu}}


@contextmanager
def paused(procs: Sequence[Any]) -> Iterator[None]:
    """SIGSTOP the processes and their descendants for the block, then SIGCONT them."""
    stopped: list[psutil.Process] = []
    for popen in procs:
        with suppress(psutil.Error):
            root = psutil.Process(popen.pid)
            stopped += [root, *root.children(recursive=True)]
    for proc in stopped:
        with suppress(psutil.Error):
            proc.suspend()
    try:
        yield
    finally:
        for proc in stopped:
            with suppress(psutil.Error):
                proc.resume()


def _sustained(
    mon: psycopg.Connection[Any],
    system: System,
    procs: Sequence[Any],
    workdir: Path,
    started: float,
    o: Options,
) -> dict[str, Any]:
    """Let the workers go on until ``window`` s after the first claim (or the queue is empty)."""
    end = started + o.backlog_window
    emptied = False
    while time.perf_counter() < end:
        check_alive(procs, workdir)
        if _count(mon, system.done_sql):
            emptied = True
            break
        time.sleep(0.1)
    at = time.perf_counter()
    cpu = cpu_seconds(system, procs, mon)
    return {"at": at, "cpu": cpu, "done": _count(mon, system.finished_sql), "emptied": emptied}


def _per_job(cpu: dict[str, float], jobs: int) -> dict[str, float]:
    """CPU µs per job: ``total`` and each kind of process or backend."""
    out = {k: v / max(jobs, 1) * 1e6 for k, v in sorted(cpu.items())}
    return {"total": sum(out.values()), **out}
