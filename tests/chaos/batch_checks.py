"""The chaos run's checks of batches and workflows (``pgjobs.batch``, ``pgjobs.workflow``,
``pgjobs.chain``), as pure functions of the ledger, the jobs' final states and the batch rows.

The workload (:mod:`tests.chaos.driver`, :class:`Planned`) writes batches — some with a job that
fails for good (:class:`~tests.chaos.workload.Doomed`, :class:`~tests.chaos.workload.Stumbles`, a
poison pill), some nested, some with a job adding jobs to its own batch — and workflows (chains,
diamonds, fan-out/fan-in, random DAGs; ``on_failure`` cancel, run or wait), each with on_finish,
on_success and on_discard callbacks.  An operator retries or discards some of the failed jobs.

Callbacks (:func:`check_callbacks`), the issue's "a callback runs exactly once":

- ``callback_twice``: a batch has more than one callback job of one kind in the database (the
  jobs of the callback class whose arguments name the batch and the kind), ``callback_stray``:
  one whose ``job_id`` is not the one prepared when the batch was written;
- ``callback_lost``: a callback job was written but did not finish (it failed, or never ran:
  the generic ``failed`` check reports it too);
- ``callback_missing``: a batch's stamp (``finished_at``, ``succeeded_at``, ``discarded_at``) is
  set but its callback job was never written; ``callback_unstamped``: the other way round;
- ``callback_rerun``: a callback job ran more than once, and the earlier run was not cut short by
  a fault (the at-least-once excuse the other checks make: its process was killed or died, or was
  frozen or cut off past ``process_alive_threshold``, or the database restarted or dropped
  connections, between its start and the next run's);
- ``callback_early``: on_finish or on_success started while a (not excused) run of one of the
  batch's jobs (or of a nested batch's) had not ended, or before one started (unless an operator
  retried that job after on_finish was written);
- ``callback_view``: the batch a callback received is not its own, or on_success saw it not
  succeeded, or on_finish saw jobs pending (unless an operator retried one meanwhile).

Any job (:func:`check_reruns`): ``rerun``: a job ran again after a run of it had succeeded, and
nothing excuses that run's ending having been lost (the same excuses as ``callback_rerun``).

Counts (:func:`check_batch_counts`): ``batch_counts``: the batch row's ``total``, ``pending``,
``succeeded``, ``failed``, ``discarded`` and ``cancelled`` are what its jobs' final states say
(succeeded: finished and neither cancelled nor discarded; failed: in failed executions;
discarded: stamped discarded, or deleted by the operator's discard; a nested batch counts as one
job: succeeded if it succeeded, else failed once finished); ``job_discarded``: a job is
discarded that the operator did not discard; ``batch_unfinished``: every job ended
(and no dependent waits on a failed job) but ``finished_at`` is unset, or ``succeeded_at``/
``discarded_at`` do not match the outcomes; ``batch_finished_early``: ``finished_at`` set with
jobs still pending; ``job_lost``: a job written in a batch is gone though nobody discarded it.

Workflows (:func:`check_workflows`), "a dependent never starts before all its dependencies
succeeded; none is lost when a worker dies":

- ``dependency_lost``: the dependencies in the database are not the ones the workload wrote;
- ``early_start``: a run of a workflow job started before each of its dependencies had a run end
  with success in the ledger (``on_failure="run"``: or had ended for good, failed, cancelled or
  discarded, with every run of it over);
- ``dependency_state``: a running job read a dependency that had not succeeded (``run``: that had
  not ended) through ``job.dependencies()``;
- held jobs: a job still held at the end is valid only while a dependency has not ended — with
  ``wait``, a dependency failed (it may still be retried), directly or through a held job —
  (the rest are reported ``stranded`` by :func:`tests.chaos.checks.check_final_states`); a job
  cancelled because a dependency did not succeed (``cancel``; ``wait``: discarded or cancelled) is
  cancelled by policy, not ``spontaneous_cancel``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from tests.chaos.checks import (
    CUTS,
    Ends,
    JobState,
    Violation,
    _deaths,
    _end,
    _t,
    by_job,
    describe,
    excusing_fault,
)
from tests.chaos.ledger import CallbackSeen, DependencySeen, Fault, Operation, Run

CALLBACKS = ("finish", "success", "discard")
STAMP = {"finish": "finished_at", "success": "succeeded_at", "discard": "discarded_at"}
CALLBACK_CLASS = "BatchCallback"  # tests.chaos.workload.BatchCallback (no import: no jobs)
DATABASE_FAULTS = ("pg_restart", "pg_outage", "terminate_backends")
RERUN_SLACK = timedelta(seconds=0.5)
NOT_SUCCEEDED = ("failed", "cancelled", "discarded", "deleted")


@dataclass
class Planned:
    """A batch or workflow as the enqueuer wrote it (committed): its jobs' ids (those written:
    a duplicate unique job is not), the dependencies (job, dependency) and the callbacks' job ids
    prepared, by kind."""

    batch_id: str
    kind: str  # batch | workflow
    shape: str  # plain, pair, nested, fan_out, poison; chain, diamond, fan, dag
    policy: str | None = None
    parent: str | None = None
    members: list[str] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    callbacks: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchRow:
    id: int
    batch_id: str
    kind: str
    parent_id: int | None
    on_failure: str | None
    total: int
    pending: int
    succeeded: int
    failed: int
    discarded: int
    cancelled: int
    finished_at: datetime | None
    succeeded_at: datetime | None
    discarded_at: datetime | None
    callbacks: dict[str, str]  # kind: the prepared callback job's id

    def counts(self) -> dict[str, int]:
        return {
            "total": self.total,
            "pending": self.pending,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "discarded": self.discarded,
            "cancelled": self.cancelled,
        }


@dataclass(frozen=True)
class CallbackJob:
    """A job of the callback class in the database, with the batch and kind its arguments name."""

    job_id: str
    batch_id: str | None
    what: str | None


@dataclass(frozen=True)
class Edge:
    job_id: str
    depends_on: str
    resolved: bool


def batch_row(row: tuple[Any, ...]) -> BatchRow:
    (id_, batch_id, kind, parent_id, on_failure, total, pending, succeeded, failed, discarded,
     cancelled, finished_at, succeeded_at, discarded_at, callbacks) = row  # fmt: skip
    found = {what: str(cb["job_id"]) for what, cb in (callbacks or {}).items()}
    return BatchRow(
        id_, str(batch_id), kind, parent_id, on_failure, total, pending, succeeded, failed,
        discarded, cancelled, finished_at, succeeded_at, discarded_at, found,
    )  # fmt: skip


def callback_job(job_id: str, arguments: Any) -> CallbackJob:
    """The batch and kind from the stored arguments (``{"args": [<batch ref>, what], ...}``)."""
    batch_id = what = None
    try:
        args = arguments["args"]
        batch_id, what = str(args[0]["v"]), str(args[1])
    except (KeyError, IndexError, TypeError):
        pass
    return CallbackJob(job_id, batch_id, what)


# -- shared ------------------------------------------------------------------------------------


@dataclass
class World:
    """Everything the checks read, indexed."""

    batches: list[BatchRow]
    jobs: list[JobState]
    planned: list[Planned]
    operations: list[Operation]
    by_uuid: dict[str, BatchRow] = field(default_factory=dict)
    by_row: dict[int, BatchRow] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)  # job id -> state, "deleted" if gone
    job: dict[str, JobState] = field(default_factory=dict)
    members: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    children: dict[int, list[BatchRow]] = field(default_factory=lambda: defaultdict(list))
    deleted: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    lost: list[tuple[str, str]] = field(default_factory=list)  # (job id, batch id)
    operated: dict[str, list[Operation]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.by_uuid = {b.batch_id: b for b in self.batches}
        self.by_row = {b.id: b for b in self.batches}
        for b in self.batches:
            if b.parent_id is not None:
                self.children[b.parent_id].append(b)
        for job in self.jobs:
            self.state[job.job_id] = job.state
            self.job[job.job_id] = job
            if job.batch is not None:
                self.members[job.batch].append(job.job_id)
        for op in self.operations:
            if op.answer is None or op.answer != "not_failed":  # done, error: may have taken
                self.operated[op.job_id].append(op)
        for plan in self.planned:
            found = self.by_uuid.get(plan.batch_id)
            for job_id in plan.members:
                if job_id in self.state:
                    continue
                if found is None or not any(o.action == "discard" for o in self.operated[job_id]):
                    self.lost.append((job_id, plan.batch_id))
                else:
                    self.deleted[found.id].append(job_id)
                    self.state[job_id] = "deleted"

    def descendants(self, batch: BatchRow) -> list[BatchRow]:
        found, todo = [], [batch]
        while todo:
            b = todo.pop()
            found.append(b)
            todo.extend(self.children.get(b.id, []))
        return found

    def all_members(self, batch: BatchRow) -> list[str]:
        """The jobs of the batch and of its nested batches (deleted ones too)."""
        return [j for b in self.descendants(batch) for j in self.members[b.id] + self.deleted[b.id]]


def rerun_excuse(
    run: Run,
    until: datetime,
    ends: Ends,
    faults: list[Fault],
    died: dict[int, list[datetime]],
    threshold: float,
    horizon: datetime,
) -> str | None:
    """Why ``run`` may have been followed by another run of its job starting at ``until``
    (at-least-once): its process died during or after it (before ``until``: its ending may not
    have been written), it was frozen or cut off past the threshold, or the database restarted,
    went away or dropped connections meanwhile (a finish lost).  None: nothing excuses it."""
    if ends.source[run.id] in ("kill", "poison", "watch", "open"):
        return f"its process died ({ends.source[run.id]})"
    if excusing_fault(run, _end(ends, run, horizon), faults, threshold) is not None:
        return "its process was cut off past the threshold"
    for at in died.get(run.pid, []):
        if run.started_at <= at <= until + RERUN_SLACK:
            return f"its process died at {_t(at)}"
    for fault in faults:
        end = fault.ended_at or horizon
        if fault.started_at > until + RERUN_SLACK or end < run.started_at:
            continue
        if fault.kind in DATABASE_FAULTS:
            return f"{fault.kind} at {_t(fault.started_at)}"
        if fault.kind in CUTS and (end - fault.started_at).total_seconds() > threshold:
            hit = run.pid in fault.pids if fault.kind == "freeze_worker" else run.host == fault.host
            if hit:
                return f"{fault.kind} at {_t(fault.started_at)}"
    return None


# -- callbacks ---------------------------------------------------------------------------------


def check_callbacks(
    world: World,
    callback_jobs: list[CallbackJob],
    runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    deaths: dict[int, datetime],
    seen: list[CallbackSeen],
    horizon: datetime,
) -> list[Violation]:
    violations: list[Violation] = []
    grouped = by_job(runs)
    died = _deaths(runs, faults, deaths)
    written: dict[tuple[str, str], list[CallbackJob]] = defaultdict(list)
    for cb in callback_jobs:
        written[(cb.batch_id or "?", cb.what or "?")].append(cb)
        found = world.by_uuid.get(cb.batch_id or "")
        prepared = found.callbacks.get(cb.what or "") if found is not None else None
        if prepared != cb.job_id:
            violations.append(
                Violation(
                    "callback_stray",
                    f"callback job for batch {cb.batch_id} on_{cb.what} is not the one prepared"
                    f" ({prepared})",
                    cb.job_id,
                )
            )
    for (batch_id, what), found_jobs in sorted(written.items()):
        if len(found_jobs) > 1:
            violations.append(
                Violation(
                    "callback_twice",
                    f"batch {batch_id} has {len(found_jobs)} on_{what} jobs:"
                    f" {[c.job_id for c in found_jobs]}",
                    found_jobs[0].job_id,
                )
            )
    views: dict[str, list[CallbackSeen]] = defaultdict(list)
    for view in seen:
        views[view.job_id].append(view)
    for batch in world.batches:
        for what, job_id in sorted(batch.callbacks.items()):
            stamp = getattr(batch, STAMP.get(what, "finished_at"), None)
            exists = job_id in world.state
            label = f"{batch.kind} {batch.batch_id} on_{what}"
            if stamp is not None and not exists:
                violations.append(
                    Violation(
                        "callback_missing",
                        f"{label}: {STAMP[what]} is set ({_t(stamp)}) but its job was never"
                        f" written; counts {batch.counts()}",
                        job_id,
                    )
                )
            if stamp is None and exists:
                violations.append(
                    Violation(
                        "callback_unstamped",
                        f"{label}: its job was written but {STAMP.get(what)} is unset;"
                        f" counts {batch.counts()}",
                        job_id,
                    )
                )
            cb_runs = grouped.get(job_id, [])
            job = world.job.get(job_id)
            if job is not None and job.state != "finished":
                failure = f" ({job.failure}: {job.message})" if job.failure else ""
                violations.append(
                    Violation(
                        "callback_lost",
                        f"{label}: its job is {job.state}{failure}, after {len(cb_runs)} runs:"
                        f" {[describe(r, ends) for r in cb_runs]}; the batch {STAMP[what]}"
                        f" {_t(stamp) if stamp else None}",
                        job_id,
                    )
                )
            for older, newer in pairwise(cb_runs):
                if rerun_excuse(older, newer.started_at, ends, faults, died, threshold, horizon):
                    continue
                violations.append(
                    Violation(
                        "callback_rerun",
                        f"{label} ran again with no fault to excuse it: {describe(older, ends)}"
                        f" then {describe(newer, ends)}",
                        job_id,
                    )
                )
            if not cb_runs:
                continue
            first = cb_runs[0]
            retried = _retried_before(world, batch, first.started_at)
            if what in ("finish", "success"):
                early = _unfinished_member_run(
                    world, batch, first, grouped, ends, faults, threshold, horizon,
                    after_retry=what == "finish",
                )  # fmt: skip
                if early is not None:
                    violations.append(
                        Violation(
                            "callback_early",
                            f"{label}: {describe(first, ends)} started, but {early}",
                            job_id,
                        )
                    )
            for view in views.get(job_id, []):
                wrong = None
                if view.batch_id != batch.batch_id:
                    wrong = f"it received batch {view.batch_id}"
                elif what == "success" and (
                    view.state != "succeeded" or view.succeeded != view.total or view.pending
                ):
                    wrong = "the batch was not succeeded"
                elif what == "finish" and view.pending and not retried:
                    wrong = "jobs were pending"
                if wrong is not None:
                    violations.append(
                        Violation(
                            "callback_view",
                            f"{label}: run {view.run_id} at {_t(view.at)}: {wrong} (state"
                            f" {view.state}, total {view.total}, pending {view.pending},"
                            f" succeeded {view.succeeded}, failed {view.failed}, discarded"
                            f" {view.discarded}, cancelled {view.cancelled})",
                            job_id,
                        )
                    )
    return violations


def check_reruns(
    runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    deaths: dict[int, datetime],
    horizon: datetime,
    skip: set[str],
) -> list[Violation]:
    """At least once, not twice: a job may run again after a run of it succeeded only if that
    run's ending may not have been recorded (:func:`rerun_excuse`) — a stale claim whose reply
    came back after a prune, say, must not start it again.  ``skip``: callback jobs, which
    ``callback_rerun`` checks for any two runs."""
    died = _deaths(runs, faults, deaths)
    violations = []
    for job_id, job_runs in by_job(runs).items():
        if job_id in skip:
            continue
        for older, newer in pairwise(job_runs):
            if older.outcome != "ok":
                continue
            if rerun_excuse(older, newer.started_at, ends, faults, died, threshold, horizon):
                continue
            violations.append(
                Violation(
                    "rerun",
                    f"{older.kind}: ran again after it succeeded, with no fault to excuse it:"
                    f" {describe(older, ends)} then {describe(newer, ends)}",
                    job_id,
                )
            )
    return violations


def _retried_before(world: World, batch: BatchRow, before: datetime) -> set[str]:
    """The batch's jobs (nested too) an operator retried (or may have) before ``before``."""
    return {
        job_id
        for job_id in world.all_members(batch)
        for op in world.operated.get(job_id, [])
        if op.action == "retry" and op.asked_at <= before
    }


def _unfinished_member_run(
    world: World,
    batch: BatchRow,
    callback: Run,
    grouped: dict[str, list[Run]],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    horizon: datetime,
    after_retry: bool,
) -> str | None:
    """A run of one of the batch's jobs that had not ended when the callback started, or started
    after it; stale runs (cut off past the threshold) and, with ``after_retry``, runs after an
    operator's retry of the job (a failed job retried after on_finish was written) are left
    out."""
    for job_id in world.all_members(batch):
        asked = [o.asked_at for o in world.operated.get(job_id, []) if o.action == "retry"]
        for run in grouped.get(job_id, []):
            end = _end(ends, run, horizon)
            if excusing_fault(run, end, faults, threshold) is not None:
                continue
            if after_retry and any(run.started_at >= a for a in asked):
                continue
            if end > callback.started_at:
                return f"{describe(run, ends)} of job {job_id} had not ended"
    return None


# -- counts ------------------------------------------------------------------------------------


def check_batch_counts(world: World, waiting: dict[str, str]) -> list[Violation]:
    violations = [
        Violation(
            "job_lost", f"written in batch {batch_id}, gone at the end; nobody discarded it", job_id
        )
        for job_id, batch_id in world.lost
    ]
    for job in world.jobs:
        if job.state == "discarded" and not any(
            o.action == "discard" for o in world.operated.get(job.job_id, [])
        ):
            violations.append(
                Violation(
                    "job_discarded", f"{job.kind} is discarded; nobody discarded it", job.job_id
                )
            )
    for batch in world.batches:
        states = Counter(world.state[j] for j in world.members[batch.id])
        states["deleted"] += len(world.deleted[batch.id])
        children = world.children.get(batch.id, [])
        expected = {
            "total": sum(states.values()) + len(children),
            "succeeded": states["finished"] + sum(1 for c in children if c.succeeded_at),
            "failed": states["failed"]
            + sum(1 for c in children if c.finished_at and not c.succeeded_at),
            "discarded": states["discarded"] + states["deleted"],
            "cancelled": states["cancelled"],
        }
        ended = sum(v for k, v in expected.items() if k != "total")
        expected["pending"] = expected["total"] - ended
        label = f"{batch.kind} {batch.batch_id}"
        if batch.counts() != {k: expected[k] for k in batch.counts()}:
            violations.append(
                Violation(
                    "batch_counts",
                    f"{label}: counts {batch.counts()}, but its jobs' final states say"
                    f" {expected} (jobs {dict(states)}, nested batches {len(children)})",
                )
            )
        pending = expected["pending"]
        held = [j for j in world.members[batch.id] if j in waiting]
        if pending == 0 and batch.finished_at is None:
            violations.append(
                Violation(
                    "batch_unfinished",
                    f"{label}: every job ended, finished_at unset; jobs {dict(states)}",
                )
            )
        if pending > 0 and batch.finished_at is not None:
            violations.append(
                Violation(
                    "batch_finished_early",
                    f"{label}: finished at {_t(batch.finished_at)}, yet {pending} jobs pending"
                    f" at the end (held waiting on a failed job: {len(held)}); jobs {dict(states)}",
                )
            )
        if pending == 0 and (expected["succeeded"] == expected["total"]) != bool(
            batch.succeeded_at
        ):
            violations.append(
                Violation(
                    "batch_unfinished",
                    f"{label}: {expected['succeeded']} of {expected['total']} jobs succeeded, but"
                    f" succeeded_at is {batch.succeeded_at}; jobs {dict(states)}",
                )
            )
        not_succeeded = expected["total"] - expected["succeeded"] - pending
        if not_succeeded and batch.discarded_at is None:
            violations.append(
                Violation(
                    "batch_unfinished",
                    f"{label}: {not_succeeded} jobs did not succeed, discarded_at unset;"
                    f" jobs {dict(states)}",
                )
            )
        if batch.discarded_at is not None and not not_succeeded:
            members = world.all_members(batch)
            if not any(world.operated.get(j) for j in members) and not any(
                c.discarded_at for c in world.descendants(batch)[1:]
            ):
                violations.append(
                    Violation(
                        "batch_unfinished",
                        f"{label}: discarded_at set ({_t(batch.discarded_at)}) though every job"
                        f" succeeded and none was retried; jobs {dict(states)}",
                    )
                )
    return violations


# -- workflows ---------------------------------------------------------------------------------


def check_workflows(
    world: World,
    edges: list[Edge],
    runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    reads: list[DependencySeen],
    horizon: datetime,
) -> tuple[list[Violation], dict[str, str], dict[str, str], set[str]]:
    """Returns the violations, the held jobs that may wait (job id: why), why each other held
    job is held (for the ``stranded`` report), and the jobs cancelled by their workflow's
    policy."""
    violations: list[Violation] = []
    grouped = by_job(runs)
    batch_of = {j.job_id: world.by_row.get(j.batch) for j in world.jobs if j.batch is not None}
    deps: dict[str, list[str]] = defaultdict(list)
    for edge in edges:
        deps[edge.job_id].append(edge.depends_on)

    # The dependencies written are the ones planned.
    for plan in world.planned:
        if plan.kind != "workflow" or plan.batch_id not in world.by_uuid:
            continue
        mine = {j for j in plan.members if world.state.get(j, "deleted") != "deleted"}
        there = {(e.job_id, e.depends_on) for e in edges if e.job_id in mine}
        wanted = {(j, d) for j, d in plan.edges if j in mine and d in mine}
        if there != wanted:
            violations.append(
                Violation(
                    "dependency_lost",
                    f"workflow {plan.batch_id} ({plan.shape}): dependencies written"
                    f" {sorted(wanted)}, found {sorted(there)}",
                )
            )

    def policy(job_id: str) -> str | None:
        found = batch_of.get(job_id)
        return found.on_failure if found is not None else None

    # Each run started after each dependency succeeded (run: or ended for good).
    for job_id, dependencies in deps.items():
        how = policy(job_id)
        for run in grouped.get(job_id, []):
            for dep in dependencies:
                why = _not_ready(
                    dep, run.started_at, how, world, grouped, ends, faults, threshold, horizon
                )
                if why is not None:
                    violations.append(
                        Violation(
                            "early_start",
                            f"{describe(run, ends)} (on_failure {how}) started before its"
                            f" dependency {dep} {why}",
                            job_id,
                        )
                    )
    for read in reads:
        if read.depends_on is None or read.state.startswith("error:"):
            continue
        how = policy(read.job_id)
        if (how == "run" and read.state == "pending") or (
            how != "run" and read.state != "finished"
        ):
            violations.append(
                Violation(
                    "dependency_state",
                    f"run {read.run_id} (on_failure {how}) read its dependency {read.depends_on}"
                    f" as {read.state} at {_t(read.at)}",
                    read.job_id,
                )
            )

    # Held jobs: valid only behind a failed job (wait), directly or through held jobs.
    waiting: dict[str, str] = {}
    held = [j for j in world.jobs if j.state == "held"]
    changed = True
    while changed:
        changed = False
        for job in held:
            if job.job_id in waiting or policy(job.job_id) != "wait":
                continue
            for dep in deps.get(job.job_id, []):
                if world.state.get(dep) == "failed" or dep in waiting:
                    waiting[job.job_id] = f"waits on {dep} ({world.state.get(dep)})"
                    changed = True
                    break
    why_held = {
        job.job_id: f"on_failure {policy(job.job_id)}, dependencies: "
        + str([(d, world.state.get(d, "?")) for d in deps.get(job.job_id, [])])
        for job in held
        if job.job_id not in waiting
    }

    # Cancelled by policy: a dependency did not succeed (cancel), or was discarded or cancelled
    # (wait).
    by_policy: set[str] = set()
    for job in world.jobs:
        how = policy(job.job_id)
        if job.state != "cancelled" or how not in ("cancel", "wait"):
            continue
        bad = NOT_SUCCEEDED if how == "cancel" else ("cancelled", "discarded", "deleted")
        if any(world.state.get(d) in bad for d in deps.get(job.job_id, [])):
            by_policy.add(job.job_id)
    return violations, waiting, why_held, by_policy


def _not_ready(
    dep: str,
    start: datetime,
    how: str | None,
    world: World,
    grouped: dict[str, list[Run]],
    ends: Ends,
    faults: list[Fault],
    threshold: float,
    horizon: datetime,
) -> str | None:
    """Why a run of a dependent starting at ``start`` started too early (None: it did not)."""
    dep_runs = grouped.get(dep, [])
    if any(r.outcome == "ok" and r.ended_at is not None and r.ended_at <= start for r in dep_runs):
        return None
    if how == "run" and world.state.get(dep) in NOT_SUCCEEDED:
        late = [
            r
            for r in dep_runs
            if _end(ends, r, horizon) > start
            and excusing_fault(r, _end(ends, r, horizon), faults, threshold) is None
        ]
        if not late:
            return None
        return f"had ended ({world.state.get(dep)}): {describe(late[0], ends)} was still running"
    return (
        f"had succeeded (it is {world.state.get(dep, '?')} at the end; its runs:"
        f" {[describe(r, ends) for r in dep_runs]})"
    )


# -- for the summary ---------------------------------------------------------------------------


def batch_stats(
    world: World,
    callback_jobs: list[CallbackJob],
    runs: list[Run],
    ends: Ends,
    faults: list[Fault],
    waiting: dict[str, str],
    by_policy: set[str],
    reads: Iterable[DependencySeen] = (),
) -> dict[str, Any]:
    """What the batches and workflows did (not checks), and how often the issue's cases came up:
    the last two jobs of a batch ending together on two processes, the last job's process dying
    under it (its next run finished the batch), a batch finishing within 2 s of a PostgreSQL
    restart, outage or backend termination."""
    grouped = by_job(runs)
    killed_last = near_database_fault = 0
    database_faults = [f for f in faults if f.kind in DATABASE_FAULTS]
    for batch in world.batches:
        if batch.finished_at is None:
            continue
        member_runs = [r for j in world.all_members(batch) for r in grouped.get(j, [])]
        ended = [r for r in member_runs if r.ended_at is not None]
        if not ended:
            continue
        final = max(ended, key=lambda r: r.ended_at or r.started_at)
        if any(
            ends.source[r.id] in ("kill", "poison", "watch")
            for r in grouped.get(final.job_id, [])
            if r.id != final.id
        ):
            killed_last += 1
        window = timedelta(seconds=2)
        if any(
            f.started_at - window <= batch.finished_at <= (f.ended_at or f.started_at) + window
            for f in database_faults
        ):
            near_database_fault += 1
    callback_runs = Counter(r.outcome or "none" for r in runs if r.kind == "callback")
    # Batches whose last two jobs to end ended within 50 ms of each other on two processes.
    together = 0
    for batch in world.batches:
        last = sorted(
            (r.ended_at, r.pid)
            for j in world.members[batch.id]
            for r in grouped.get(j, [])[-1:]
            if r.ended_at is not None and r.outcome == "ok"
        )[-2:]
        close = len(last) == 2 and last[1][0] - last[0][0] <= timedelta(milliseconds=50)
        if close and last[0][1] != last[1][1]:
            together += 1
    states = Counter(f"{b.kind}: {_outcome(b)}" for b in world.batches)
    return {
        "batches": dict(Counter(b.kind for b in world.batches)),
        "shapes": dict(Counter(f"{p.kind}: {p.shape}" for p in world.planned)),
        "workflow_policies": dict(
            Counter(b.on_failure for b in world.batches if b.kind == "workflow")
        ),
        "nested": sum(1 for b in world.batches if b.parent_id is not None),
        "final_states": dict(sorted(states.items())),
        "jobs_in_batches": sum(len(v) for v in world.members.values()),
        "callback_jobs_written": dict(Counter(c.what for c in callback_jobs)),
        "callback_runs": dict(callback_runs),
        "held_waiting_on_a_failed_job_at_the_end": len(waiting),
        "cancelled_by_policy": len(by_policy),
        "deleted_by_the_operator": sum(len(v) for v in world.deleted.values()),
        "operations": dict(Counter(f"{o.action}: {o.answer}" for o in world.operations)),
        "batches_whose_last_two_jobs_ended_within_50ms_on_two_processes": together,
        "batches_whose_last_job_had_a_run_killed": killed_last,
        "batches_finished_within_2s_of_a_database_fault": near_database_fault,
        # job.dependencies() raised in a running job (the database restarting, a connection
        # dropped): the jobs here record it and go on; an application's job would fail.
        "dependency_reads_failed": dict(
            Counter(r.state for r in reads if r.state.startswith("error:"))
        ),
        "callback_jobs_run_more_than_once": sum(
            1 for c in callback_jobs if len(grouped.get(c.job_id, [])) > 1
        ),
    }


def _outcome(batch: BatchRow) -> str:
    if batch.finished_at is None:
        return "running"
    return "succeeded" if batch.succeeded_at else "failed"


def callback_ids(batches: Iterable[BatchRow]) -> set[str]:
    return {job_id for b in batches for job_id in b.callbacks.values()}
