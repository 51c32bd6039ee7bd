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
whose jobs a live process is running.  Each pass walks *every* key with blocked jobs, in key
order, :data:`KEYS_PER_PAGE` keys per statement (a keyset cursor), so no key is out of reach
however many hold jobs blocked past their expiry; only keys with such a job and a free slot cost
an unblock statement.  A pass costs one short statement per page plus the unblocks it does.

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
from pgjobs.store import rates as rates_store
from pgjobs.store import semaphores as semaphores_store

Run = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]
MAX_UNBLOCK_PER_KEY = 10_000  # one call never loops forever on a pathological key
KEYS_PER_PAGE = 1_000  # keys the maintenance walk visits per statement (blocked.WALK_EXPIRED)
EXPIRED_KEYS_PER_PASS = 1_000  # keys a dispatcher that reconnected unblocks (blocked.KEYS)


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
    expired += [str(r[0]) for r in run(semaphores_store.FORGET_FREE, {"now": moment})]
    unblocked = unblock(run, expired, channel=channel, now=moment)
    # Every key, a page at a time; a concurrency key is never empty, so "" is before the first.
    run(rates_store.FORGET_IDLE, {"now": moment})  # rate-limit keys long unused
    params: dict[str, Any] = {"now": moment, "after": "", "limit": KEYS_PER_PAGE}
    while True:
        due, last, walked = run(blocked_store.WALK_EXPIRED, params)[0]
        unblocked += unblock(run, due or (), channel=channel, now=moment)
        if walked < KEYS_PER_PAGE:
            break
        params["after"] = last
    if (expired or unblocked.readied) and "concurrency_maintenance" in events.active:
        events.emit(
            "concurrency_maintenance",
            expired_semaphores=len(expired),
            readied=unblocked.readied,
            discarded=unblocked.discarded,
        )
    return len(expired), unblocked
