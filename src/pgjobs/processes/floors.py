"""Where a worker's next claim starts scanning the ready index: its "floor".

Claiming deletes rows at the head of the ready index, and their index entries stay until vacuum
can remove them — which it cannot while any transaction older than them is open (a long report,
a ``pg_dump``).  A claim that always starts at the head walks every such entry: on a busy queue
with a long transaction open, each claim gets slower than the last (measured: enqueue-to-start
p50 from 8 ms to 20 s over a 10-minute soak).  So each claim starts at ``(priority, job_id) >=``
its floor: the first row the previous claim found, below which that claim saw only rows that
were gone or being claimed by others.

Rows can still appear below a floor; each case lowers or drops it:

- a new job committed after the claim looked (ids are taken at insert, commits come in any
  order): its enqueue's NOTIFY names its queue, priority and id, and the listener lowers the
  floors to it — also when it arrives while a claim is in flight;
- a job made ready again with its old id (a retry, a release, a recovery, a dispatched or
  unblocked job, a resumed queue): those notifications name no id, and drop the floors;
- anything else (``listen_notify: false``, a claim rolled back by a lost connection): every
  floor is dropped every ``RESCAN_EVERY`` seconds, so a job is never left behind longer than that.
"""

from __future__ import annotations

import threading
import time

from pgjobs.enqueue.handle import MIN_PRIORITY

Key = tuple[int, int]  # (priority, job_id): the order of the claim index
NO_FLOOR: Key = (MIN_PRIORITY, 0)
_NOTHING: Key = (2**15, 2**63)  # above every key: nothing arrived yet
RESCAN_EVERY = 1.0  # seconds
EVERY_QUEUE = "*"  # the floor of claims from every queue


def parse(payload: str) -> tuple[str, Key | None]:
    """A notification's queue and, for a new job, its ``(priority, id)``."""
    queue, sep, rest = payload.partition("\t")
    if sep:
        priority, _, id_ = rest.partition("\t")
        try:
            return queue, (int(priority), int(id_))
        except ValueError:
            pass
    return payload, None


class Floors:
    """The floors of one worker's claims, by queue (``EVERY_QUEUE`` for ``*``); thread-safe: the
    listener thread lowers them while the main loop claims."""

    def __init__(self, rescan_every: float = RESCAN_EVERY) -> None:
        self._lock = threading.Lock()
        self._floors: dict[str, Key] = {}
        # Claims in flight, by queue: the lowest key notified since each began.
        self._lowest_since_claim: dict[str, Key] = {}
        self.rescan_every = rescan_every
        self._rescan_at = time.monotonic() + rescan_every

    def floor(self, queue: str) -> Key:
        """Where a claim from ``queue`` starts; also marks the claim as in flight."""
        with self._lock:
            now = time.monotonic()
            if now >= self._rescan_at:
                self._floors.clear()
                self._rescan_at = now + self.rescan_every
            self._lowest_since_claim[queue] = _NOTHING
            return self._floors.get(queue, NO_FLOOR)

    def claimed(self, queue: str, first: Key | None) -> None:
        """A claim from ``queue`` returned rows starting at ``first`` (None: no rows)."""
        with self._lock:
            arrived = self._lowest_since_claim.pop(queue, _NOTHING)
            if first is None:  # found nothing above the floor: keep it, lowered by arrivals
                if queue in self._floors:
                    self._floors[queue] = min(self._floors[queue], arrived)
                return
            self._floors[queue] = min(first, arrived)

    def notified(self, queue: str, key: Key | None) -> None:
        """A notification: a new job at ``key`` in ``queue``, or (no key) jobs of unknown ids."""
        with self._lock:
            if queue == "*" and key is None:
                self._floors.clear()
                self._lowest_since_claim = dict.fromkeys(self._lowest_since_claim, NO_FLOOR)
                return
            low = key or NO_FLOOR
            for name in (queue, EVERY_QUEUE):
                if name in self._floors:
                    self._floors[name] = min(self._floors[name], low)
                if name in self._lowest_since_claim:
                    self._lowest_since_claim[name] = min(self._lowest_since_claim[name], low)
