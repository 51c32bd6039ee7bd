"""One chaos run, start to end: returns its summary (faults, jobs, runs, violations).

1. Start the dedicated PostgreSQL, migrate it, start three hosts behind their proxies.
2. For ``minutes``: enqueue a mixed workload, cancel a sample of it, and inject faults
   (:mod:`tests.chaos.driver`).
3. Stop enqueuing and injecting, heal everything, let the queue drain.
4. Check the live database (claims without a process, blocked jobs with a free slot) and that
   every supervisor the driver did not kill still runs; SIGTERM them: each must exit 0.
5. Check the ledger against the jobs' final states (:mod:`tests.chaos.checks`), and the batches
   and workflows against their jobs, their callbacks and the ledger
   (:mod:`tests.chaos.batch_checks`).

Everything started is stopped in ``finally``, whatever happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

import pgjobs
from tests.chaos import batch_checks, checks, cluster, ledger, workload
from tests.chaos.checks import JobState, Violation
from tests.chaos.cluster import Host, Server
from tests.chaos.driver import (
    FREE_SLOTS,
    ORPHANS,
    Canceller,
    Driver,
    Enqueuer,
    Watcher,
    in_thread,
)
from tests.chaos.proxy import Proxy

HOSTS = ("host-a", "host-b", "host-c")
STUCK_AFTER = 20.0  # seconds without a job ending while nothing is scheduled: the drain is over
CANCELLER_JOIN = 15.0  # a cancel may be waiting for a connection (CANCEL_POOL_TIMEOUT)
LIMITS = {"limit": workload.LIMIT, "unique": 1, "nap": workload.NAP_LIMIT, "seq": 1}
RATES = {"rate": workload.RATE}
RATE_SLACK = 0.25  # seconds: a run's ledger row comes after its start token (a new connection)

JOBS = """
SELECT j.job_id::text, j.class_name,
       CASE WHEN h.job_id IS NOT NULL THEN 'held'
            WHEN r.job_id IS NOT NULL THEN 'ready'
            WHEN c.job_id IS NOT NULL THEN 'claimed'
            WHEN s.job_id IS NOT NULL THEN 'scheduled'
            WHEN b.job_id IS NOT NULL THEN 'blocked'
            WHEN f.job_id IS NOT NULL THEN 'failed'
            WHEN j.cancelled_at IS NOT NULL THEN 'cancelled'
            WHEN j.discarded_at IS NOT NULL THEN 'discarded'
            WHEN j.finished_at IS NOT NULL THEN 'finished'
            ELSE 'lost' END,
       f.exception_class, f.message, c.process_id, p.id IS NOT NULL,
       j.executions, j.result::text, j.checkpoint::text, j.progress::text, j.batch_id
FROM pgjobs_jobs j
LEFT JOIN pgjobs_held_executions h ON h.job_id = j.id
LEFT JOIN pgjobs_ready_executions r ON r.job_id = j.id
LEFT JOIN pgjobs_claimed_executions c ON c.job_id = j.id
LEFT JOIN pgjobs_processes p ON p.id = c.process_id
LEFT JOIN pgjobs_scheduled_executions s ON s.job_id = j.id
LEFT JOIN pgjobs_blocked_executions b ON b.job_id = j.id
LEFT JOIN pgjobs_failed_executions f ON f.job_id = j.id
"""

# Done: finished, failed, or held behind a failed job (on_failure "wait": until an operator
# retries or discards it), directly or through other held jobs.
PROGRESS = """
WITH RECURSIVE waiting(id) AS (
    SELECT d.job_id FROM pgjobs_job_dependencies d
    JOIN pgjobs_failed_executions f ON f.job_id = d.depends_on
    WHERE NOT d.resolved
    UNION
    SELECT d.job_id FROM pgjobs_job_dependencies d JOIN waiting w ON d.depends_on = w.id
    WHERE NOT d.resolved
)
SELECT (SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL)
     + (SELECT count(*) FROM pgjobs_failed_executions)
     + (SELECT count(*) FROM pgjobs_held_executions WHERE job_id IN (SELECT id FROM waiting)),
       (SELECT count(*) FROM pgjobs_jobs),
       (SELECT count(*) FROM pgjobs_scheduled_executions)
"""

BATCHES = """
SELECT id, batch_id::text, kind, parent_id, on_failure, total, pending, succeeded, failed,
       discarded, cancelled, finished_at, succeeded_at, discarded_at, callbacks
FROM pgjobs_batches ORDER BY id
"""

DEPENDENCIES = """
SELECT j.job_id::text, d.job_id::text, x.resolved
FROM pgjobs_job_dependencies x
JOIN pgjobs_jobs j ON j.id = x.job_id
JOIN pgjobs_jobs d ON d.id = x.depends_on
"""

CALLBACK_JOBS = f"""
SELECT job_id::text, arguments FROM pgjobs_jobs
WHERE class_name = '{workload.BatchCallback.job_name}'
"""


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


def drain(url: str, timeout: float, tick: Callable[[], object] = lambda: None) -> bool:
    """Wait until every job finished or failed; False if it timed out or got stuck.  ``tick``
    runs at every poll (the driver restarting supervisors that exited)."""
    deadline = time.monotonic() + timeout
    last_done, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        tick()
        with contextlib.suppress(psycopg.Error):
            done, total, scheduled = _query(url, PROGRESS)[0]
            if done == total:
                return True
            if done != last_done:
                last_done, last_change = done, time.monotonic()
            elif scheduled == 0 and time.monotonic() - last_change > STUCK_AFTER:
                return False
        time.sleep(0.5)
    return False


def run_chaos(
    minutes: float, seed: int, directory: Path, ledger_url: str
) -> tuple[dict[str, Any], list[Violation]]:
    rng = random.Random(seed)
    seconds = minutes * 60
    began = time.monotonic()
    durations: dict[str, float] = {}
    work = directory / "run"
    work.mkdir(parents=True, exist_ok=True)
    ledger.create(ledger_url)
    server = Server(directory)
    proxies: list[Proxy] = []
    hosts: list[Host] = []
    enqueuer: Enqueuer | None = None
    canceller: Canceller | None = None
    watcher: Watcher | None = None
    violations: list[Violation] = []
    threads: list[threading.Thread] = []
    keep = True  # the logs stay when something went wrong
    try:
        url = server.start()
        pgjobs.migrate(url)
        config = cluster.write_config(work)
        for name in HOSTS:
            proxy = Proxy(lambda: server.socket, name=f"proxy-{name}")
            proxies.append(proxy)
            host = Host(name, proxy, server.proxied_url(proxy.port), config,
                        work / f"{name}.log", ledger_url)  # fmt: skip
            hosts.append(host)
            host.start()
        workers = len(HOSTS) * cluster.WORKER_PROCESSES
        started = cluster.wait_until(
            lambda: (
                _query(url, "SELECT count(*) FROM pgjobs_processes WHERE kind = 'worker'")[0][0]
                >= workers
            ),
            timeout=60,
        )
        assert started, f"the hosts did not start their workers; see {work}"
        durations["setup"] = time.monotonic() - began

        mark = time.monotonic()
        driver = Driver(rng, hosts, server, ledger_url)
        canceller = the_canceller = Canceller(random.Random(rng.random()), url, ledger_url)
        enqueuer = the_enqueuer = Enqueuer(random.Random(rng.random()), url, canceller=canceller)
        watcher = the_watcher = Watcher(ledger_url, server)
        threads += [
            in_thread(lambda: the_enqueuer.run(seconds), "chaos-enqueuer"),
            in_thread(lambda: the_watcher.run(seconds + 600), "chaos-watcher"),
            in_thread(lambda: the_canceller.run(seconds + 60), "chaos-canceller"),
        ]
        driver.run(seconds)
        enqueuer.stop.set()
        threads[0].join(timeout=10)
        canceller.stop.set()  # the cancels still planned are not made
        threads[2].join(timeout=CANCELLER_JOIN)
        durations["run"] = time.monotonic() - mark

        mark = time.monotonic()
        driver.heal_all(proxies)
        # The hosts stay supervised while the queue drains: a supervisor pruned while it was cut
        # off exits 1 once it notices, and its service manager (the driver) starts it again.
        drained = drain(url, timeout=min(60 + 4 * minutes, 180), tick=driver.ensure_hosts)
        driver.ensure_hosts()
        durations["drain"] = time.monotonic() - mark

        # The live checks, before anything stops.
        orphans = _query(url, ORPHANS)
        free = _query(url, FREE_SLOTS)
        seen = {f["job_id"] for f in watcher.persisting["orphan_claim"]}
        violations += [
            Violation("orphan_claim", f"claimed by process {p}, which has no row, at the end", j)
            for j, p in orphans
            if j not in seen
        ]
        violations += [
            Violation("free_slot", f"blocked on {k} with a free slot at the end", j)
            for j, k in free
        ]
        for check, found in watcher.persisting.items():
            violations += [
                Violation(
                    check,
                    f"{f['detail']}: persisted {f['for_seconds']}s during the run",
                    f["job_id"],
                )
                for f in found
            ]
        # The documented rule: a supervisor pruned as dead while its host was cut off exits 1
        # and its service manager (here the driver) starts it again.  Any other exit is a defect.
        restarted = [e for e in driver.unexpected_exits if e["after_partition"] and e["code"] == 1]
        violations += [
            Violation(
                "supervisor_exit",
                f"{e['host']} supervisor pid {e['pid']} exited with"
                f" {e['code']} at {e['at']} (nobody killed it; last fault on the host:"
                f" {e['last_fault_on_host']}); replaced",
            )
            for e in driver.unexpected_exits
            if e not in restarted
        ]
        mark = time.monotonic()
        for host in hosts:
            if not host.running():
                # It may be exiting as documented right now (pruned while cut off, noticed
                # late): the driver restarts it and records the exit, judged as above.
                known = len(driver.unexpected_exits)
                driver.ensure_host(host)  # not the others: those SIGTERMed already stay stopped
                late = driver.unexpected_exits[known:]
                violations += [
                    Violation(
                        "supervisor_exit",
                        f"{e['host']} supervisor pid {e['pid']} exited with {e['code']} at the "
                        f"end (last fault on the host: {e['last_fault_on_host']})",
                    )
                    for e in late
                    if not (e["after_partition"] and e["code"] == 1)
                ]
                if not late:
                    violations.append(Violation("supervisor_exit", f"{host.name} is not running"))
                    continue
            # SIGTERM only once it handles it — its children run — also for a host the driver
            # restarted just before the end: a SIGTERM in the interpreter's own start-up, before
            # pgjobs' code runs, ends it by the signal (-15), which a service manager counts as a
            # clean stop but this check would not.
            since = time.monotonic()
            while not host.workers() and time.monotonic() - since < 20:
                time.sleep(0.1)
            code = host.terminate(cluster.SHUTDOWN_TIMEOUT + 10)
            if code != 0:
                violations.append(
                    Violation("shutdown", f"{host.name} (pid {host.pid}) SIGTERM: exit {code}")
                )
        durations["shutdown"] = time.monotonic() - mark
        time.sleep(0.5)  # the watcher sees the last deaths
        watcher.stop.set()
        threads[1].join(timeout=10)
        watcher.sweep()
        watcher.close()

        jobs = [JobState(*row) for row in _query(url, JOBS)]
        batches = [batch_checks.batch_row(row) for row in _query(url, BATCHES)]
        edges = [batch_checks.Edge(*row) for row in _query(url, DEPENDENCIES)]
        callback_jobs = [batch_checks.callback_job(*row) for row in _query(url, CALLBACK_JOBS)]
        with ledger.connect(ledger_url) as conn:
            runs, faults, deaths = ledger.runs(conn), ledger.faults(conn), ledger.deaths(conn)
            steps, cancels = ledger.steps(conn), ledger.cancels(conn)
            views, reads = ledger.callbacks_seen(conn), ledger.dependencies_seen(conn)
            operations = ledger.operations(conn)
            horizon = ledger.now(conn)
        ends = checks.run_ends(runs, faults, deaths)
        threshold = cluster.ALIVE_THRESHOLD
        overlaps, excused = checks.check_overlaps(runs, ends, faults, threshold, horizon)
        violations += overlaps
        violations += checks.check_limits(runs, ends, excused, LIMITS, horizon)
        violations += checks.check_order(runs, enqueuer.sequence, excused)
        violations += checks.check_rates(runs, RATES, RATE_SLACK)
        world = batch_checks.World(batches, jobs, enqueuer.groups, operations)
        in_workflows, waiting, why_held, by_policy = batch_checks.check_workflows(
            world, edges, runs, ends, faults, threshold, reads, horizon
        )
        violations += in_workflows
        violations += checks.check_final_states(
            jobs, runs, ends, faults, threshold, cluster.MAX_INTERRUPTIONS, horizon,
            waiting, why_held,
        )  # fmt: skip
        violations += checks.check_schedule(enqueuer.not_before, runs)
        violations += checks.check_cancels(
            jobs, runs, ends, faults, threshold, cancels, horizon, by_policy
        )
        violations += batch_checks.check_batch_counts(world, waiting)
        violations += batch_checks.check_callbacks(
            world, callback_jobs, runs, ends, faults, threshold, deaths, views, horizon
        )
        violations += batch_checks.check_reruns(
            runs, ends, faults, threshold, deaths, horizon, {c.job_id for c in callback_jobs}
        )
        violations += checks.check_steps(jobs, runs, steps)
        violations += checks.check_attempts(jobs, runs, ends, faults, threshold, deaths, horizon)
        durations["total"] = time.monotonic() - began
        if violations:  # the evidence, kept with the hosts' logs
            _dump(work / "ledger.json", runs, faults, deaths, steps, cancels,
                  {"callbacks": views, "dependencies": reads, "operations": operations,
                   "batches": batches, "edges": edges})  # fmt: skip
        summary = _summary(
            seed,
            minutes,
            durations,
            drained,
            driver,
            enqueuer,
            canceller,
            watcher,
            jobs,
            runs,
            ends,
            excused,
            steps,
            cancels,
            faults,
            horizon,
            violations,
            work,
        )
        summary["batches_and_workflows"] = batch_checks.batch_stats(
            world, callback_jobs, runs, ends, faults, waiting, by_policy, reads
        )
        keep = bool(violations)
        return summary, violations
    finally:
        if enqueuer is not None:
            enqueuer.stop.set()
        if canceller is not None:
            canceller.stop.set()
        if watcher is not None:
            watcher.stop.set()
        for thread in threads:
            thread.join(timeout=5)
        if watcher is not None:
            watcher.close()
        for host in hosts:
            host.cleanup()
        for proxy in proxies:
            proxy.close()
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(directory / "pgdata", ignore_errors=True)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def _dump(
    path: Path,
    runs: list[ledger.Run],
    faults: list[ledger.Fault],
    deaths: dict[int, datetime],
    steps: list[ledger.StepEvent],
    cancels: list[ledger.Cancel],
    more: dict[str, list[Any]] | None = None,
) -> None:
    rows = {
        "runs": [dataclasses.asdict(r) for r in runs],
        "faults": [dataclasses.asdict(f) for f in faults],
        "deaths": deaths,
        "steps": [dataclasses.asdict(e) for e in steps],
        "cancels": [dataclasses.asdict(c) for c in cancels],
    }
    for name, items in (more or {}).items():
        rows[name] = [dataclasses.asdict(item) for item in items]
    path.write_text(json.dumps(rows, default=str, indent=1))


def _summary(
    seed: int,
    minutes: float,
    durations: dict[str, float],
    drained: bool,
    driver: Driver,
    enqueuer: Enqueuer,
    canceller: Canceller,
    watcher: Watcher,
    jobs: list[JobState],
    runs: list[ledger.Run],
    ends: checks.Ends,
    excused: set[int],
    steps: list[ledger.StepEvent],
    cancels: list[ledger.Cancel],
    faults: list[ledger.Fault],
    horizon: datetime,
    violations: list[Violation],
    work: Path,
) -> dict[str, Any]:
    return {
        "seed": seed,
        "minutes": minutes,
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "durations_seconds": {k: round(v, 1) for k, v in durations.items()},
        "drained": drained,
        "settings": {
            "hosts": len(HOSTS),
            "worker_processes_per_host": cluster.WORKER_PROCESSES,
            "threads": cluster.THREADS,
            "heartbeat_interval": cluster.HEARTBEAT_INTERVAL,
            "process_alive_threshold": cluster.ALIVE_THRESHOLD,
            "shutdown_timeout": cluster.SHUTDOWN_TIMEOUT,
            "max_interruptions": cluster.MAX_INTERRUPTIONS,
            "concurrency_maintenance_interval": cluster.MAINTENANCE_INTERVAL,
        },
        "faults": dict(sorted(driver.counts.items())),
        "faults_total": sum(driver.counts.values()),
        "faults_skipped": dict(driver.skipped),
        "supervisors_pruned_and_restarted": sum(
            1 for e in driver.unexpected_exits if e["after_partition"] and e["code"] == 1
        ),
        "fault_log": driver.log,
        "enqueued": dict(sorted(enqueuer.counts.items())),
        "enqueue_errors": dict(enqueuer.error_kinds),
        "jobs": len(jobs),
        "job_states": dict(Counter(j.state for j in jobs)),
        "runs": len(runs),
        "run_outcomes": dict(Counter(r.outcome or "none" for r in runs)),
        "run_ends": dict(Counter(ends.source.values())),
        "cancels": dict(sorted(canceller.answers.items())),
        "job_control": checks.control_stats(jobs, runs, steps, cancels),
        "asked_to_stop_but_finished": checks.heeding_notes(jobs, runs, faults, cancels, horizon),
        "runs_excused_at_least_once": len(excused),
        "watcher_sample_errors": watcher.errors,
        "violations": len(violations),
        "violations_by_check": dict(Counter(v.check for v in violations)),
        "jobs_with_violations": len({v.job_id for v in violations if v.job_id}),
        "violation_details": [v.as_dict() for v in violations[:200]],
        "logs": str(work) if violations else None,
    }
