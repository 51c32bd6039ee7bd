"""A worker's jobs claimed ahead of its threads (the ``prefetch`` worker key): the buffer, and the
bounds that keep a job in it from waiting long.

A worker that claims only as many jobs as it has idle threads pays a whole claim — a round trip,
planning and a commit — for every ``threads`` jobs: with no-op jobs ~0.9 ms for 10, ~2.8 ms for
200 (docs/performance.md).  So it also claims up to ``prefetch`` jobs more, which wait in its inbox
(the queue its threads take jobs from, in claim order) for a thread to be free.

What it guarantees:

- A buffered job is claimed: its row is in ``pgjobs_claimed_executions`` under the worker's
  process, so every way a worker's jobs are given back or recovered covers it.  It has not
  started, and it never starts twice: a job thread and the main loop both take jobs out of the
  inbox with ``get``, and each job comes out once — a job the main loop took back
  (:meth:`Buffer.withdraw`) is one no thread has, and ever will.
- The buffer holds only what the threads are expected to start within :data:`AHEAD` seconds:
  ``threads * AHEAD / mean`` jobs at most, ``mean`` being a moving mean of the durations of the
  jobs the worker ran; nothing before its first job ended.  A job that still waits
  :data:`GIVE_BACK_AFTER` seconds after its claim (the threads are held by jobs longer than the
  mean said) goes back to ready with the rest of the buffer, uncounted, for an idle worker to
  take; the worker claims nothing ahead again until one of its jobs ends.
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
#: Seconds a buffered job may wait for a thread before it goes back to ready.
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

    __slots__ = ("_queued", "held_up", "inbox", "mean", "plain_until", "size")

    def __init__(self, inbox: queue.SimpleQueue[Claimed | None], size: int) -> None:
        self.inbox = inbox
        self.size = size  # at most this many jobs wait for a thread (prefetch)
        self.mean: float | None = None  # moving mean of job durations (s); None: none ended yet
        self.held_up = False  # a job waited too long: nothing ahead until a job ends
        self.plain_until = float("-inf")  # monotonic time until which nothing is claimed ahead
        # Every job put in the inbox with the monotonic time of its claim, oldest first; those a
        # thread took are dropped lazily (the inbox is FIFO: they are the oldest).
        self._queued: deque[tuple[float, Claimed]] = deque()

    def room(self, threads: int, now: float) -> int:
        """How many jobs may wait for a thread, beyond those that start at once."""
        mean = self.mean
        if not self.size or mean is None or self.held_up or now < self.plain_until:
            return 0
        if mean <= 0.0:
            return self.size
        return min(self.size, int(threads * AHEAD / mean))

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

    def ended(self, mean: float | None) -> None:
        """Jobs ended (``mean``: the moving mean with their durations): threads are free again."""
        self.mean = mean
        self.held_up = False

    def waited(self, seconds: float) -> None:
        """A job waited ``seconds`` for a thread: the jobs running are longer than the mean."""
        self.mean = max(self.mean or 0.0, seconds)
        self.held_up = True

    def plain(self, now: float) -> None:
        """Claim for idle threads only for a while (jobs that must start at once are about)."""
        self.plain_until = now + PLAIN_FOR
