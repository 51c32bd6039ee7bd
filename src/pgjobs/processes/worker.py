"""The worker: claims ready jobs for its queues and runs them in a pool of threads.

Guarantees:

- It claims only as many jobs as it has idle threads, with one statement per queue, and the same
  statement finishes the jobs completed since its last trip (one round trip per batch; no
  transaction stays open while a job runs).
- Queue selection is Solid Queue's: a list of queues is strict order (nothing from a later queue
  while an earlier one has ready jobs), priority orders within a queue, ``*`` alone means every
  queue in global priority order, ``prefix*`` expands to the matching queues in alphabetical
  order, and paused queues are skipped (pauses are re-read at most every second, and at once when
  a queue is resumed).
- On SIGTERM/SIGINT it stops claiming, lets running jobs finish for up to ``shutdown_timeout``,
  gives back the jobs still running (to ready, not counted as attempts) and deregisters.  On
  SIGQUIT it leaves at once; its supervisor recovers the jobs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from pgjobs import clock
from pgjobs.config import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.processes.executor import Claimed, EventLoopThread, Outcome, perform
from pgjobs.processes.poller import Poller, matches
from pgjobs.store import claimed as claimed_store
from pgjobs.store import failed as failed_store
from pgjobs.store import pauses as pauses_store
from pgjobs.store import ready as ready_store
from pgjobs.store.jobs import notify_channel

log = logging.getLogger("pgjobs")
REFRESH_PAUSES = 1.0  # seconds between re-reads of pgjobs_pauses
REFRESH_QUEUES = 1.0  # seconds between loose index scans for ``prefix*`` / ``*`` with pauses


class Worker(Poller):
    kind = "worker"

    def __init__(
        self, database: Database, config: Config, worker: WorkerConfig, **kwargs: Any
    ) -> None:
        metadata = {
            "queues": list(worker.queues),
            "threads": worker.threads,
            "polling_interval": worker.polling_interval,
        }
        super().__init__(database, config, metadata=metadata, **kwargs)
        self.worker = worker
        self.patterns = tuple(worker.queues)
        self.threads = worker.threads
        self.inbox: queue.SimpleQueue[Claimed | None] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.in_flight: dict[int, Claimed] = {}
        self.to_finish: list[int] = []
        self.loop = EventLoopThread()
        self._paused: frozenset[str] = frozenset()
        self._paused_at = float("-inf")
        self._queues: list[str] = []
        self._queues_at = float("-inf")
        self._pool: list[threading.Thread] = []

    def title(self) -> str:
        return f"pgjobs-worker: {','.join(self.patterns)} ({self.threads} threads)"

    def wanted(self, payload: str) -> bool:
        if payload == "*" or matches(payload, self.patterns):
            if payload in self._paused:
                self._paused_at = float("-inf")  # resumed: re-read pauses now
            if payload not in self._queues:
                self._queues_at = float("-inf")
            return True
        return False

    # -- the thread pool ----------------------------------------------------------------------

    def on_start(self) -> None:
        for i in range(self.threads):
            thread = threading.Thread(target=self._work, name=f"pgjobs-worker-{i}", daemon=True)
            thread.start()
            self._pool.append(thread)

    def _work(self) -> None:
        while True:
            job = self.inbox.get()
            if job is None:
                return
            self.outbox.put(perform(job, self.loop))
            self.wake.set()

    # -- one pass -----------------------------------------------------------------------------

    def poll(self) -> float:
        if self.reconnected:
            self.reconcile()
        self._collect()
        idle = self.threads - len(self.in_flight)
        if idle <= 0:
            if self.to_finish:
                self._finish_only()
            return self.worker.polling_interval
        claimed = self.claim(idle)
        for job in claimed:
            self.in_flight[job.id] = job
            self.inbox.put(job)
        if claimed and len(claimed) == idle:
            return self.worker.polling_interval  # busy: a finishing job wakes us
        return 0.0 if claimed else self.worker.polling_interval

    def _collect(self) -> None:
        while True:
            try:
                outcome = self.outbox.get_nowait()
            except queue.Empty:
                return
            self.in_flight.pop(outcome.claimed.id, None)
            if outcome.error is None:
                self.to_finish.append(outcome.claimed.id)
            else:
                self.fail(outcome)

    def fail(self, outcome: Outcome) -> None:
        error = outcome.error
        assert error is not None
        log.error(
            "job failed: %s %s (%s): %s",
            outcome.claimed.class_name,
            outcome.claimed.job_id,
            type(error).__name__,
            error,
        )
        self.execute(
            failed_store.FAIL,
            {
                "id": outcome.claimed.id,
                "process_id": self.id,
                "exception_class": f"{type(error).__module__}.{type(error).__qualname__}",
                "message": str(error),
                "backtrace": outcome.backtrace,
                "hostname": self.hostname,
                "pid": self.pid,
            },
        )

    def reconcile(self) -> None:
        """After a lost connection, give back claimed rows we are not running."""
        self.reconnected = False
        running = list(self.in_flight) + self.to_finish
        rows = self.execute(
            claimed_store.RELEASE_ORPHANS,
            {
                "process_id": self.id,
                "running": running,
                "channel": notify_channel(self.database.schema),
            },
        )
        if rows and rows[0][0]:
            log.warning(
                "worker %s: released %s jobs claimed by a lost reply", self.name, rows[0][0]
            )

    def _finish_params(self) -> dict[str, Any]:
        return {"finished": self.to_finish, "process_id": self.id, "now": clock.now()}

    def _finish_only(self) -> None:
        self.execute(ready_store.FINISH_ONLY, self._finish_params())
        self.to_finish = []

    # -- claiming -----------------------------------------------------------------------------

    def paused(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._paused_at >= REFRESH_PAUSES:
            rows = self.execute(pauses_store.LIST)
            self._paused = frozenset(r[0] for r in rows)
            self._paused_at = now
        return self._paused

    def ready_queues(self) -> list[str]:
        now = time.monotonic()
        if now - self._queues_at >= REFRESH_QUEUES:
            self._queues = [r[0] for r in self.execute(ready_store.READY_QUEUES)]
            self._queues_at = now
        return self._queues

    def queue_order(self, paused: frozenset[str]) -> list[str]:
        """The concrete queues to claim from, in strict order, paused ones left out."""
        order: list[str] = []
        for pattern in self.patterns:
            if pattern.endswith("*"):
                prefix = pattern[:-1]
                names = [q for q in self.ready_queues() if q.startswith(prefix)]
            else:
                names = [pattern]
            order.extend(q for q in names if q not in paused and q not in order)
        return order

    def claim(self, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` jobs, finishing the completed ones in the same statement."""
        paused = self.paused()
        if self.patterns == ("*",):
            if not paused:
                return self._claim(ready_store.CLAIM_ALL, limit)
            queues = [q for q in self.ready_queues() if q not in paused]
            if not queues:
                if self.to_finish:
                    self._finish_only()
                return []
            return self._claim(ready_store.CLAIM_QUEUES_MERGED, limit, queues=queues)
        claimed: list[Claimed] = []
        for name in self.queue_order(paused):
            claimed += self._claim(ready_store.CLAIM_QUEUE, limit - len(claimed), queue=name)
            if len(claimed) >= limit:
                break
        if self.to_finish:
            self._finish_only()
        return claimed

    def _claim(self, template: str, limit: int, **params: Any) -> list[Claimed]:
        rows = self.execute(template, {**self._finish_params(), "limit": limit, **params})
        self.to_finish = []
        return [Claimed(*row) for row in rows]

    # -- stopping -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        if self.id is None:  # pruned: our jobs were recovered elsewhere
            return
        if self.exit_now:
            return  # SIGQUIT: the supervisor recovers our jobs
        deadline = time.monotonic() + self.config.shutdown_timeout
        while self.in_flight and time.monotonic() < deadline:
            self.wake.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self.wake.clear()
            self._collect()
        self._collect()
        if self.to_finish:
            self._finish_only()
        if self.in_flight:
            rows = self.execute(
                claimed_store.RELEASE,
                {
                    "process_id": self.id,
                    "job_ids": list(self.in_flight),
                    "channel": notify_channel(self.database.schema),
                },
            )
            log.warning("worker %s: released %s unfinished jobs to ready", self.name, rows[0][0])
        for _ in self._pool:
            self.inbox.put(None)
        self.loop.stop()
