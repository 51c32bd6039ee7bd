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

Job control (:func:`check_cancels`, :func:`check_steps`, :func:`check_attempts`) is judged on
what the ledger proves: the canceller records when it asked and when it was answered, so a job
whose cancel answered "cancelled" must have no run that started after the answer (one that
started while the call was on its way may have ended before the cancel took effect); a stepped
job records a step's completion ("committed") and a cursor ("checkpoint") only once pgjobs said
it was written, so a run that started after such a proof must not run that step again, nor
resume it from an earlier cursor.

Batches and workflows are judged in :mod:`tests.chaos.batch_checks`; here, a job ``held`` at the
end is stranded unless it waits behind a failed job (``waiting``), the kinds that fail for good
(FAILS_FOR_GOOD) may end failed with their error (or discarded by the operator), and a job its
workflow cancelled (a dependency did not succeed) is not a ``spontaneous_cancel``.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgjobs.serialization import loads_value
from tests.chaos.ledger import Cancel, Fault, Run, StepEvent

WATCH_SLACK = timedelta(seconds=0.5)  # the watcher polls every 0.1 s; generous for a busy box
SCHEDULE_SLACK = timedelta(seconds=0.5)
STALE_AFTER_CUT = timedelta(seconds=5)  # a pruned process notices within a heartbeat or two
PROCESS_EXIT = "pgjobs.errors.ProcessExitError"
KILLS = ("kill_worker", "kill_host")
CUTS = ("freeze_worker", "partition")
TERMINAL = ("finished", "failed", "cancelled", "discarded")
FAILS_FOR_GOOD = ("Doomed", "Stumbles")  # tests.chaos.workload kinds with no retry rule
DOOMED = "DoomedError"  # what they raise
STEPS = ("prepare", "iterate", "finalize")  # tests.chaos.workload.STEPS (no import: no pgjobs jobs)
HEEDING = ("Cooperative", "Stepped")  # kinds that check for a cancel request at least every 0.2 s
HEED_GRACE = timedelta(seconds=5)  # a running job asked to stop stops within about a second
CLAIM_SLACK = timedelta(seconds=1)  # from a claim to its run's start in the ledger
UNCOUNTED = ("snoozed", "interrupted")  # run outcomes that are not attempts


@dataclass(frozen=True)
class JobState:
    job_id: str
    class_name: str
    state: str  # held, ready, scheduled, claimed, blocked, failed, cancelled, discarded, finished,
    # lost
    failure: str | None = None  # the failed execution's exception class
    message: str | None = None
    process_id: int | None = None  # the claiming process, when claimed
    process_exists: bool = False
    executions: int = 0  # attempts counted
    result: str | None = None  # the stored result (pgjobs' encoding), if any
    checkpoint: str | None = None  # a stepped job's checkpoint (pgjobs' encoding), if any
    progress: str | None = None  # the last progress report (JSON), if any
    batch: int | None = None  # the row id of its batch or workflow, if any

    @property
    def kind(self) -> str:
        """The class's name, without its module (``tests.chaos.workload:Stepped``: Stepped)."""
        return self.class_name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


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


def check_order(
    runs: list[Run], sequence: dict[str, tuple[str, int]], excused: set[int]
) -> list[Violation]:
    """Each account's sequenced jobs started in enqueue order: the runs of the jobs whose place is
    known (``sequence``), by start time, have non-decreasing places (a job runs again — a retry,
    a rerun after its process died — before the next one starts)."""
    violations = []
    by_account: dict[str, list[tuple[datetime, int, Run]]] = defaultdict(list)
    for run in runs:
        place = sequence.get(run.job_id)
        if place is not None:
            by_account[place[0]].append((run.started_at, place[1], run))
    for account, started in sorted(by_account.items()):
        started.sort(key=lambda s: (s[0], s[2].id))
        highest: tuple[int, Run] | None = None
        for _at, seq, run in started:
            if highest is not None and seq < highest[0]:
                violations.append(
                    Violation(
                        "order",
                        f"{account}: job #{seq} {describe_brief(run)} started after job "
                        f"#{highest[0]} {describe_brief(highest[1])}",
                        run.job_id,
                    )
                )
                break
            if highest is None or seq > highest[0]:
                highest = (seq, run)
    return violations


def check_rates(
    runs: list[Run], rates: dict[str, tuple[int, float]], slack: float
) -> list[Violation]:
    """At most ``limit`` starts of one rate key in any window of ``period - slack`` seconds (keys
    are ``prefix:name``).  ``slack`` covers the time between a start's token and the run's ledger
    row (a new connection to the ledger): the exact measurement is tests/test_flow_control_e2e."""
    violations = []
    keyed: dict[str, list[datetime]] = defaultdict(list)
    for run in runs:
        if run.key and run.key.split(":", 1)[0] in rates:
            keyed[run.key].append(run.started_at)
    for key, starts in sorted(keyed.items()):
        limit, period = rates[key.split(":", 1)[0]]
        starts.sort()
        window = timedelta(seconds=period - slack)
        for i, first in enumerate(starts):
            inside = bisect.bisect_left(starts, first + window) - i
            if inside > limit:
                violations.append(
                    Violation(
                        "rate",
                        f"{key}: {inside} starts within {window.total_seconds():g}s from "
                        f"{_t(first)} (limit {limit} per {period:g}s)",
                    )
                )
                break
    return violations


def describe_brief(run: Run) -> str:
    return f"(run {run.id}, attempt {run.attempt}, started {_t(run.started_at)})"


def check_final_states(
    jobs: list[JobState],
    runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    max_interruptions: int,
    horizon: datetime,
    waiting: Mapping[str, str] | None = None,
    why_held: Mapping[str, str] | None = None,
) -> list[Violation]:
    """Every job ended as its runs say.  A workflow job may be ``held`` at the end only while it
    waits (``waiting``: on_failure "wait", behind a failed dependency); ``why_held`` explains the
    others.  The kinds that fail for good (FAILS_FOR_GOOD) may end failed with DOOMED, or
    discarded (by the operator)."""
    grouped = by_job(runs)
    died = _deaths(runs, faults, {})  # the driver's kills and the poison pills only
    violations = []
    for job in jobs:
        job_runs = grouped.get(job.job_id, [])
        if job.state == "held" and job.job_id in (waiting or {}):
            continue
        poison = job.class_name.endswith("PoisonPill")
        # The outcome that must stand: the newest run's, leaving out runs of a process that was
        # cut off past the threshold (pruned: its jobs were decided elsewhere), unless all were.
        decisive = [
            r
            for r in job_runs
            if excusing_fault(r, _end(ends, r, horizon), faults, threshold) is None
        ] or job_runs
        last = decisive[-1] if decisive else None
        if job.state not in TERMINAL:
            where = ""
            if job.state == "claimed":
                exists = "exists" if job.process_exists else "has no pgjobs_processes row"
                where = f" by process {job.process_id}, which {exists}"
            if job.state == "held":
                where = f" ({(why_held or {}).get(job.job_id, 'no dependency known')})"
            violations.append(
                Violation(
                    "stranded",
                    f"{job.class_name} is {job.state}{where} at the end; "
                    f"runs: {[describe(r, ends) for r in job_runs]}",
                    job.job_id,
                )
            )
            continue
        if job.state == "cancelled" and not poison:
            continue  # judged by check_cancels
        if job.kind in FAILS_FOR_GOOD and (
            (job.state == "failed" and (job.failure or "").endswith(DOOMED))
            or job.state == "discarded"  # by the operator: judged by batch_checks (job_discarded)
        ):
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
        # Failed: only through max_interruptions injected interruptions (the documented rule):
        # a run killed by the driver, or by a poison pill in its process (its neighbour: run
        # alone afterwards, so interrupted once by it at most), or cut off past the threshold;
        # or a run that ended in the ledger but whose process was killed before its ending was
        # recorded (before the job's next run) — recovery counted that one too.
        interrupted = [
            r
            for i, r in enumerate(job_runs)
            if ends.source[r.id] in ("kill", "poison")
            or excusing_fault(r, _end(ends, r, horizon), faults, threshold) is not None
            or _killed_after(r, job_runs[i + 1 :], died, horizon)
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


def _killed_after(
    run: Run, later: list[Run], died: dict[int, list[datetime]], horizon: datetime
) -> bool:
    """The run ended in the ledger, then its process died before the job's next run started:
    its ending may not have been recorded (a finish waits for the worker's next claim)."""
    if run.ended_at is None:
        return False
    until = later[0].started_at if later else horizon
    return any(run.ended_at <= at <= until for at in died.get(run.pid, []))


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


# -- job control ---------------------------------------------------------------------------------


def _excused(
    run: Run, ends: Ends, faults: list[Fault], threshold: float, horizon: datetime
) -> bool:
    return excusing_fault(run, _end(ends, run, horizon), faults, threshold) is not None


def _touching(fault: Fault, run: Run, start: datetime, end: datetime, horizon: datetime) -> bool:
    """A fault of the run's host, or of the database, during [start, end] (or just before)."""
    if fault.host is not None and fault.host != run.host:
        return False
    return fault.started_at <= end and (fault.ended_at or horizon) + STALE_AFTER_CUT >= start


def check_cancels(
    jobs: list[JobState],
    runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    cancels: list[Cancel],
    horizon: datetime,
    by_policy: Iterable[str] = (),
) -> list[Violation]:
    """- "cancelled": the job never starts after that (a run that started after the answer is a
      violation, unless it is an excused stale run), and it is cancelled at the end;
    - "finished", "failed", "cancelled" (it had ended): it stays so;
    - "cancelling": no run starts after the answer (a claim cancels the job instead; CLAIM_SLACK
      for a claim made just before), and a kind that checks for requests (HEEDING) does not run
      on past HEED_GRACE after the answer to finish normally — unless a fault of its host or of
      the database hit the run meanwhile;
    - no job is cancelled that nobody cancelled (but a workflow cancelled it: ``by_policy``, see
      :func:`tests.chaos.batch_checks.check_workflows`)."""
    policy = set(by_policy)
    grouped = by_job(runs)
    calls: dict[str, list[Cancel]] = defaultdict(list)
    for call in cancels:
        calls[call.job_id].append(call)
    violations = []
    for job in jobs:
        job_runs = grouped.get(job.job_id, [])
        history = f"cancels: {[_call(c) for c in calls.get(job.job_id, [])]}; runs: " + str(
            [describe(r, ends) for r in job_runs]
        )
        if job.state == "cancelled" and job.job_id not in calls and job.job_id not in policy:
            violations.append(
                Violation(
                    "spontaneous_cancel",
                    f"{job.kind} is cancelled, but nobody cancelled it; {history}",
                    job.job_id,
                )
            )
        for call in calls.get(job.job_id, []):
            answer, answered = call.answer, call.answered_at
            if answer in ("finished", "failed", "cancelled") and job.state != answer:
                violations.append(
                    Violation(
                        "cancel_state",
                        f"{job.kind}: cancel answered {answer!r}, but the job is {job.state} at"
                        f" the end; {history}",
                        job.job_id,
                    )
                )
            if answer == "cancelled" and answered is not None:
                ran = [
                    r
                    for r in job_runs
                    if r.started_at > answered and not _excused(r, ends, faults, threshold, horizon)
                ]
                if ran:
                    violations.append(
                        Violation(
                            "cancelled_ran",
                            f"{job.kind}: cancel answered 'cancelled' at {_t(answered)}, yet"
                            f" {describe(ran[0], ends)} started after it; {history}",
                            job.job_id,
                        )
                    )
            if answer == "cancelling" and answered is not None:
                late = _claimed_after(answered, job_runs, ends, faults, threshold, horizon)
                if late is not None:
                    violations.append(
                        Violation(
                            "ran_after_cancelling",
                            f"{job.kind}: asked to stop at {_t(answered)} ('cancelling'), yet"
                            f" {late}; {history}",
                            job.job_id,
                        )
                    )
            if answer == "cancelling" and answered is not None and job.kind in HEEDING:
                for r in job_runs:
                    if r.outcome != "ok" or r.ended_at is None:
                        continue
                    since = max(answered, r.started_at)
                    if r.ended_at - since <= HEED_GRACE:
                        continue
                    if any(_touching(f, r, since, r.ended_at, horizon) for f in faults):
                        continue
                    ran_on = (r.ended_at - since).total_seconds()
                    violations.append(
                        Violation(
                            "cancel_unheeded",
                            f"{job.kind}: asked to stop at {_t(answered)} ('cancelling'), yet"
                            f" {describe(r, ends)} ran on {ran_on:.1f}s and finished, no fault"
                            f" on its host or the database meanwhile; {history}",
                            job.job_id,
                        )
                    )
    return violations


def heeding_notes(
    jobs: list[JobState],
    runs: list[Run],
    faults: list[Fault],
    cancels: list[Cancel],
    horizon: datetime,
) -> list[str]:
    """For the summary: each job of a HEEDING kind asked to stop ("cancelling") that finished
    anyway, how long its run went on after the answer and which faults touched it then."""
    kinds = {j.job_id: j.kind for j in jobs if j.kind in HEEDING and j.state == "finished"}
    grouped = by_job(runs)
    notes = []
    for call in cancels:
        if call.job_id not in kinds or call.answer != "cancelling" or call.answered_at is None:
            continue
        for r in grouped.get(call.job_id, []):
            if r.outcome != "ok" or r.ended_at is None or r.ended_at < call.answered_at:
                continue
            since = max(call.answered_at, r.started_at)
            hit = sorted({f.kind for f in faults if _touching(f, r, since, r.ended_at, horizon)})
            notes.append(
                f"{kinds[call.job_id]} {call.job_id[:8]}: answered {_t(call.answered_at)}, run"
                f" {r.id} ({_t(r.started_at)}) finished {(r.ended_at - since).total_seconds():.2f}s"
                f" later; faults meanwhile: {hit or 'none'}"
            )
    return notes


def _claimed_after(
    answered: datetime,
    job_runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    horizon: datetime,
) -> str | None:
    """A run claimed after the request was answered (a claim then cancels the job instead of
    running it): one that started after an earlier run of the job ended at or after the answer
    (it could be claimed only once that run's ending was recorded: proven), or that started
    more than CLAIM_SLACK after the answer with no fault of its host or of the database between
    (its claim may have been made just before the request).  Stale copies are left out."""
    decisive = [r for r in job_runs if not _excused(r, ends, faults, threshold, horizon)]
    for run in decisive:
        for prior in decisive:
            end = ends.at[prior.id]
            if prior is run or end is None or prior.started_at > run.started_at:
                continue
            if answered <= end <= run.started_at:
                return (
                    f"{describe(run, ends)} started after {describe(prior, ends)} had ended,"
                    " after the request"
                )
        if run.started_at > answered + CLAIM_SLACK and not any(
            _touching(f, run, answered, run.started_at, horizon) for f in faults
        ):
            return f"{describe(run, ends)} started after it"
    return None


def _t(at: datetime) -> str:
    return f"{at:%H:%M:%S.%f}"[:-3]


def _call(call: Cancel) -> str:
    answered = _t(call.answered_at) if call.answered_at else "never"
    return f"{_t(call.asked_at)} - {answered}: {call.answer}"


def _decoded(text: str | None) -> Any:
    try:
        return None if text is None else loads_value(text)
    except Exception:  # reported by the caller as a wrong value
        return text


def check_steps(jobs: list[JobState], runs: list[Run], steps: list[StepEvent]) -> list[Violation]:
    """Stepped jobs (:class:`tests.chaos.workload.Stepped`):

    - ``step_rerun``: a run starts a step whose completion an earlier run had proven written
      before this run started; ``step_twice``: a run starts one step twice;
    - ``resume_behind``: a run resumes a step from a cursor before one an earlier run had proven
      written before it started; ``resume_ahead``: from a cursor no run ever reached;
    - when finished: its checkpoint lists every step completed, every item was processed, and
      its result (the number of items) is stored."""
    events: dict[str, list[StepEvent]] = defaultdict(list)
    for event in steps:
        events[event.job_id].append(event)
    grouped = by_job(runs)
    violations = []
    for job in jobs:
        if job.kind != "Stepped":
            continue
        evs = events.get(job.job_id, [])
        for run in grouped.get(job.job_id, []):
            starts = [e for e in evs if e.run_id == run.id and e.event == "start"]
            for name, n in Counter(e.step for e in starts).items():
                if n > 1:
                    violations.append(
                        Violation(
                            "step_twice", f"run {run.id} started {name} {n} times", job.job_id
                        )
                    )
            for start in starts:
                prior = [
                    e
                    for e in evs
                    if e.run_id != run.id and e.step == start.step and e.at < run.started_at
                ]
                done = [e for e in prior if e.event == "committed"]
                if done:
                    violations.append(
                        Violation(
                            "step_rerun",
                            f"run {run.id} ({run.host} pid {run.pid}, started {_t(run.started_at)})"
                            f" ran step {start.step} again at {_t(start.at)}: run {done[0].run_id}"
                            f" had its completion written at {_t(done[0].at)}",
                            job.job_id,
                        )
                    )
                    continue
                proven = [e for e in prior if e.event == "checkpoint" and e.value is not None]
                best = max(proven, key=lambda e: e.value or 0, default=None)
                cursor = start.value or 0
                if best is not None and cursor < (best.value or 0):
                    violations.append(
                        Violation(
                            "resume_behind",
                            f"run {run.id} (started {_t(run.started_at)}) resumed {start.step} at"
                            f" cursor {start.value}; run {best.run_id} had cursor {best.value}"
                            f" written at {_t(best.at)}",
                            job.job_id,
                        )
                    )
                reached = start.value is None or any(
                    e.event == "item" and e.value == start.value - 1 and e.at < start.at
                    for e in evs
                    if e.step == start.step
                )
                if not reached:
                    violations.append(
                        Violation(
                            "resume_ahead",
                            f"run {run.id} resumed {start.step} at cursor {start.value}, which no"
                            " run had reached",
                            job.job_id,
                        )
                    )
        if job.state != "finished":
            continue
        items = next((e.value for e in evs if e.event == "plan"), None)
        checkpoint = _decoded(job.checkpoint)
        completed = checkpoint.get("completed") if isinstance(checkpoint, dict) else None
        if completed != list(STEPS):
            violations.append(
                Violation(
                    "steps_final",
                    f"finished, but its checkpoint says {checkpoint!r}, not all of {STEPS}",
                    job.job_id,
                )
            )
        if items is None:
            continue
        processed = {e.value for e in evs if e.event == "item"}
        missing = sorted(set(range(items)) - processed)
        if missing:
            violations.append(
                Violation(
                    "items_lost", f"finished, but items {missing} of {items} never ran", job.job_id
                )
            )
        if _decoded(job.result) != items:
            violations.append(
                Violation(
                    "result",
                    f"finished, its result is {job.result!r}, not {items}",
                    job.job_id,
                )
            )
    return violations


def _deaths(
    runs: list[Run], faults: list[Fault], deaths: dict[int, datetime]
) -> dict[int, list[datetime]]:
    """When each pid is known to have died, or may have: the driver's kills, poison pills (they
    kill their own process) and the watcher's sightings."""
    died: dict[int, list[datetime]] = defaultdict(list)
    for fault in faults:
        if fault.kind in KILLS:
            for pid in fault.pids:
                died[pid].append(fault.started_at)
    for run in runs:
        if run.outcome == "poison" and run.ended_at is not None:
            died[run.pid].append(run.ended_at)
    for pid, at in deaths.items():
        died[pid].append(at)
    return died


def check_attempts(
    jobs: list[JobState],
    runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    deaths: dict[int, datetime],
    horizon: datetime,
) -> list[Violation]:
    """Only real attempts are counted: a run that snoozed, or a stepped run interrupted at a
    checkpoint, is given back uncounted.  Each run's attempt (``self.executions``) is at most one
    more than the earlier runs that may have been counted: any other run, or an uncounted one
    whose process died, or was cut off past the threshold, before the next run started (its
    ending was then never recorded: recovery counted it), plus the claims that may have been
    lost with a process in between (:func:`_lost_claims`).  And a finished job's ``executions``
    is its finishing run's attempt (when no run of it was cut off: a stale copy may or may not
    have been counted)."""
    died = _deaths(runs, faults, deaths)
    every_death = sorted(at for times in died.values() for at in times)
    grouped = by_job(runs)
    violations = []
    for job in jobs:
        job_runs = grouped.get(job.job_id, [])
        for i, run in enumerate(job_runs):
            counted = [
                p for p in job_runs[:i] if _may_count(p, run.started_at, died, faults, threshold)
            ]
            since = job_runs[i - 1].started_at if i else None
            lost = _lost_claims(since, run.started_at, every_death, faults, threshold)
            if run.attempt > 1 + len(counted) + lost:
                violations.append(
                    Violation(
                        "attempts",
                        f"{job.kind}: {describe(run, ends)} is attempt {run.attempt}, but only"
                        f" {len(counted)} earlier runs could have been counted (and {lost} claims"
                        f" lost with a process since the last run):"
                        f" {[describe(r, ends) for r in job_runs[:i]]}",
                        job.job_id,
                    )
                )
        if job.state != "finished" or not job_runs:
            continue
        last = job_runs[-1]
        if last.outcome != "ok" or any(
            _excused(r, ends, faults, threshold, horizon) for r in job_runs
        ):
            continue
        if job.executions != last.attempt:
            violations.append(
                Violation(
                    "executions",
                    f"{job.kind} finished with executions {job.executions}, but its finishing"
                    f" run was attempt {last.attempt}: {[describe(r, ends) for r in job_runs]}",
                    job.job_id,
                )
            )
    return violations


def _lost_claims(
    since: datetime | None,
    until: datetime,
    every_death: list[datetime],
    faults: list[Fault],
    threshold: float,
) -> int:
    """How many claims of a job may have been counted without a run in the ledger between two of
    its runs: a process that claimed it died (or was cut off past the threshold, and pruned)
    before the job's thread started it.  Any death or long cut in the interval may be one."""
    start = bisect.bisect_right(every_death, since) if since is not None else 0
    lost = bisect.bisect_left(every_death, until) - start
    for fault in faults:
        if fault.kind not in CUTS or fault.ended_at is None:
            continue
        if (fault.ended_at - fault.started_at).total_seconds() <= threshold:
            continue
        if fault.started_at < until and (since is None or fault.ended_at + STALE_AFTER_CUT > since):
            lost += 1
    return max(lost, 0)


def _may_count(
    run: Run,
    until: datetime,
    died: dict[int, list[datetime]],
    faults: list[Fault],
    threshold: float,
) -> bool:
    if run.outcome not in UNCOUNTED:
        return True
    if any(run.started_at <= at <= until for at in died.get(run.pid, [])):
        return True
    for fault in faults:
        if fault.kind not in CUTS or fault.ended_at is None:
            continue
        if (fault.ended_at - fault.started_at).total_seconds() <= threshold:
            continue
        hit = run.pid in fault.pids if fault.kind == "freeze_worker" else run.host == fault.host
        if hit and fault.started_at <= until and fault.ended_at + STALE_AFTER_CUT >= run.started_at:
            return True
    return False


def control_stats(
    jobs: list[JobState], runs: list[Run], steps: list[StepEvent], cancels: list[Cancel]
) -> dict[str, Any]:
    """What the job-control kinds did (for the summary): not checks."""
    kinds = Counter(j.kind for j in jobs if j.kind in ("Stepped", "Snoozer", "Cooperative"))
    states = Counter(
        f"{j.kind}: {j.state}" for j in jobs if j.kind in ("Stepped", "Snoozer", "Cooperative")
    )
    items: Counter[tuple[str, int | None]] = Counter(
        (e.job_id, e.value) for e in steps if e.event == "item"
    )
    stale_progress = []
    plans = {e.job_id: e.value for e in steps if e.event == "plan"}
    reported = {e.run_id for e in steps if e.event == "item"}  # runs that reported progress
    grouped = by_job(runs)
    for job in jobs:
        if job.kind != "Stepped" or job.state != "finished":
            continue
        finishing = [r for r in grouped.get(job.job_id, []) if r.outcome == "ok"]
        if not finishing or finishing[-1].id not in reported:
            continue  # it resumed past its last item: the report stored is an earlier run's
        progress = _decoded_json(job.progress)
        done = progress.get("done") if isinstance(progress, dict) else None
        if done != plans.get(job.job_id):
            stale_progress.append(job.job_id)
    state = {j.job_id: j for j in jobs}
    answered = Counter(
        f"{state[c.job_id].kind}: {c.answer} -> {state[c.job_id].state}"
        for c in cancels
        if c.job_id in state
    )
    return {
        "jobs": dict(kinds),
        "cancel_answers_and_final_states": dict(sorted(answered.items())),
        "final_states": dict(sorted(states.items())),
        "snoozes": sum(1 for r in runs if r.outcome == "snoozed"),
        "runs_cancelled_while_running": sum(1 for r in runs if r.outcome == "cancelled"),
        "stepped_runs_interrupted": sum(1 for r in runs if r.outcome == "interrupted"),
        "steps_resumed": sum(1 for e in steps if e.event == "start" and e.value is not None),
        "steps_started": sum(1 for e in steps if e.event == "start"),
        "steps_committed": sum(1 for e in steps if e.event == "committed"),
        "items_processed_again": sum(n - 1 for n in items.values() if n > 1),
        # Not a violation (a progress write that fails is dropped, documented in jobcontrol.py),
        # but worth a look: finished stepped jobs whose stored progress is not the last report
        # of the run that finished them.
        "finished_stepped_with_stale_progress": stale_progress[:20],
    }


def _decoded_json(text: str | None) -> Any:
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return text
