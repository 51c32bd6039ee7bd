"""The chaos run's jobs (``pgjobs start --app tests.chaos.workload``).

Every execution of ``perform`` writes a row to the ledger (:mod:`tests.chaos.ledger`) on its own
autocommit connection: when it started, and when it ended with which outcome ("ok", "raised",
"poison"; and by job control: "cancelled", "snoozed", "interrupted" — a stepped job whose
checkpoint could not be written).  A run whose process died under it keeps ``ended_at`` NULL.

Flow control: :class:`Sequenced` (an ordered key per account; fails on its first attempt now and
then, and is retried: the retry keeps its place) and :class:`Rated` (a rate limit per account).

The job-control kinds: :class:`Stepped` (resumable steps, each event in ``chaos_steps``),
:class:`Snoozer` (snoozes once or twice, then finishes) and :class:`Cooperative` (long, checks
for a cancel request between short sleeps).  The canceller (:mod:`tests.chaos.driver`) cancels
a sample of every kind but the poison pill.

Batches and workflows (``pgjobs.batch``, ``pgjobs.workflow``, ``pgjobs.chain``; the enqueuer
builds them): their jobs are :class:`Node` (a workflow job: it records the state of each of its
dependencies as ``job.dependencies()`` reads them, in ``chaos_dependencies``), the kinds above,
:class:`FanOut` (adds jobs to its own batch while it runs), the poison pill, and the kinds that
fail for good: :class:`Doomed` (every attempt raises :class:`DoomedError`, no retry rule) and
:class:`Stumbles` (raises on its first run only: an operator's retry succeeds).  Their callbacks
(on_finish, on_success, on_discard) are :class:`BatchCallback`: each run records the batch it
received in ``chaos_callbacks``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg

import pgjobs
from pgjobs.jobs.control import JobInterrupted
from tests.chaos import ledger

LIMIT = 2  # runs of one Limited key at once
LIMIT_DURATION = 900  # longer than any run: a slot never expires under a live job
STEPS = ("prepare", "iterate", "finalize")  # Stepped's steps, in order
CHECKPOINT_EVERY = 4  # Stepped writes its cursor at once (and proves it) every 4 items
NAP_LIMIT = 1  # Snoozer: one run per nap key at once (a snooze gives the slot back)
RATE = (4, 2.0)  # Rated: at most 4 starts per account in any 2 seconds

# How a run ended by job control, as the ledger records it.
_CONTROLLED: tuple[tuple[type[BaseException], str], ...] = (
    (pgjobs.Snooze, "snoozed"),
    (pgjobs.JobCancelled, "cancelled"),
    (JobInterrupted, "interrupted"),
)


class ChaosJob(pgjobs.Job):
    """Runs ``body`` between two ledger writes."""

    def ledgered(self, kind: str, key: str | None, body: Callable[[], None]) -> None:
        with ledger.connect(os.environ[ledger.ENV]) as conn:
            run_id = ledger.start_run(conn, str(self.job_id), kind, key, self.executions)
            self._ledger: tuple[psycopg.Connection[Any], int] = (conn, run_id)
            outcome = "raised"
            try:
                body()
                outcome = "ok"
            except BaseException as exc:
                outcome = next((o for t, o in _CONTROLLED if isinstance(exc, t)), "raised")
                raise
            finally:
                ledger.end_run(conn, run_id, outcome)

    def event(self, step: str, event: str, value: int | None = None) -> None:
        """A stepped job's event, in the current run (see :class:`tests.chaos.ledger.StepEvent`)."""
        conn, run_id = self._ledger
        ledger.step_event(conn, run_id, str(self.job_id), step, event, value)


class Fast(ChaosJob):
    queue_as = "fast"

    def perform(self, n: int) -> None:
        self.ledgered("fast", None, lambda: time.sleep(0.01))


class Slow(ChaosJob):
    def perform(self, seconds: float) -> None:
        self.ledgered("slow", None, lambda: time.sleep(seconds))


class Limited(ChaosJob):
    """At most LIMIT at once per store, across every host."""

    limits_concurrency = pgjobs.limit(
        to=LIMIT, key=lambda store, seconds: store, duration=LIMIT_DURATION
    )

    def perform(self, store: str, seconds: float) -> None:
        self.ledgered("limited", f"limit:{store}", lambda: time.sleep(seconds))


class Unique(ChaosJob):
    """One waiting or running per name (``until="executed"``, the default)."""

    unique = pgjobs.unique(key=lambda name, seconds: name)

    def perform(self, name: str, seconds: float) -> None:
        self.ledgered("unique", f"unique:{name}", lambda: time.sleep(seconds))


class FailsOnce(ChaosJob):
    """Raises on its first attempt; the retry succeeds."""

    retry_on = [pgjobs.retry_on(RuntimeError, wait=0.5, attempts=5, jitter=0)]

    def perform(self, seconds: float) -> None:
        def body() -> None:
            time.sleep(seconds)
            if self.executions == 1:
                raise RuntimeError("fails on its first attempt")

        self.ledgered("fails_once", None, body)


class PoisonPill(ChaosJob):
    """SIGKILLs its own worker (an OOM kill): must end failed with ProcessExitError."""

    queue_as = "fast"

    def perform(self) -> None:
        with ledger.connect(os.environ[ledger.ENV]) as conn:
            run_id = ledger.start_run(conn, str(self.job_id), "poison", None, self.executions)
            ledger.end_run(conn, run_id, "poison")
        os.kill(os.getpid(), signal.SIGKILL)


class Stepped(ChaosJob):
    """Three resumable steps; ``iterate`` goes through ``items`` with a cursor (``advance`` each
    item, ``checkpoint`` every CHECKPOINT_EVERY), reporting progress.  Returns ``items``.

    The ledger proves what pgjobs wrote: "checkpoint" is recorded once ``step.checkpoint()``
    returned (a sync job waits for the write, and is interrupted if it failed), "committed" once
    ``self.step`` returned after running the step (it waited for the step's completion).
    """

    def perform(self, items: int, seconds: float) -> int:
        def body() -> None:
            self.event("-", "plan", items)
            for name in STEPS:
                ran: list[bool] = []
                self.step(name, self.run_step, name, items, seconds, ran)
                if ran:  # it ran in this run (not skipped), and its completion was written
                    self.event(name, "committed")

        self.ledgered("stepped", None, body)
        return items

    def run_step(
        self, step: pgjobs.Step, name: str, items: int, seconds: float, ran: list[bool]
    ) -> None:
        self.event(name, "start", step.cursor)
        if name == "iterate":
            for i in range(step.cursor or 0, items):
                self.event(name, "item", i)
                time.sleep(seconds)
                self.progress(i + 1, items, f"item {i}")
                step.advance(i + 1)  # a cancellation point
                if (i + 1) % CHECKPOINT_EVERY == 0:
                    step.checkpoint()
                    self.event(name, "checkpoint", i + 1)
        else:
            time.sleep(0.2)
        self.event(name, "done")
        ran.append(True)


class Snoozer(ChaosJob):
    """Snoozes ``times`` times (counted in the ledger), then finishes.  Limited (NAP_LIMIT per
    nap key): a snooze gives the slot back, and the job takes one again when due."""

    limits_concurrency = pgjobs.limit(
        to=NAP_LIMIT, key=lambda nap, times, delay: nap, duration=LIMIT_DURATION
    )

    def perform(self, nap: str, times: int, delay: float) -> None:
        def body() -> None:
            time.sleep(0.5)  # long enough for some cancels to find it running
            conn, _ = self._ledger
            if ledger.snoozes(conn, str(self.job_id)) < times:
                self.snooze(delay)

        self.ledgered("snoozer", f"nap:{nap}", body)


class Cooperative(ChaosJob):
    """A long job that honours cancel requests: ``check_cancelled()`` every 0.1 s."""

    def perform(self, ticks: int) -> None:
        def body() -> None:
            for _ in range(ticks):
                self.check_cancelled()
                time.sleep(0.1)

        self.ledgered("cooperative", None, body)


class Sequenced(ChaosJob):
    """Ordered per account (``seq:<account>``): one at a time, in enqueue order, across hosts.
    ``on_failure="continue"``: a job failed for good (after interruptions) lets the key go on, so
    the run drains.  With ``flaky`` it raises on its first attempt and is retried a second later,
    holding its place."""

    ordered = pgjobs.ordered(
        key=lambda account, seq, seconds, flaky: account, on_failure="continue"
    )
    retry_on = [pgjobs.retry_on(RuntimeError, wait=1.0, attempts=5, jitter=0)]

    def perform(self, account: str, seq: int, seconds: float, flaky: bool) -> None:
        def body() -> None:
            time.sleep(seconds)
            if flaky and self.executions == 1:
                raise RuntimeError("fails on its first attempt")

        self.ledgered("sequenced", f"seq:{account}", body)


class Rated(ChaosJob):
    """At most RATE[0] starts per account in any RATE[1] seconds, across hosts."""

    rate_limit = pgjobs.rate_limit(limit=RATE[0], period=RATE[1], key=lambda account, n: account)

    def perform(self, account: str, n: int) -> None:
        self.ledgered("rated", f"rate:{account}", lambda: time.sleep(0.05))


# -- batches and workflows ---------------------------------------------------------------------


class DoomedError(Exception):
    """What :class:`Doomed` and :class:`Stumbles` raise: no rule retries it."""


class Node(ChaosJob):
    """A job of a batch or workflow: reads its dependencies (recording the state of each), sleeps
    ``seconds``, returns ``tag``.  A failed read is recorded too, and does not fail the run."""

    def perform(self, tag: str, seconds: float) -> str:
        def body() -> None:
            conn, run_id = self._ledger
            try:
                found = [(str(d.job_id), d.state) for d in self.dependencies()]
            except Exception as exc:  # the database is down or restarting
                found = [(None, f"error:{type(exc).__name__}")]  # type: ignore[list-item]
            for depends_on, state in found:
                ledger.dependency_seen(conn, run_id, str(self.job_id), depends_on, state)
            time.sleep(seconds)

        self.ledgered("node", None, body)
        return tag


class Doomed(ChaosJob):
    """Fails for good on every attempt (no retry rule): its batch's on_discard fires."""

    def perform(self, tag: str) -> None:
        def body() -> None:
            time.sleep(0.05)
            raise DoomedError(f"doomed {tag}")

        self.ledgered("doomed", None, body)


class Stumbles(ChaosJob):
    """Fails for good on its first run that gets to the end (no retry rule); once retried (by the
    operator, or recovered after its failure was lost) it succeeds."""

    def perform(self, tag: str) -> str:
        def body() -> None:
            conn, _ = self._ledger
            time.sleep(0.05)
            if ledger.failed_runs(conn, str(self.job_id)) == 0:
                raise DoomedError(f"stumbles {tag}")

        self.ledgered("stumbles", None, body)
        return tag


class FanOut(ChaosJob):
    """Adds ``n`` Nodes to its own batch while it runs (``add_to_batch``); the batch's on_finish
    waits for them.  Retried when the database is unreachable (it may then add them twice: at
    least once, like any job's effects)."""

    retry_on = [pgjobs.retry_on(Exception, wait=1.0, attempts=10, jitter=0)]

    def perform(self, n: int) -> None:
        def body() -> None:
            self.add_to_batch(*(Node.build(f"fan-{i}", 0.05) for i in range(n)))

        self.ledgered("fan_out", None, body)


class BatchCallback(ChaosJob):
    """A batch's on_finish / on_success / on_discard (``what``): records the batch it received."""

    def perform(self, batch: pgjobs.BatchInfo, what: str) -> None:
        def body() -> None:
            conn, run_id = self._ledger
            ledger.callback_seen(conn, run_id, str(self.job_id), what, batch)
            time.sleep(0.05)

        self.ledgered("callback", None, body)
