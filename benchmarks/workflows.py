"""Batches and workflows (issue 19): what a batch, a fan-out/fan-in and a chain cost to drain.

::

    python -m benchmarks.workflows [--jobs 10000] [--repeat 3] [--threads 200,10] [--processes 2]
        [--chain 1000] [--scenarios plain,batch,fanin,chain] [--waits] [--explain]
        [--database-url URL] [--output-dir benchmarks/results] [--name <date>-workflows]

Each measurement runs on a fresh database (a copy of a template holding pgjobs' schema, as the
suite's scenarios do, :class:`benchmarks.common.Databases`).  The jobs are written first, in one
transaction, and committed (the time that takes is the *enqueue* time); then the workers start
(``pgjobs start``, the suite's :class:`benchmarks.systems.pgjobs_.PgJobs` with ``--threads`` x
``--processes``) and the clock runs, as in the suite's drain, from the moment a worker has
claimed its first job (polled every 2 ms, so interpreter start-up is not counted) to the end of
the last job (polled every 10 ms):

- **plain**: ``--jobs`` no-op jobs, ``pgjobs.perform_all_later`` (COPY), in no batch; timed to an
  empty queue;
- **batch**: the same jobs in one ``pgjobs.batch(on_finish=noop)``; timed to the end of the
  callback job;
- **fanin**: a ``pgjobs.workflow`` of the same jobs and one more job ``after=`` all of them (a
  fan-out and a fan-in); timed to the end of the fan-in job;
- **chain**: ``pgjobs.chain`` of ``--chain`` jobs, each after the previous one; timed to the end
  of the last, which gives the time per step.

Every round runs each scenario once, in that order, for each ``--threads``; ratios to *plain* are
taken within a round (the same minute of the same machine), then their median.  Also per run:
the CPU time of pgjobs' processes and of their PostgreSQL backends per job (the kernel's
per-thread counters, :func:`benchmarks.footprint.cpu_seconds`) and the 1-minute load average.
``--waits`` samples what the workers' backends are doing every 20 ms (``pg_stat_activity``:
on CPU, waiting for a lock, for the WAL, idle waiting for the worker); ``--explain`` adds
``EXPLAIN (ANALYZE, BUFFERS)`` of the statements that finish 200 jobs of each kind, with the
triggers' time, at the start and at the end of a 10,000-job batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import machine
from benchmarks.common import DEFAULT_URL, ROOT, Databases, WorkerSetup, stop, subprocess_env
from benchmarks.footprint import cpu_delta, cpu_seconds
from benchmarks.runner import wait_until
from benchmarks.systems.pgjobs_ import PgJobs

SCENARIOS = ("plain", "batch", "fanin", "chain")
STARTED_POLL = 0.002  # seconds between "has a worker claimed a job" polls
DONE_POLL = 0.01  # seconds between "has the last job ended" polls
WAITS_POLL = 0.02  # seconds between pg_stat_activity samples (--waits)
EXPLAIN_BATCH = 200  # jobs finished by each EXPLAINed statement (a worker's 200 threads)
TIMEOUT = 600.0


@dataclass
class Options:
    jobs: int = 10_000
    repeat: int = 3
    threads: tuple[int, ...] = (200, 10)
    processes: int = 2
    chain: int = 1_000
    scenarios: tuple[str, ...] = SCENARIOS
    waits: bool = False
    explain: bool = False
    url: str = DEFAULT_URL
    output_dir: Path = ROOT / "benchmarks" / "results"
    name: str = ""


@dataclass
class Run:
    """One measurement: a scenario, a worker setting, a round."""

    scenario: str
    threads: int
    round: int
    jobs: int  # jobs the workers ran (the scenario's jobs + its callback or fan-in)
    enqueue_s: float
    seconds: float  # first claim -> the last job ended
    startup_s: float  # workers spawned -> first claim
    load: float
    cpu_us_per_job: dict[str, float]
    check: dict[str, Any]
    waits: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- writing the jobs -----------------------------------------------------------------------


def _noop() -> Any:
    from benchmarks.jobs import noop

    return noop


def enqueue(scenario: str, n: int, chain: int) -> tuple[int, Callable[[], str], dict[str, Any]]:
    """Write the scenario's jobs (committed); returns the jobs to run, the SQL that is true once
    the last one has ended, and what to check afterwards."""
    import pgjobs

    noop = _noop()
    if scenario == "plain":
        pgjobs.perform_all_later([noop.build(i) for i in range(n)])
        return n, lambda: PgJobs.done_sql, {}
    if scenario == "batch":
        with pgjobs.batch(on_finish=noop, description="bench batch") as batch:
            batch.add(noop.build(i) for i in range(n))
        callback = str(batch.info().callbacks["finish"])
        return n + 1, lambda: _ended(callback), {"batch": str(batch.batch_id), "last": callback}
    if scenario == "fanin":
        flow = pgjobs.workflow(description="bench fan-out/fan-in")
        with flow:  # (``as`` would be typed Batch: Batch.__enter__ returns Batch, not Self)
            parts = [flow.add(noop.build(i)) for i in range(n)]
            fanin = flow.add(noop.build(-1), after=parts)
        last = str(fanin.job_id)
        return n + 1, lambda: _ended(last), {"batch": str(flow.batch_id), "last": last}
    if scenario == "chain":
        steps = [noop.build(i) for i in range(chain)]
        wf = pgjobs.chain(*steps, description="bench chain")
        last = str(steps[-1].job_id)
        return chain, lambda: _ended(last), {"batch": str(wf.batch_id), "last": last}
    raise ValueError(scenario)


def _ended(job_id: str) -> str:
    return f"SELECT finished_at IS NOT NULL FROM pgjobs_jobs WHERE job_id = '{job_id}'"


def _checks(url: str, scenario: str, check: dict[str, Any]) -> dict[str, Any]:
    """What the database has after the run: finished jobs, the batch's counts, the time
    between the first and the last ``finished_at`` and, for a chain, the time per step."""
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE finished_at IS NOT NULL), count(*),"
            " extract(epoch FROM max(finished_at) - min(finished_at)) FROM pgjobs_jobs"
        ).fetchone()
        assert row is not None
        out["finished"], out["total"], out["finished_span_s"] = row[0], row[1], float(row[2] or 0)
        if "batch" in check:
            b = conn.execute(
                "SELECT total, pending, succeeded, failed, cancelled,"
                " finished_at IS NOT NULL, succeeded_at IS NOT NULL"
                " FROM pgjobs_batches WHERE batch_id = %s",
                (check["batch"],),
            ).fetchone()
            assert b is not None
            out["batch"] = dict(
                zip(
                    ("total", "pending", "succeeded", "failed", "cancelled", "finished",
                     "succeeded_all"),
                    b,
                    strict=True,
                )
            )  # fmt: skip
        if scenario == "chain":
            gaps = [
                float(r[0])
                for r in conn.execute(
                    "SELECT extract(epoch FROM finished_at - lag(finished_at) OVER (ORDER BY id))"
                    " FROM pgjobs_jobs WHERE batch_id IS NOT NULL ORDER BY id"
                ).fetchall()
                if r[0] is not None
            ]
            out["step_ms_median"] = statistics.median(gaps) * 1000 if gaps else None
            out["step_ms_p90"] = (
                statistics.quantiles(gaps, n=10)[-1] * 1000 if len(gaps) > 10 else None
            )
    return out


# -- what the workers' backends do (--waits) --------------------------------------------------


class Waits(threading.Thread):
    """Samples ``pg_stat_activity`` for the workers' backends every ``WAITS_POLL`` s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.halt = threading.Event()
        self.counts: Counter[str] = Counter()
        self.samples = 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="bench-waits") as conn:
            while not self.halt.wait(WAITS_POLL):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name LIKE 'pgjobs-worker%'"
                ).fetchall()
                self.samples += 1
                for state, kind, event in rows:
                    if state == "active":
                        what = f"{kind}:{event}" if kind else "CPU"
                        self.counts[f"active {what}"] += 1
                    else:
                        self.counts[state or "?"] += 1

    def summary(self) -> dict[str, Any]:
        total = sum(self.counts.values()) or 1
        return {
            "samples": self.samples,
            "share": {k: round(v / total, 3) for k, v in self.counts.most_common()},
        }


# -- one measurement --------------------------------------------------------------------------


def once(
    o: Options, system: PgJobs, dbs: Databases, template: str, scenario: str, threads: int, k: int
) -> Run:
    import pgjobs
    from pgjobs import runtime

    setup = WorkerSetup(o.processes, {"threads": threads})
    with (
        system.fresh(dbs, template) as url,
        tempfile.TemporaryDirectory(prefix="bench-wf-") as tmp,
        psycopg.connect(url, autocommit=True, application_name="bench-monitor") as mon,
    ):
        database = pgjobs.configure(url)
        try:
            with database.connection() as conn:  # the pool open before the clock
                conn.execute("SELECT 1")
            began = time.perf_counter()
            jobs, done_sql, check = enqueue(scenario, o.jobs, o.chain)
            enqueue_s = time.perf_counter() - began
        finally:
            runtime.use(None)
            database.close()
        workdir = Path(tmp)
        spawned = time.perf_counter()
        procs = system.start(url, setup, workdir, subprocess_env(url))
        waits = Waits(url) if o.waits else None
        try:

            def probe(query: str) -> Callable[[], bool]:
                def check_() -> bool:
                    row = mon.execute(query).fetchone()
                    return bool(row and row[0])

                return check_

            started = wait_until(
                probe(system.started_sql), "started", procs, workdir, STARTED_POLL, 120.0
            )
            cpu_start = cpu_seconds(system, procs, mon)
            if waits is not None:
                waits.start()
            ended = wait_until(probe(done_sql()), "ended", procs, workdir, DONE_POLL, TIMEOUT)
            cpu = cpu_delta(cpu_start, cpu_seconds(system, procs, mon))
        finally:
            if waits is not None:
                waits.halt.set()
                waits.join()
            stop(procs)
        load = os.getloadavg()[0]
        result = _checks(url, scenario, check)
    processes = sum(v for kind, v in cpu.items() if not kind.startswith("db:"))
    backends = sum(v for kind, v in cpu.items() if kind.startswith("db:"))
    return Run(
        scenario=scenario,
        threads=threads,
        round=k,
        jobs=jobs,
        enqueue_s=enqueue_s,
        seconds=ended - started,
        startup_s=started - spawned,
        load=round(load, 2),
        cpu_us_per_job={
            "processes": round(processes / jobs * 1e6, 1),
            "backends": round(backends / jobs * 1e6, 1),
            **{kind: round(v / jobs * 1e6, 1) for kind, v in sorted(cpu.items())},
        },
        check=result,
        waits=waits.summary() if waits is not None else None,
    )


# -- EXPLAIN ANALYZE of the finishing statements (--explain) ------------------------------------


def explain(o: Options, system: PgJobs, dbs: Databases, template: str) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of a worker's finish of 200 jobs: plain jobs by
    ``ready.FINISH_ONLY`` (what the claim statement does), jobs of a batch and of a fan-in
    workflow by ``finished.FINISH_KEYED``, with their triggers.  All the jobs are claimed by a
    made-up process, then finished 200 at a time, each statement committed; the first and the
    last statements are EXPLAINed (the last one finds the batch row updated 9,800 times)."""
    import pgjobs
    from pgjobs import runtime
    from pgjobs.db.names import sql
    from pgjobs.store import finished, ready

    out: dict[str, Any] = {}
    for scenario in ("plain", "batch", "fanin"):
        with system.fresh(dbs, template) as url:
            database = pgjobs.configure(url)
            try:
                enqueue(scenario, o.jobs, o.chain)
            finally:
                runtime.use(None)
                database.close()
            statement = sql(
                ready.FINISH_ONLY if scenario == "plain" else finished.FINISH_KEYED, None
            )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
                ids = [
                    int(r[0])
                    for r in conn.execute(
                        "WITH m AS (DELETE FROM pgjobs_ready_executions RETURNING job_id)"
                        " INSERT INTO pgjobs_claimed_executions (job_id, process_id)"
                        " SELECT job_id, 1 FROM m RETURNING job_id"
                    ).fetchall()
                ]
                ids.sort()
                batches = [ids[i : i + EXPLAIN_BATCH] for i in range(0, len(ids), EXPLAIN_BATCH)]
                plans: dict[str, Any] = {}
                times = []
                for n, chunk in enumerate(batches):
                    params = {"finished": chunk, "process_id": 1, "now": datetime.now(UTC)}
                    began = time.perf_counter()
                    if n in (0, len(batches) - 1):
                        rows = conn.execute(
                            "EXPLAIN (ANALYZE, BUFFERS) " + statement, params
                        ).fetchall()
                        plans["first" if n == 0 else "last"] = "\n".join(str(r[0]) for r in rows)
                    else:
                        conn.execute(statement, params)
                    times.append(time.perf_counter() - began)
                out[scenario] = {
                    "statement": "ready.FINISH_ONLY"
                    if scenario == "plain"
                    else "finished.FINISH_KEYED",
                    "jobs_per_statement": EXPLAIN_BATCH,
                    "statements": len(batches),
                    "ms_per_statement_median": statistics.median(times) * 1000,
                    "ms_first_10": statistics.mean(times[:10]) * 1000,
                    "ms_last_10": statistics.mean(times[-10:]) * 1000,
                    "plans": plans,
                }
    return out


# -- the whole run ----------------------------------------------------------------------------


def run(o: Options, say: Callable[[str], None] = print) -> dict[str, Any]:
    system = PgJobs()
    dbs = Databases(o.url)
    began = time.perf_counter()
    runs: list[Run] = []
    explained = None
    loads = [round(os.getloadavg()[0], 2)]
    try:
        template = system.prepare(dbs)
        for k in range(1, o.repeat + 1):
            for threads in o.threads:
                for scenario in o.scenarios:
                    r = once(o, system, dbs, template, scenario, threads, k)
                    runs.append(r)
                    say(
                        f"  round {k} {scenario} [{threads} threads x {o.processes}]: "
                        f"enqueue {r.enqueue_s:.3f} s, drain {r.seconds:.3f} s "
                        f"({r.jobs / r.seconds:,.0f} jobs/s), start-up {r.startup_s:.1f} s, "
                        f"CPU {r.cpu_us_per_job['processes']:.0f}+"
                        f"{r.cpu_us_per_job['backends']:.0f} us/job, load {r.load}"
                        + (
                            f", step {r.check['step_ms_median']:.2f} ms"
                            if scenario == "chain"
                            else ""
                        )
                    )
        if o.explain:
            explained = explain(o, system, dbs, template)
    finally:
        dbs.drop_all()
    loads.append(round(os.getloadavg()[0], 2))
    return {
        "command": "python -m benchmarks.workflows " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {**asdict(o), "output_dir": str(o.output_dir)},
        "machine": machine.describe(o.url),
        "loads": loads,
        "duration_s": time.perf_counter() - began,
        "runs": [asdict(r) for r in runs],
        "summary": summarize(runs),
        "explain": explained,
    }


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    """Medians per threads and scenario; ratios to plain within each round, then their median."""
    out: dict[str, Any] = {}
    for threads in dict.fromkeys(r.threads for r in runs):
        mine = [r for r in runs if r.threads == threads]
        plain = {r.round: r for r in mine if r.scenario == "plain"}
        table: dict[str, Any] = {}
        for scenario in dict.fromkeys(r.scenario for r in mine):
            these = [r for r in mine if r.scenario == scenario]
            seconds = [r.seconds for r in these]
            entry: dict[str, Any] = {
                "jobs": these[0].jobs,
                "runs": len(these),
                "seconds_median": statistics.median(seconds),
                "seconds_min": min(seconds),
                "seconds_max": max(seconds),
                "jobs_per_s_median": statistics.median(r.jobs / r.seconds for r in these),
                "enqueue_s_median": statistics.median(r.enqueue_s for r in these),
                "startup_s_median": statistics.median(r.startup_s for r in these),
                "cpu_us_per_job_median": {
                    part: statistics.median(r.cpu_us_per_job[part] for r in these)
                    for part in ("processes", "backends")
                },
                "loads": [r.load for r in these],
            }
            ratios = [r.seconds / plain[r.round].seconds for r in these if r.round in plain]
            if ratios:
                entry["ratio_to_plain_per_round"] = ratios
                entry["ratio_to_plain_median"] = statistics.median(ratios)
            steps = [
                float(r.check["step_ms_median"]) for r in these if r.check.get("step_ms_median")
            ]
            if steps:
                entry["step_ms_median"] = statistics.median(steps)
            table[scenario] = entry
        out[str(threads)] = table
    return out


# -- the report -------------------------------------------------------------------------------

LABELS = {
    "plain": "(a) plain: no-op jobs, no batch",
    "batch": "(b) batch + on_finish",
    "fanin": "(c) workflow: fan-out + 1 fan-in",
    "chain": "(d) chain (each after the previous)",
}


def render(results: dict[str, Any]) -> str:
    o = results["options"]
    lines = [
        f"# Batches and workflows: {o['jobs']:,} jobs ({results['date'][:10]})",
        "",
        "```sh",
        results["command"],
        "```",
        "",
        f"pgjobs {results['machine'].get('pgjobs_revision')}, load average (1 min) "
        f"{results['loads'][0]} at the start, {results['loads'][-1]} at the end; "
        f"{o['processes']} worker processes; each run on a fresh database; drain = first claim "
        "to the end of the last job (the callback, the fan-in); ratio = this scenario's time / "
        "plain's, in the same round, median over the rounds.",
        "",
    ]
    for threads, table in results["summary"].items():
        lines += [
            f"## {threads} threads x {o['processes']} processes",
            "",
            "| scenario | jobs run | enqueue, s | drain, s: median (min-max) | jobs/s | "
            "ratio to (a) (per round) | CPU us/job: processes + backends | loads |",
            "| --- | ---: | ---: | --- | ---: | --- | --- | --- |",
        ]
        for scenario, e in table.items():
            ratio = (
                f"**{e['ratio_to_plain_median']:.2f}x** "
                f"({', '.join(f'{x:.2f}' for x in e['ratio_to_plain_per_round'])})"
                if "ratio_to_plain_median" in e
                else ""
            )
            step = f"; {e['step_ms_median']:.2f} ms/step" if "step_ms_median" in e else ""
            cpu = e["cpu_us_per_job_median"]
            lines.append(
                f"| {LABELS.get(scenario, scenario)} | {e['jobs']:,} | {e['enqueue_s_median']:.3f} "
                f"| {e['seconds_median']:.3f} ({e['seconds_min']:.3f}-{e['seconds_max']:.3f})"
                f"{step} | {e['jobs_per_s_median']:,.0f} | {ratio} | "
                f"{cpu['processes']:.0f} + {cpu['backends']:.0f} | "
                f"{', '.join(str(x) for x in e['loads'])} |"
            )
        lines.append("")
    waits = [r for r in results["runs"] if r.get("waits")]
    if waits:
        lines += [
            "## What the workers' backends were doing (`--waits`, pg_stat_activity every 20 ms)",
            "",
            "| scenario | threads | round | samples | shares |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for r in waits:
            share = ", ".join(f"{k} {v:.0%}" for k, v in list(r["waits"]["share"].items())[:6])
            lines.append(
                f"| {r['scenario']} | {r['threads']} | {r['round']} | {r['waits']['samples']} "
                f"| {share} |"
            )
        lines.append("")
    if results.get("explain"):
        lines += ["## EXPLAIN ANALYZE of the finishing statements (`--explain`)", ""]
        for scenario, e in results["explain"].items():
            lines += [
                f"### {scenario}: {e['statement']}, {e['jobs_per_statement']} jobs a statement, "
                f"{e['statements']} statements: median {e['ms_per_statement_median']:.1f} ms "
                f"(first 10: {e['ms_first_10']:.1f} ms, last 10: {e['ms_last_10']:.1f} ms)",
                "",
            ]
            for which, plan in e["plans"].items():
                lines += [f"{which}:", "", "```", plan, "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.workflows", description=__doc__.split("\n")[0]
    )
    p.add_argument("--jobs", type=int, default=10_000, help="jobs per scenario (default 10000)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--threads", default="200,10", help="worker threads, each a setting (200,10)")
    p.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--chain", type=int, default=1_000, help="jobs in the chain (default 1000)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="plain,batch,fanin,chain")
    p.add_argument("--waits", action="store_true", help="sample the backends' wait events")
    p.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the finishes")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    p.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="", help="the results' file name (default <date>-workflows)")
    a = p.parse_args(argv)
    scenarios = tuple(s for s in a.scenarios.split(",") if s)
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    o = Options(
        jobs=a.jobs,
        repeat=a.repeat,
        threads=tuple(int(t) for t in a.threads.split(",") if t),
        processes=a.processes,
        chain=a.chain,
        scenarios=scenarios,
        waits=a.waits,
        explain=a.explain,
        url=a.database_url,
        output_dir=a.output_dir,
        name=a.name,
    )
    results = run(o)
    name = o.name or f"{results['date'][:10]}-workflows"
    o.output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = o.output_dir / f"{name}.json", o.output_dir / f"{name}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(render(results))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
