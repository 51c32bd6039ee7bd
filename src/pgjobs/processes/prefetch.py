"""A worker's jobs claimed ahead of its threads (the ``prefetch`` worker key): the buffer, and the
bounds that keep a job in it from waiting long.

A worker that claims only as many jobs as it has idle threads pays a whole claim — a round trip,
planning and a commit — for every ``threads`` jobs: with no-op jobs ~0.9 ms for 10, ~2.8 ms for
200 (docs/performance.md).  So it also claims up to ``prefetch`` jobs more, which wait in its inbox
(the queue its threads take jobs from, in claim order) for a thread to be free.

What it guarantees:

- A buffered job is claimed: its row is in ``pgjobs_claimed_executions`` under the worker's
  process, so every way a worker's jobs are given back or recovered covers it (a crash counts
  its interruption as a running job's: recovery cannot tell them apart).  It has not
  started, and it never starts twice: a job thread and the main loop both take jobs out of the
  inbox with ``get``, and each job comes out once — a job the main loop took back
  (:meth:`Buffer.withdraw`) is one no thread has, and ever will.
- The buffer holds only what the threads are expected to start within :data:`AHEAD` seconds:
  ``threads * AHEAD / mean`` jobs at most, ``mean`` being a moving mean of the durations of the
  jobs the worker ran; nothing before its first job ended.  When jobs wait and no job has ended
  for :data:`STALL` seconds (or four times the mean gap between two ends, if longer) since the
  oldest was claimed — every thread is held by a job longer than the mean said — or when a job
  has waited :data:`GIVE_BACK_AFTER` seconds whatever happened, the whole buffer goes back to
  ready, uncounted, for an idle worker to take; the worker claims nothing ahead again until one
  of its jobs ends.
- Stopping takes the buffer back before anything else and gives it back to ready, uncounted; a
  cancel request for a buffered job cancels it without running it.  Jobs that must start as soon
  as they are claimed (a rate-limited job takes its start token at claim, a job unique until
  executing has its key released at claim) are never buffered (:meth:`ClaimingAhead._start_now`).

:class:`Buffer` is the inbox's bookkeeping; :class:`ClaimingAhead`, a mixin of
:class:`pgjobs.processes.worker.Worker`, what the worker does with it.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from typing import TYPE_CHECKING

from pgjobs.processes.executor import Claimed, Outcome

if TYPE_CHECKING:
    from pgjobs.processes.floors import Floors

#: Seconds: claim ahead no more jobs than the threads are expected to start in this time.
AHEAD = 0.05
#: Seconds jobs may wait while no job ends (every thread held) before they go back to ready.
STALL = 0.1
#: Seconds a buffered job may wait for a thread before it goes back to ready, whatever happens.
GIVE_BACK_AFTER = 0.5
#: Seconds without claiming ahead after a claim returned jobs that must start at once (a rate
#: limit's line, jobs unique until executing): meanwhile a worker claims for its idle threads only.
PLAIN_FOR = 1.0
#: The weight of each ended job in the moving mean of job durations.
WEIGHT = 0.05
INF = float("inf")


class Buffer:
    """The jobs a worker put in its inbox, some of which no thread has taken yet.

    Only the worker's main loop calls it; the job threads only ``get`` from the inbox.
    """

    __slots__ = (
        "_queued",
        "held_up",
        "inbox",
        "last_end",
        "mean",
        "plain_until",
        "size",
        "threads",
    )

    def __init__(self, inbox: queue.SimpleQueue[Claimed | None], size: int, threads: int) -> None:
        self.inbox = inbox
        self.size = size  # at most this many jobs wait for a thread (prefetch)
        self.threads = threads
        self.last_end = float("-inf")  # when a job last ended (monotonic: when it was collected)
        self.mean: float | None = None  # moving mean of job durations (s); None: none ended yet
        self.held_up = False  # a job waited too long: nothing ahead until a job ends
        self.plain_until = float("-inf")  # monotonic time until which nothing is claimed ahead
        # Every job put in the inbox with the monotonic time of its claim, oldest first; those a
        # thread took are dropped lazily (the inbox is FIFO: they are the oldest).
        self._queued: deque[tuple[float, Claimed]] = deque()

    def room(self, now: float) -> int:
        """How many jobs may wait for a thread, beyond those that start at once."""
        mean = self.mean
        if not self.size or mean is None or self.held_up or now < self.plain_until:
            return 0
        if mean <= 0.0:
            return self.size
        return min(self.size, int(self.threads * AHEAD / mean))

    def waiting(self) -> int:
        """Jobs in the inbox no thread has taken yet."""
        return self.inbox.qsize()

    def put(self, jobs: list[Claimed], now: float) -> None:
        append, put = self._queued.append, self.inbox.put
        for job in jobs:
            append((now, job))
            put(job)

    def oldest(self) -> float | None:
        """When the job waiting longest was claimed (monotonic), or ``None``: nothing waits."""
        queued, waiting = self._queued, self.inbox.qsize()
        while len(queued) > waiting:
            queued.popleft()
        return queued[0][0] if queued else None

    def due(self) -> float | None:
        """When the jobs waiting must go back to ready unless a job ends meanwhile (monotonic),
        or ``None``: nothing waits."""
        oldest = self.oldest()
        return None if oldest is None else self._due(oldest)

    def _due(self, oldest: float) -> float:
        gap = (self.mean or 0.0) / self.threads  # the mean time between two jobs' ends
        stalled = max(oldest, self.last_end) + max(STALL, 4 * gap)
        return min(oldest + GIVE_BACK_AFTER, stalled)

    def overdue(self, now: float) -> list[Claimed]:
        """Take the jobs waiting out of the inbox if they are due to go back to ready (see
        :meth:`due`; a job may have started or ended since): what the worker gives back."""
        entries = self.withdraw()
        if not entries:
            return []
        oldest = entries[0][0]
        if now < self._due(oldest):
            self.put_back(entries)
            return []
        # The threads are held by jobs longer than the mean said: nothing ahead until one ends.
        self.mean = max(self.mean or 0.0, now - oldest)
        self.held_up = True
        return [job for _, job in entries]

    def withdraw(self) -> list[tuple[float, Claimed]]:
        """Take every job no thread has taken yet out of the inbox: ``(claimed at, job)`` in
        claim order.  No thread can start them any more."""
        jobs: list[Claimed] = []
        while True:
            try:
                job = self.inbox.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                jobs.append(job)
        queued = self._queued
        times = {id(job): at for at, job in list(queued)[max(0, len(queued) - len(jobs)) :]}
        queued.clear()
        return [(times.get(id(job), 0.0), job) for job in jobs]

    def put_back(self, entries: list[tuple[float, Claimed]]) -> None:
        """Jobs taken out by :meth:`withdraw` that stay: back in the inbox, in the same order."""
        append, put = self._queued.append, self.inbox.put
        for at, job in entries:
            append((at, job))
            put(job)

    def ended(self, mean: float | None, now: float) -> None:
        """Jobs ended (``mean``: the moving mean with their durations): threads are free again."""
        self.mean = mean
        self.held_up = False
        self.last_end = now

    def plain(self, now: float) -> None:
        """Claim for idle threads only for a while (jobs that must start at once are about)."""
        self.plain_until = now + PLAIN_FOR


class ClaimingAhead:
    """The worker's side of the buffer (a mixin of :class:`pgjobs.processes.worker.Worker`): the
    jobs that wait for a thread go back to ready, are cancelled, or are never buffered."""

    buffer: Buffer
    in_flight: dict[int, Claimed]
    floors: Floors
    _unstarted: list[int]

    if TYPE_CHECKING:  # provided by the other parts of Worker

        def _record(self, outcome: Outcome) -> None: ...  # Worker._record

        def _give_back_unstarted(self, why: str = ...) -> None: ...  # Worker

    def _cancel_buffered(self, asked: set[int]) -> None:
        """Jobs asked to stop while they wait for a thread are cancelled without running."""
        entries = self.buffer.withdraw()
        self.buffer.put_back([(at, job) for at, job in entries if job.id not in asked])
        for _, job in entries:
            if job.id in asked:
                del self.in_flight[job.id]
                self._record(Outcome(job, None, "", 0.0, "cancel"))

    def _check_buffer(self) -> float:
        """Give the jobs waiting for a thread back to ready when they have waited too long
        (:meth:`Buffer.due`); returns when to look again (monotonic, or inf)."""
        due = self.buffer.due()
        if due is None:
            return INF
        now = time.monotonic()
        if now < due:
            return due
        jobs = self.buffer.overdue(now)
        if jobs:
            self._give_back(jobs, "jobs claimed ahead that waited for a thread")
        due = self.buffer.due()
        return INF if due is None else due

    def _give_back(self, jobs: list[Claimed], why: str) -> None:
        """Claimed jobs that never started go back to ready, not counted."""
        for job in jobs:
            self.in_flight.pop(job.id, None)
        for name in {job.queue_name for job in jobs}:
            self.floors.notified(name, None)  # back in ready with their old ids
        self._unstarted += [job.id for job in jobs]
        self._give_back_unstarted(why)

    def _start_now(self, claimed: list[Claimed], room: int, now: float) -> list[Claimed]:
        """Jobs that must start as soon as they are claimed are never buffered: a rate-limited
        job takes its start token now (a start later would let more starts into a window than
        its limit), a job unique until executing has its key released now.  The first ``room``
        of them go first in the batch, to the idle threads; the rest go back to ready, and for a
        while this worker claims for its idle threads only."""
        eager = [
            c
            for c in claimed
            if c.rate_key is not None or (c.unique_key is not None and c.unique_key[:2] == "x|")
        ]
        if not eager:
            return claimed
        self.buffer.plain(now)
        if len(eager) > room:
            self._give_back(eager[room:], "jobs that must start at once, claimed ahead")
        first = eager[:room]
        eager_ids = {c.id for c in eager}
        return first + [c for c in claimed if c.id not in eager_ids]
