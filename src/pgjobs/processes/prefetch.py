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
  executing has its key released at claim) are never buffered (the worker's business: see
  :meth:`pgjobs.processes.worker.Worker._start_now`).
"""

from __future__ import annotations

import queue
from collections import deque

from pgjobs.processes.executor import Claimed

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
