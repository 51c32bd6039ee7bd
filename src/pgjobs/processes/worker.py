"""The worker: claims ready jobs for its queues and runs them in a pool of threads.

Guarantees:

- It claims as many jobs as it has idle threads, plus up to ``prefetch`` more that wait in its
  inbox for a thread — no more than the threads are expected to start within 50 ms, given back to
  ready, uncounted, when they wait too long (:mod:`pgjobs.processes.prefetch`) — with one
  statement per queue, and the same statement finishes the jobs completed since its last trip
  (one round trip per batch; no transaction stays open while a job runs).
- Queue selection is Solid Queue's: a list of queues is strict order (nothing from a later queue
  while an earlier one has ready jobs), priority orders within a queue, ``*`` alone means every
  queue in global priority order, ``prefix*`` expands to the matching queues in alphabetical
  order, and paused queues are skipped (pauses are re-read at most every second, and at once when
  a queue is resumed).
- On SIGTERM/SIGINT it stops claiming, gives back the jobs that wait for a thread, lets running
  jobs finish for up to ``shutdown_timeout``, gives back the jobs still running (to ready, not
  counted as attempts) and deregisters.  On
  SIGQUIT it leaves at once; its supervisor recovers the jobs.
- An execution that ends with an error is recorded in ONE statement, as the job's rules decided
  in the job's thread (:mod:`pgjobs.jobs.rules`): retried (same job, to ready or scheduled),
  discarded (finished, ``discarded_at`` set) or failed; the error goes to the job's history
  either way.
- With ``preserve_finished_jobs: false`` the claim statements delete finished jobs instead of
  stamping them (the variants in :mod:`pgjobs.store.finished`, chosen here once).
- Jobs of classes with a concurrency limit or a unique key (rare: the claim returns their keys)
  are finished by their own statement, which also gives back their slots and unique keys; the
  keys whose slots were given back are then unblocked
  (:func:`pgjobs.operations.concurrency.unblock`).  A job unique ``until="executing"`` has its
  key released before it starts.

Its parts: the job threads and the deadlines of their jobs (:mod:`pgjobs.processes.threads`),
claiming and finishing (:mod:`pgjobs.processes.claims`), the jobs claimed ahead
(:mod:`pgjobs.processes.prefetch`), recording errors
(:mod:`pgjobs.processes.recording`) and job control (:mod:`pgjobs.processes.jobcontrol`); this
module holds the pass that ties them together, and stopping.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Iterable
from typing import Any

import psycopg

from pgjobs import events
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import GAVE_UP, Database
from pgjobs.jobs import rules
from pgjobs.observability import outcomes
from pgjobs.processes import floors
from pgjobs.processes.claims import Claims, _ids
from pgjobs.processes.executor import (
    FINISHED,
    Claimed,
    EventLoopThread,
    Outcome,
)
from pgjobs.processes.jobcontrol import CHECK_CANCELS, Control
from pgjobs.processes.poller import Poller, matches
from pgjobs.processes.prefetch import WEIGHT, Buffer, ClaimingAhead
from pgjobs.processes.recording import Recording
from pgjobs.processes.threads import TIMEOUT_GRACE, JobThreads, _Deadline, _seconds, _Slot
from pgjobs.store import claimed as claimed_store
from pgjobs.store import control as control_store
from pgjobs.store import failed as failed_store
from pgjobs.store import finished as finished_store
from pgjobs.store import rates as rates_store
from pgjobs.store import ready as ready_store
from pgjobs.store.jobs import notify_channel

log = logging.getLogger("pgjobs")
LOCKED_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before retrying work that hit a lock
INF = float("inf")
_active = events.active


class Worker(Poller, Claims, ClaimingAhead, JobThreads, Recording):
    kind = "worker"
    lock_timeout_ms = 200  # work that hits it is retried from a later pass (see _locked)

    def __init__(
        self, database: Database, config: Config, worker: WorkerConfig, **kwargs: Any
    ) -> None:
        metadata = {
            "queues": list(worker.queues),
            **({"weights": list(worker.weights)} if worker.weights else {}),
            "threads": worker.threads,
            "prefetch": worker.prefetch,
            "polling_interval": worker.polling_interval,
        }
        super().__init__(database, config, metadata=metadata, **kwargs)
        self.worker = worker
        self.patterns = tuple(worker.queues)
        self.weights = (
            dict(zip(worker.queues, worker.weights, strict=True)) if worker.weights else None
        )
        self.threads = worker.threads
        self.inbox: queue.SimpleQueue[Claimed | None] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        # The jobs put in the inbox, some of them waiting for a thread (claimed ahead).
        self.buffer = Buffer(self.inbox, worker.prefetch, worker.threads)
        self.in_flight: dict[int, Claimed] = {}
        self.to_finish: list[int] = []
        self.to_finish_keyed: list[int] = []  # finished jobs with a slot or unique key to release
        # Finished jobs that returned a value: (id, JSON), finished by their own statement.
        self.to_finish_results: list[tuple[int, str]] = []
        self._keyed_results: list[tuple[int, str]] = []  # the same, of jobs in to_finish_keyed
        self._finished_keys: list[str] = []  # their concurrency keys, to unblock after
        self._batch_of: dict[int, int] = {}  # the batch of each job of a batch among them
        self.loop = EventLoopThread()
        self._paused: frozenset[str] = frozenset()
        self._paused_at = float("-inf")
        self._queues: list[str] = []
        self._queues_at = float("-inf")
        self._slots: list[_Slot] = []
        self.floors = floors.Floors()
        self._started_threads = 0
        # Settings not in every Config yet: a default timeout for jobs without one, and the grace.
        self.default_timeout = _seconds(getattr(config, "job_timeout", None))
        rules.set_default_retry(config.retry)
        self.timeout_grace = float(getattr(config, "timeout_grace", TIMEOUT_GRACE))
        self._timed: dict[int, _Deadline] = {}  # running jobs with a deadline, by id
        # A job recovered after a crash runs alone: until it ends this worker claims nothing,
        # so if it kills the process again no other job is interrupted with it.
        self._alone: int | None = None
        # Suspects given back because this worker was busy: it claims nothing while one of them
        # still waits in ready (an idle worker will take it), so that it can run alone somewhere.
        self._draining: list[int] = []
        self._pending_unique: list[int] = []  # until-executing keys still to release
        self._unstarted: list[int] = []  # claimed, not started: to give back (_give_back)
        # Work that waited too long on a lock held elsewhere (an application transaction holding
        # a semaphore row): retried from later passes, so the claim loop never stalls behind it.
        self._unrecorded: list[Outcome] = []
        self._to_unblock: set[str] = set()
        self._retry_locked_at = float("-inf")
        self._locked_backoff = LOCKED_BACKOFF[0]
        self.leaves_jobs = False  # stopped with jobs still running: the supervisor gives them back
        self.control = Control(self.wake)  # job control: progress, checkpoints, cancel requests
        self._cancels_at = INF  # when to look for cancel requests among running jobs (monotonic)
        self._keeps_results = config.preserve_finished_jobs  # else results go with their jobs
        self.control.keeps_results = self._keeps_results
        self._wake_at = INF  # when the main loop plans to wake up (monotonic)
        if config.preserve_finished_jobs:
            self._claim_all, self._claim_queue = ready_store.CLAIM_ALL, ready_store.CLAIM_QUEUE
            self._claim_merged = ready_store.CLAIM_QUEUES_MERGED
            self._finish_only_sql, self._discard_sql = ready_store.FINISH_ONLY, failed_store.DISCARD
            self._finish_keyed_sql = finished_store.FINISH_KEYED
        else:
            self._claim_all = finished_store.CLAIM_ALL
            self._claim_queue = finished_store.CLAIM_QUEUE
            self._claim_merged = finished_store.CLAIM_QUEUES_MERGED
            self._finish_only_sql = finished_store.FINISH_ONLY
            self._discard_sql = failed_store.DISCARD_DELETE
            self._finish_keyed_sql = finished_store.FINISH_KEYED_DELETE

    def on_connect(self, conn: psycopg.Connection[Any]) -> None:
        if not self.config.durable_claims:
            # Claims, finishes and failures commit without waiting for their WAL flush (about a
            # millisecond each on most disks).  A PostgreSQL crash may forget the last ~0.6 s of
            # them: those jobs are claimed or run again — at least once, never lost.  Enqueues,
            # on the application's connections, stay durable.
            conn.execute("SET synchronous_commit = off")

    def title(self) -> str:
        return f"pgjobs-worker: {','.join(self.patterns)} ({self.threads} threads)"

    def runs_jobs(self) -> bool:
        return bool(self.in_flight)

    def wanted(self, payload: str) -> bool:
        if payload == control_store.CANCEL_PAYLOAD:  # someone asked a running job to stop
            self._cancels_at = float("-inf")
            return bool(self.in_flight)
        payload, key = floors.parse(payload)
        if payload == "*" or matches(payload, self.patterns):
            self.floors.notified(payload, key)
            if payload in self._paused:
                self._paused_at = float("-inf")  # resumed: re-read pauses now
            if payload not in self._queues:
                self._queues_at = float("-inf")
            return True
        return False

    # -- the thread pool (pgjobs.processes.threads) -------------------------------------------

    def on_start(self) -> None:
        events.log_events()
        for _ in range(self.threads):
            self._start_thread()

    # -- one pass -----------------------------------------------------------------------------

    def poll(self) -> float:
        self._wake_at = INF  # a job starting now with a deadline wakes us to re-plan
        if self.reconnected:
            self.reconcile()
        self._collect()
        if self.control.pending():  # before the finishes: a job's last progress, its checkpoint
            self.control.serve(self.execute, self.id)
        if (self._unrecorded or self._to_unblock) and time.monotonic() >= self._retry_locked_at:
            self._retry_locked()
        upcoming = self.check_deadlines() if self._timed else INF
        if self.in_flight:
            upcoming = min(upcoming, self._check_cancels())
            if self.buffer.size:
                upcoming = min(upcoming, self._check_buffer())
        delay = self._claim_pass()
        if upcoming < INF:
            delay = min(delay, max(0.0, upcoming - time.monotonic()))
        self._wake_at = time.monotonic() + delay
        return delay

    def _check_cancels(self) -> float:
        """Look for cancel requests among the running jobs when due; returns when next."""
        now = time.monotonic()
        if self._cancels_at == INF:
            self._cancels_at = now + CHECK_CANCELS  # jobs started: first look in a while
        if now < self._cancels_at:
            return self._cancels_at
        self._cancels_at = now + CHECK_CANCELS
        asked = [i for i in self.in_flight if i not in self.control.cancelled]
        if asked:
            try:
                rows = self.execute(control_store.CANCEL_REQUESTED, {"ids": _ids(asked)})
            except GAVE_UP:
                return self._cancels_at
            if rows and self.buffer.waiting():
                self._cancel_buffered({job_id for (job_id,) in rows})
            loop = self.loop.running_loop()
            for (job_id,) in rows:
                if job_id not in self.in_flight:
                    continue  # cancelled while it waited for a thread
                self.control.cancel(job_id, loop)
                if "cancel" in _active:
                    claimed = self.in_flight[job_id]
                    events.emit("cancel", **self._fields(claimed), running=True, requested=True)
        return self._cancels_at

    def _claim_pass(self) -> float:
        if self.to_finish_results and time.monotonic() >= self._retry_locked_at:
            self._finish_results()
        if self.to_finish_keyed and time.monotonic() >= self._retry_locked_at:
            self._finish_keyed()
        if self._alone is not None and self._alone not in self.in_flight:
            self._alone = None
        if self._draining and (not self.in_flight or not self._still_ready(self._draining)):
            self._draining = []
        if self._pending_unique:
            self._release_unique([])
        if self._unstarted:
            self._give_back_unstarted()
        buffer = self.buffer
        idle = self.threads - len(self.in_flight)  # threads with nothing to run, buffer included
        now = time.monotonic()
        limit = idle + buffer.room(now) if buffer.size else idle
        waiting = buffer.waiting()
        if limit <= 0 or self._alone is not None or self._draining or waiting >= self.threads:
            # (Jobs wait for every thread: the claim that refills the buffer, once the threads
            # have taken them, finishes the completed ones.)
            if self.to_finish and not waiting:
                self._finish_only()
            return self.worker.polling_interval
        claimed = self.isolate(self.claim(limit))
        if any(c.cancel_requested for c in claimed):
            claimed = self._cancel_unstarted(claimed)
        if len(claimed) > idle:  # some will wait for a thread
            claimed = self._start_now(claimed, max(idle, 0), now)
        if any(c.rate_key is not None for c in claimed):
            got = len(claimed)
            claimed = self._take_starts(claimed)
            if len(claimed) < got and not claimed:
                return 0.0  # all over their rate: the next ready jobs may not be; claim again
        executing = [c.id for c in claimed if c.unique_key and c.unique_key.startswith("x|")]
        if executing:  # until="executing": a new job with the key may be enqueued from now on
            self._release_unique(executing)
        in_flight = self.in_flight
        for job in claimed:
            in_flight[job.id] = job
        buffer.put(claimed, now)
        if claimed and len(claimed) == limit:
            return self.worker.polling_interval  # busy: a finishing job wakes us
        return 0.0 if claimed else self.worker.polling_interval

    def _take_starts(self, claimed: list[Claimed]) -> list[Claimed]:
        """Rate-limited jobs run only with a start token, taken key by key in claim order; the
        rest were moved to their key's line by the same statement (pgjobs.store.rates), and the
        worker runs exactly the ids it was granted.  The statement is safe to run again after a
        lost reply (it looks only at jobs this process still holds).  If it gives up on a lock,
        its jobs go straight back to ready, not counted (or from a later pass, see
        :meth:`_give_back_unstarted`)."""
        by_key: dict[str, list[Claimed]] = {}
        for job in claimed:
            if job.rate_key is not None:
                by_key.setdefault(job.rate_key, []).append(job)
        refused: set[int] = set()
        for key, jobs in sorted(by_key.items()):
            ids = [job.id for job in jobs]
            params = {
                "ids": _ids(ids),
                "key": key,
                "process_id": self.id,
                "guard": rates_store.GUARD,
            }
            try:
                held, found, granted = self.execute(rates_store.TAKE, params)[0][:3]
                if held and not found:  # the key's first use: its row, then the tokens
                    self.execute(rates_store.NEW_KEY, {"key": key, "id": ids[0]})
                    held, found, granted = self.execute(rates_store.TAKE, params)[0][:3]
            except GAVE_UP:
                self._unstarted += ids
                self._give_back_unstarted("jobs whose rate limit could not be checked")
                granted = []
            started = set(granted)
            refused.update(i for i in ids if i not in started)
            if len(started) < len(ids) and "rate_limited" in _active:
                events.emit(
                    "rate_limited", process_id=self.id, key=key, waiting=len(ids) - len(started)
                )
        return [job for job in claimed if job.id not in refused]

    def _give_back_unstarted(self, why: str = "claimed jobs that had not started") -> None:
        """Jobs claimed but not started (claimed ahead, or a rate check that gave up on a lock)
        go back to ready, not counted; retried from each pass until it works."""
        try:
            self._release(self._unstarted, why)
        except GAVE_UP:
            self._locked()
            return
        self._unstarted = []

    def _cancel_unstarted(self, claimed: list[Claimed]) -> list[Claimed]:
        """Jobs asked to stop before they were claimed are cancelled, not run."""
        for job in claimed:
            if job.cancel_requested:
                self._record(Outcome(job, None, "", 0.0, "cancel"))
        return [job for job in claimed if not job.cancel_requested]

    def _collect(self) -> None:
        in_flight, cancelled, keeps_results = (
            self.in_flight,
            self.control.cancelled,
            self._keeps_results,
        )
        observe = outcomes.observe  # metrics (pgjobs.observability.metrics), or None
        done: list[Outcome] = []
        mean, ended = self.buffer.mean, False  # the moving mean of job durations
        while True:
            try:
                outcome = self.outbox.get_nowait()
            except queue.Empty:
                if observe is not None and done:
                    observe(done)
                if ended:
                    self.buffer.ended(mean, time.monotonic())
                return
            claimed = outcome.claimed
            if in_flight.get(claimed.id) is not claimed:
                continue  # no longer ours to record (failed on timeout, released)
            del in_flight[claimed.id]
            if outcome.kind == "unstarted":  # see Process.safe_until: given back if still ours
                self._unstarted.append(claimed.id)
                cancelled.discard(claimed.id)
                continue
            duration = outcome.duration
            mean = duration if mean is None else mean + (duration - mean) * WEIGHT
            ended = True
            if observe is not None:
                done.append(outcome)
            if self._timed:
                self._timed.pop(claimed.id, None)
            if cancelled:
                cancelled.discard(claimed.id)
            if outcome.kind == FINISHED:
                # A batch's job is kept when it ends, and its result with it (dependents read it).
                result = outcome.result if keeps_results or claimed.batch_id is not None else None
                if claimed.keyed:
                    self.to_finish_keyed.append(claimed.id)
                    if claimed.batch_id is not None:
                        self._batch_of[claimed.id] = claimed.batch_id
                    if result is not None:
                        self._keyed_results.append((claimed.id, result))
                    if claimed.concurrency_key is not None:
                        self._finished_keys.append(claimed.concurrency_key)
                elif result is not None:
                    self.to_finish_results.append((claimed.id, result))
                else:
                    self.to_finish.append(claimed.id)
            else:
                if self.control.pending():  # what the job wrote on its way out comes first
                    self.control.serve(self.execute, self.id)
                self._record(outcome)

    def _record(self, outcome: Outcome) -> None:
        try:
            self.record(outcome)
        except GAVE_UP:
            self._unrecorded.append(outcome)  # still claimed by us: retried from a later pass
            self._locked()

    def _unblock(self, keys: Iterable[str | None]) -> None:
        given = {key for key in keys if key is not None}
        try:
            super()._unblock(given | self._to_unblock)
            self._to_unblock.clear()
        except GAVE_UP:
            self._to_unblock |= given
            self._locked()

    def _locked(self) -> None:
        """Some work waited ``lock_timeout`` for a lock: retry it later, backing off."""
        delay = self._locked_backoff
        self._retry_locked_at = time.monotonic() + delay
        self._locked_backoff = min(delay * 2, LOCKED_BACKOFF[-1])
        log.warning(
            "worker %s: waiting on a lock held by another transaction; retrying in %.1fs",
            self.name,
            delay,
        )

    def _retry_locked(self) -> None:
        unrecorded, self._unrecorded = self._unrecorded, []
        for outcome in unrecorded:
            self._record(outcome)
        if self._to_unblock and not self._unrecorded:
            self._unblock([])
        if not self._unrecorded and not self._to_unblock:
            self._locked_backoff = LOCKED_BACKOFF[0]

    def holding(self) -> list[int]:
        """The jobs this worker holds: running, or ended and not yet recorded."""
        return [
            *self.in_flight,
            *self.to_finish,
            *self.to_finish_keyed,
            *(job_id for job_id, _ in self.to_finish_results),
            *(o.claimed.id for o in self._unrecorded),
        ]

    def reconcile(self) -> None:
        """After a lost connection, give back claimed rows we are not running.  With
        ``durable_claims: false`` a PostgreSQL crash may also have forgotten claims of jobs we
        ARE running: those are claimed again if they are still ready (see configuration.md)."""
        self.reconnected = False
        running = self.holding()
        if not self.config.durable_claims and self.in_flight:
            with contextlib.suppress(*GAVE_UP):  # best effort: it narrows a window, no more
                self.execute(
                    claimed_store.RECLAIM,
                    {"process_id": self.id, "job_ids": list(self.in_flight)},
                )
        rows = self.execute_durable(
            claimed_store.RELEASE_ORPHANS,
            {
                "process_id": self.id,
                "running": running,
                "channel": notify_channel(self.database.schema),
            },
        )
        if rows and rows[0][0]:
            self.floors.notified("*", None)
            self._released(int(rows[0][0]), "jobs claimed by a lost reply")

    # -- stopping -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        # Jobs still waiting for a thread never start now.
        buffered = [job for _, job in self.buffer.withdraw()]
        for job in buffered:
            self.in_flight.pop(job.id, None)
        if self.pruned:
            # Our jobs were recovered elsewhere; nothing can be claimed under our old row any
            # more, but give back whatever still is (the orphan sweep would, later and counted).
            self._release(None, "jobs still claimed after this worker was pruned")
            return
        if self.exit_now:
            return  # SIGQUIT: the supervisor gives our jobs back once we have exited
        if buffered:  # (if this gives up on a lock, deregistering gives them back)
            self._give_back(buffered, "jobs claimed ahead that had not started")
        self.control.stopping = True  # stepped jobs stop at their next checkpoint
        deadline = time.monotonic() + self.config.shutdown_timeout
        while self.in_flight and time.monotonic() < deadline:
            self.wake.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self.wake.clear()
            if self.control.pending():
                self.control.serve(self.execute, self.id)
            self._collect()
            if self._timed:
                self.check_deadlines(replace=False)
        self._collect()
        if self.control.pending():
            self.control.serve(self.execute, self.id)
        if self.to_finish:
            self._finish_only()
        if self.to_finish_results:
            self._finish_results()
        if self.to_finish_keyed:
            self._finish_keyed()
        if self._unrecorded or self._to_unblock:
            self._retry_locked()
        if self.in_flight:
            # Jobs still running: they may run elsewhere only once their threads are dead, so
            # they are given back only after this process has exited — by our supervisor (the
            # row stays for it), or, with no supervisor left, by recovery once our heartbeat
            # has expired (counted as an interruption).
            self.leaves_jobs = True
            # (A thread of the supervisor — mode: async — has no process to exit before them.)
            supervised = self.supervisor_id is not None and not self.orphaned()
            supervised = supervised and not self.resident
            log.warning(
                "worker %s: %s jobs still running at shutdown_timeout; %s",
                self.name,
                len(self.in_flight),
                "leaving them to the supervisor"
                if supervised
                else "no supervisor: they are recovered once this process's heartbeat expires",
            )
        for _ in self._slots:
            self.inbox.put(None)
        self.loop.stop()

    def deregister(self) -> None:
        if not self.leaves_jobs:
            super().deregister()

    def _release(self, job_ids: list[int] | None, why: str) -> None:
        rows = self.execute_durable(
            claimed_store.RELEASE,
            {
                "process_ids": [self.id],
                "job_ids": job_ids,
                "channel": notify_channel(self.database.schema),
            },
        )
        if rows[0][0]:
            self._released(int(rows[0][0]), why)

    def _released(self, count: int, why: str) -> None:
        if "release_claimed" in _active:
            events.emit(
                "release_claimed", process_id=self.id, process=self.name, count=count, reason=why
            )
        else:
            log.warning("worker %s: released %s %s to ready", self.name, count, why)
