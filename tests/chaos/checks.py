"""The chaos run's checks, as pure functions of the ledger and the jobs' final states.

When a run has no ``ended_at`` its process died under it; its end is then the earliest of the
driver's SIGKILL of that pid (recorded just before the kill) and the end of a poison pill in the
same process (written just before it killed itself), else the watcher's sighting of the dead pid
minus the watcher's slack.  Each is at or before the real death (the last made so by the slack),
so an overlap is never invented.

The one exception to "no two runs of a job at once" (and to the limits) is at-least-once
delivery, documented: a run whose process was frozen (SIGSTOP) or whose host was partitioned
from the database for longer than ``process_alive_threshold`` while it ran (or just before it
started: a claim held up by the cut).  Such a run is *excused*, and the job's final state must
still be the outcome of its newest run that is not excused.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.chaos.ledger import Fault, Run

WATCH_SLACK = timedelta(seconds=0.5)  # the watcher polls every 0.1 s; generous for a busy box
SCHEDULE_SLACK = timedelta(seconds=0.5)
STALE_AFTER_CUT = timedelta(seconds=5)  # a pruned process notices within a heartbeat or two
PROCESS_EXIT = "pgjobs.errors.ProcessExitError"
KILLS = ("kill_worker", "kill_host")
CUTS = ("freeze_worker", "partition")


@dataclass(frozen=True)
class JobState:
    job_id: str
    class_name: str
    state: str  # ready, scheduled, claimed, blocked, failed, finished, lost
    failure: str | None = None  # the failed execution's exception class
    message: str | None = None
    process_id: int | None = None  # the claiming process, when claimed
    process_exists: bool = False


@dataclass(frozen=True)
class Violation:
    check: str
    message: str
    job_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "job_id": self.job_id, "message": self.message}


@dataclass
class Ends:
    """Each run's end (``None``: its process still runs) and where that end comes from."""

    at: dict[int, datetime | None] = field(default_factory=dict)
    source: dict[int, str] = field(default_factory=dict)  # ledger, kill, poison, watch, open


def run_ends(runs: list[Run], faults: list[Fault], deaths: dict[int, datetime]) -> Ends:
    kills: dict[int, list[datetime]] = defaultdict(list)
    for fault in faults:
        if fault.kind in KILLS:
            for pid in fault.pids:
                kills[pid].append(fault.started_at)
    poisons: dict[int, list[datetime]] = defaultdict(list)
    for run in runs:
        if run.outcome == "poison" and run.ended_at is not None:
            poisons[run.pid].append(run.ended_at)
    ends = Ends()
    for run in runs:
        if run.ended_at is not None:
            ends.at[run.id], ends.source[run.id] = run.ended_at, "ledger"
            continue
        # A pid is killed once: a run that started after the kill was recorded started in the
        # moment before the process died (a poison pill's neighbour), and ended with it.
        candidates = [(t, "kill") for t in kills[run.pid]]
        candidates += [(t, "poison") for t in poisons[run.pid]]
        if not candidates and run.pid in deaths:  # the watcher's sighting: the least precise
            candidates.append((deaths[run.pid] - WATCH_SLACK, "watch"))
        if candidates:
            end, source = min(candidates)
            ends.at[run.id], ends.source[run.id] = max(end, run.started_at), source
        else:
            ends.at[run.id], ends.source[run.id] = None, "open"
    return ends


def _end(ends: Ends, run: Run, horizon: datetime) -> datetime:
    return ends.at[run.id] or horizon


def excusing_fault(run: Run, end: datetime, faults: list[Fault], threshold: float) -> Fault | None:
    """A freeze of the run's process, or a partition of its host, longer than the threshold,
    while the run ran or just before it started (a claim whose reply was held up by the cut,
    run after the heal by a process that has not yet noticed it was pruned)."""
    for fault in faults:
        if fault.kind not in CUTS or fault.ended_at is None:
            continue
        if (fault.ended_at - fault.started_at).total_seconds() <= threshold:
            continue
        hit = run.pid in fault.pids if fault.kind == "freeze_worker" else run.host == fault.host
        if hit and fault.started_at < end and run.started_at < fault.ended_at + STALE_AFTER_CUT:
            return fault
    return None


def describe(run: Run, ends: Ends) -> str:
    end = ends.at[run.id]
    until = f"{end:%H:%M:%S.%f}"[:-3] if end else "still running"
    return (
        f"run {run.id} ({run.kind} attempt {run.attempt}, {run.host} pid {run.pid}, "
        f"{run.started_at:%H:%M:%S.%f}"[:-3]
        + f" - {until} [{ends.source[run.id]}], "
        f"outcome {run.outcome or 'none'})"
    )


def by_job(runs: Iterable[Run]) -> dict[str, list[Run]]:
    grouped: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        grouped[run.job_id].append(run)
    for job_runs in grouped.values():
        job_runs.sort(key=lambda r: (r.started_at, r.id))
    return grouped


def check_overlaps(
    runs: list[Run], ends: Ends, faults: list[Fault], threshold: float, horizon: datetime
) -> tuple[list[Violation], set[int]]:
    """No two runs of one job at once, unless the older is excused; returns the excused runs."""
    violations: list[Violation] = []
    excused: set[int] = set()
    for job_id, job_runs in by_job(runs).items():
        for i, older in enumerate(job_runs):
            older_end = _end(ends, older, horizon)
            for newer in job_runs[i + 1 :]:
                if newer.started_at >= older_end:
                    continue
                fault = excusing_fault(older, older_end, faults, threshold)
                if fault is not None:
                    excused.add(older.id)
                    continue
                violations.append(
                    Violation(
                        "overlap",
                        f"{describe(older, ends)} overlaps {describe(newer, ends)}",
                        job_id,
                    )
                )
    return violations, excused


def check_limits(
    runs: list[Run], ends: Ends, excused: set[int], limits: dict[str, int], horizon: datetime
) -> list[Violation]:
    """At most ``limits[prefix]`` runs of one key at once (keys are ``prefix:name``)."""
    keyed: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        # A run that ended as it started (its process died at once) held no slot.
        if run.key and run.id not in excused and _end(ends, run, horizon) > run.started_at:
            keyed[run.key].append(run)
    violations = []
    for key, key_runs in sorted(keyed.items()):
        limit = limits.get(key.split(":", 1)[0])
        if limit is None:
            continue
        # Sweep: an end at the same instant as a start frees its slot first.
        events = sorted(
            [(r.started_at, 1, r) for r in key_runs]
            + [(_end(ends, r, horizon), 0, r) for r in key_runs],
            key=lambda e: (e[0], e[1], e[2].id),
        )
        running: dict[int, Run] = {}
        reported = False
        for _at, is_start, run in events:
            if is_start:
                running[run.id] = run
                if len(running) > limit and not reported:
                    reported = True
                    together = "; ".join(describe(r, ends) for r in running.values())
                    violations.append(
                        Violation("limit", f"{key}: {len(running)} runs at once: {together}")
                    )
            else:
                running.pop(run.id, None)
    return violations


def check_final_states(
    jobs: list[JobState],
    runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    max_interruptions: int,
    horizon: datetime,
) -> list[Violation]:
    grouped = by_job(runs)
    violations = []
    for job in jobs:
        job_runs = grouped.get(job.job_id, [])
        poison = job.class_name.endswith("PoisonPill")
        # The outcome that must stand: the newest run's, leaving out runs of a process that was
        # cut off past the threshold (pruned: its jobs were decided elsewhere), unless all were.
        decisive = [
            r
            for r in job_runs
            if excusing_fault(r, _end(ends, r, horizon), faults, threshold) is None
        ] or job_runs
        last = decisive[-1] if decisive else None
        if job.state not in ("finished", "failed"):
            where = ""
            if job.state == "claimed":
                exists = "exists" if job.process_exists else "has no pgjobs_processes row"
                where = f" by process {job.process_id}, which {exists}"
            violations.append(
                Violation(
                    "stranded",
                    f"{job.class_name} is {job.state}{where} at the end; "
                    f"runs: {[describe(r, ends) for r in job_runs]}",
                    job.job_id,
                )
            )
            continue
        if poison:
            if job.state != "failed" or job.failure != PROCESS_EXIT:
                violations.append(
                    Violation(
                        "poison",
                        f"the poison pill is {job.state} ({job.failure}), not failed with"
                        f" {PROCESS_EXIT}",
                        job.job_id,
                    )
                )
            continue
        if job.state == "finished":
            # A run that is newer than the last decisive one, though excused (its process had
            # been cut off: it may or may not have been pruned), may be the one that finished it.
            since = job_runs[job_runs.index(last) :] if last is not None else []
            if last is None:
                violations.append(Violation("final_state", "finished without a run", job.job_id))
            elif not any(r.outcome == "ok" for r in since):
                violations.append(
                    Violation(
                        "final_state",
                        f"{job.class_name} finished, but its newest run did not succeed:"
                        f" {[describe(r, ends) for r in job_runs]}",
                        job.job_id,
                    )
                )
            continue
        # Failed: only through max_interruptions injected interruptions (the documented rule).
        interrupted = [
            r
            for r in job_runs
            if ends.source[r.id] == "kill"
            or excusing_fault(r, _end(ends, r, horizon), faults, threshold) is not None
        ]
        if job.failure == PROCESS_EXIT and len(interrupted) >= max_interruptions:
            continue
        causes = Counter(ends.source[r.id] for r in job_runs if r.outcome is None)
        violations.append(
            Violation(
                "failed",
                f"{job.class_name} failed with {job.failure} ({job.message}); only"
                f" {len(interrupted)} of its runs were interrupted by an injected fault"
                f" (interrupted runs by cause: {dict(causes)}); runs:"
                f" {[describe(r, ends) for r in job_runs]}",
                job.job_id,
            )
        )
    return violations


def check_schedule(not_before: dict[str, datetime], runs: list[Run]) -> list[Violation]:
    """A scheduled job never starts before its time."""
    grouped = by_job(runs)
    violations = []
    for job_id, due in not_before.items():
        job_runs = grouped.get(job_id)
        if job_runs and job_runs[0].started_at < due - SCHEDULE_SLACK:
            early = (due - job_runs[0].started_at).total_seconds()
            violations.append(Violation("schedule", f"ran {early:.2f}s before its time", job_id))
    return violations
