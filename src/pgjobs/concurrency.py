"""Moving blocked jobs to ready when slots free up, and the dispatcher's concurrency maintenance.

Who calls :func:`unblock`: whoever just gave slots back or blocked jobs — a worker after a job of
a limited class finished, failed, was discarded or retried later; the dispatcher after due
scheduled jobs of limited classes went to blocked; the supervisor after failing jobs of dead
processes; an operator's retry of failed limited jobs.  It always runs as statements *after*
the release (never inside it), so it sees every job blocked until then: a job blocked
concurrently holds the semaphore row's lock until it commits, and the release waits for it.

If the caller dies between its release and the unblock, nothing is lost: the blocked jobs'
``expires_at`` passes and :func:`maintain` unblocks their keys.  It also forgets semaphores not
taken for their ``duration`` (their holders died without giving the slots back), except those
whose jobs a live process is running.

Guarantees: a key never has more than its limit of jobs holding slots, except after a semaphore
expired while its holder was alive but not running (a job that sat ready longer than
``duration``): size ``duration`` above the time a job may wait in ready plus run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgjobs import clock, events
from pgjobs.store import blocked as blocked_store
from pgjobs.store import semaphores as semaphores_store

Run = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]
MAX_UNBLOCK_PER_KEY = 10_000  # one call never loops forever on a pathological key
EXPIRED_KEYS_PER_PASS = 1_000


@dataclass(frozen=True)
class Unblocked:
    readied: int = 0
    discarded: int = 0

    def __add__(self, other: Unblocked) -> Unblocked:
        return Unblocked(self.readied + other.readied, self.discarded + other.discarded)


def unblock(
    run: Run, keys: Iterable[str], *, channel: str, now: datetime | None = None
) -> Unblocked:
    """Move the blocked jobs of ``keys`` to ready while their semaphores have free slots."""
    total = Unblocked()
    for key in sorted({k for k in keys if k}):  # one order everywhere: no lock-order deadlock
        params = {"key": key, "channel": channel, "now": now or clock.now()}
        for _ in range(MAX_UNBLOCK_PER_KEY):
            picked, readied, discarded, _notified = run(blocked_store.UNBLOCK_NEXT, params)[0]
            if not picked or not (readied or discarded):
                break
            total += Unblocked(int(readied), int(discarded))
    if (total.readied or total.discarded) and "unblock" in events.active:
        events.emit("unblock", readied=total.readied, discarded=total.discarded)
    return total


def maintain(
    run: Run, *, channel: str, alive_threshold: float, now: datetime | None = None
) -> tuple[int, Unblocked]:
    """One pass of concurrency maintenance: (semaphores expired, jobs unblocked)."""
    moment = now or clock.now()
    expired = [
        str(r[0])
        for r in run(
            semaphores_store.EXPIRE,
            {"now": moment, "alive_since": moment - timedelta(seconds=alive_threshold)},
        )
    ]
    stale = [
        str(r[0])
        for r in run(blocked_store.EXPIRED_KEYS, {"now": moment, "limit": EXPIRED_KEYS_PER_PASS})
    ]
    unblocked = unblock(run, [*expired, *stale], channel=channel, now=moment)
    if (expired or unblocked.readied) and "concurrency_maintenance" in events.active:
        events.emit(
            "concurrency_maintenance",
            expired_semaphores=len(expired),
            readied=unblocked.readied,
            discarded=unblocked.discarded,
        )
    return len(expired), unblocked
