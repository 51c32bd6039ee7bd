"""Soak: minutes of steady enqueue and processing while a long transaction holds a snapshot.

One worker process (:meth:`System.soak_setup`; pgjobs: 1 process, 10 threads) runs while a paced
enqueuer sends ``--soak-rate`` jobs/s (default 200) for ``--soak-seconds`` (default 600), each
job carrying the time taken just before its enqueue call (the probe of the latency scenario,
:mod:`benchmarks.probe`).  Before the first paced job another connection runs
``BEGIN ISOLATION LEVEL REPEATABLE READ`` and reads one row of the system's jobs table, and keeps
that transaction open to the end: its snapshot holds back the xmin horizon, so no vacuum, page
pruning or index-entry killing may remove a row version deleted or updated meanwhile
(``--soak-no-hold``: the same run without it, as a control).

Sampled every ``--soak-sample`` seconds (default 10): ``n_live_tup``, ``n_dead_tup``, heap size
and total size (with indexes and TOAST) of each of the system's tables, and the jobs waiting.
From the probe: enqueue→start latency per window of enqueue time.  Then, with the workers
stopped: the claim's ``EXPLAIN (ANALYZE, BUFFERS)`` with the snapshot still held, twice after
releasing it, and the tables after a manual ``VACUUM``.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from benchmarks import probe
from benchmarks.common import System, check_alive, percentile, stop, subprocess_env
from benchmarks.footprint import cpu_seconds
from benchmarks.runner import wait_for_records

if TYPE_CHECKING:
    from benchmarks.runner import Runner

PLAN_LIMIT = 10  # jobs in the EXPLAINed claim (the soak worker's threads)
STATS = """
SELECT relname, n_live_tup, n_dead_tup, pg_relation_size(relid), pg_total_relation_size(relid),
       n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
FROM pg_stat_user_tables WHERE relname = ANY(%s) ORDER BY relname
"""
HOLDER = """
SELECT extract(epoch FROM now() - xact_start), age(backend_xmin)
FROM pg_stat_activity WHERE pid = %s
"""
SERVER = (
    "autovacuum",
    "autovacuum_naptime",
    "idle_in_transaction_session_timeout",
    "old_snapshot_threshold",
)


def run(runner: Runner, systems: Sequence[System], templates: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in systems:
        if not system.tables or not system.waiting_sql:
            runner.say(f"  {system.name}: no tables to sample, skipped")
            continue
        out[system.name] = once(runner, system, templates[system.name])
    return out


def once(runner: Runner, system: System, template: str) -> dict[str, Any]:
    o = runner.options
    setup = system.soak_setup()
    count = int(o.soak_rate * o.soak_seconds)
    hold: psycopg.Connection[Any] | None = None
    plans: dict[str, str | None] = {}
    with (
        runner.dbs.fresh(system.name, template) as url,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        psycopg.connect(url, autocommit=True, application_name="bench-monitor") as mon,
    ):
        server = _server(mon, system)
        workdir = Path(tmp)
        path = workdir / "latency.txt"
        path.touch()
        procs = system.start(
            url, setup, workdir, subprocess_env(url, {"BENCH_LATENCY_FILE": str(path)})
        )
        try:
            system.enqueue_paced(url, [-1000], o.soak_rate)  # ready: one job went through
            wait_for_records(path, {-1000}, procs, workdir, 120.0)
            if o.soak_hold:
                hold = psycopg.connect(url, application_name="bench-long-transaction")
                hold.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                hold.execute(f"SELECT 1 FROM {system.tables[0]} LIMIT 1")
            holder = hold.info.backend_pid if hold else None
            plans["start"] = system.claim_plan(url, PLAN_LIMIT, insert=PLAN_LIMIT)
            t0 = time.time()
            samples = [_sample(mon, system, holder, 0.0, procs)]
            box: dict[str, Any] = {}

            def enqueue() -> None:
                try:
                    box["sent"] = system.enqueue_paced(url, range(count), o.soak_rate)
                except BaseException as exc:  # reported by the main thread
                    box["error"] = exc

            thread = threading.Thread(target=enqueue, name="soak-enqueuer", daemon=True)
            thread.start()
            next_at = time.monotonic() + o.soak_sample
            while thread.is_alive():
                thread.join(max(0.0, next_at - time.monotonic()))
                if not thread.is_alive():
                    break
                check_alive(procs, workdir)
                samples.append(_sample(mon, system, holder, time.time() - t0, procs))
                next_at += o.soak_sample
                if len(samples) % max(1, round(60 / o.soak_sample)) == 1:
                    runner.say("  " + _progress(system, samples[-1]))
            if "error" in box:
                raise RuntimeError(f"the soak's enqueuer failed: {box['error']!r}")
            sent: list[tuple[float, float]] = box["sent"]
            behind = time.time() - t0
            started = _records(path, count, procs, workdir, max(60.0, o.soak_seconds / 5))
            samples.append({**_sample(mon, system, holder, time.time() - t0, procs), "end": True})
            runner.say("  " + _progress(system, samples[-1]))
            stop(procs)
            plans["end"] = system.claim_plan(url, PLAN_LIMIT, insert=PLAN_LIMIT)
            if hold is not None:
                hold.rollback()
                hold.close()
                hold = None
                plans["released"] = system.claim_plan(url, PLAN_LIMIT, insert=PLAN_LIMIT)
                plans["released_again"] = system.claim_plan(url, PLAN_LIMIT, insert=PLAN_LIMIT)
            mon.execute("VACUUM " + ", ".join(system.tables))
            after_vacuum = _sample(mon, system, None, time.time() - t0)
        finally:
            stop(procs)
            if hold is not None:
                hold.close()
    runner.note_load()
    windows = _windows(sent, started, o.soak_sample)
    edge = min(60.0, o.soak_seconds / 4)
    result: dict[str, Any] = {
        "unit": "ms",
        "setup": setup.label,
        "rate": o.soak_rate,
        "seconds": o.soak_seconds,
        "jobs": count,
        "hold": o.soak_hold,
        "server": server,
        "enqueue_seconds": behind,
        "missing": count - sum(1 for i in range(count) if i in started),
        "edge_s": edge,
        "sample_s": o.soak_sample,
        "first": _latency(sent, started, 0, edge),
        "last": _latency(sent, started, o.soak_seconds - edge, o.soak_seconds),
        "windows": windows,
        "samples": samples,
        "after_vacuum": after_vacuum,
        "plans": {k: v for k, v in plans.items() if v},
    }
    first, last = result["first"], result["last"]
    runner.say(
        f"  {system.name} soak: latency p50 {first['p50']:.2f} → {last['p50']:.2f} ms, p99 "
        f"{first['p99']:.2f} → {last['p99']:.2f} ms (first vs last {edge:g} s)"
    )
    return result


def _server(mon: psycopg.Connection[Any], system: System) -> dict[str, Any]:
    settings = {name: mon.execute(f"SHOW {name}").fetchone()[0] for name in SERVER}  # type: ignore[index]
    rows = mon.execute(
        "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r'",
        (list(system.tables),),
    ).fetchall()
    return {**settings, "reloptions": {str(r[0]): r[1] or [] for r in rows}}


def _sample(
    mon: psycopg.Connection[Any],
    system: System,
    holder: int | None,
    t: float,
    procs: Sequence[Any] = (),
) -> dict[str, Any]:
    tables = {
        str(r[0]): {
            "live": r[1],
            "dead": r[2],
            "heap_bytes": r[3],
            "total_bytes": r[4],
            "ins": r[5],
            "upd": r[6],
            "hot_upd": r[7],
            "del": r[8],
        }
        for r in mon.execute(STATS, (list(system.tables),)).fetchall()
    }
    row = mon.execute(system.waiting_sql).fetchone()
    sample: dict[str, Any] = {
        "t": round(t, 1),
        "waiting": row[0] if row else None,
        "tables": tables,
    }
    if procs:  # CPU seconds so far of the system's processes and their backends, by kind
        sample["cpu_s"] = {k: round(v, 4) for k, v in cpu_seconds(system, procs, mon).items()}
        sample["rss_mib"] = _rss(system, procs)
    if holder is not None:
        held = mon.execute(HOLDER, (holder,)).fetchone()
        if held:
            sample["hold_seconds"], sample["hold_xmin_age"] = float(held[0]), held[1]
    return sample


def _rss(system: System, procs: Sequence[Any]) -> dict[str, float]:
    """Resident memory (MiB) of the system's processes and their descendants, by pid and kind
    ("worker 1234"): issue 22 asks that every process's stay flat over the soak."""
    import psutil

    out: dict[str, float] = {}
    for popen in procs:
        try:
            root = psutil.Process(popen.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in family:
            try:
                kind = system.process_kind(proc.cmdline()) or "other"
                out[f"{kind} {proc.pid}"] = round(proc.memory_info().rss / 2**20, 1)
            except psutil.Error:
                continue
    return out


def _progress(system: System, sample: dict[str, Any]) -> str:
    parts = [
        f"{name.split('_', 1)[-1]} dead {t['dead']:,} / {t['total_bytes'] / 2**20:.1f} MiB"
        for name, t in sample["tables"].items()
    ]
    return f"{system.name} soak t={sample['t']:.0f}s waiting {sample['waiting']}: " + ", ".join(
        parts
    )


def _records(
    path: Path, count: int, procs: Sequence[Any], workdir: Path, timeout: float
) -> dict[int, float]:
    """The start time of every paced job recorded within ``timeout`` s (missing ones absent)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = probe.read(path)
        if sum(1 for i in range(count) if i in seen) == count or time.monotonic() > deadline:
            return seen
        check_alive(procs, workdir)
        time.sleep(0.25)


def _latency(
    sent: list[tuple[float, float]], started: dict[int, float], since: float, until: float
) -> dict[str, Any]:
    """Enqueue→start latency (ms) of the jobs sent between ``since`` and ``until`` s."""
    origin = sent[0][0]
    values = [
        (started[i] - s) * 1000
        for i, (s, _) in enumerate(sent)
        if since <= s - origin < until and i in started
    ]
    if not values:
        return {"jobs": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    return {
        "jobs": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def _windows(
    sent: list[tuple[float, float]], started: dict[int, float], width: float
) -> list[dict[str, Any]]:
    end = sent[-1][0] - sent[0][0]
    out, t = [], 0.0
    while t <= end:
        out.append({"t": t, **_latency(sent, started, t, t + width)})
        t += width
    return out
