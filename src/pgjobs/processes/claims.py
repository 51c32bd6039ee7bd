"""A worker's claims: which queues, in which order, how many jobs — and the finishing of its
completed jobs, done by the same statement when it can (a mixin of
:class:`pgjobs.processes.worker.Worker`).

Queue selection is Solid Queue's: a list of queues is strict order (nothing from a later queue
while an earlier one has ready jobs), priority orders within a queue, ``*`` alone means every queue
in global priority order, ``prefix*`` expands to the matching queues in alphabetical order;
weighted queues (a mapping of queue names to weights) are picked in proportion to their weights
(:meth:`Claims._claim_weighted`); paused queues are skipped (pauses are re-read at most every
second, and at once when a queue is resumed).  Jobs that were running when a process died run
alone (:meth:`Claims.isolate`).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from pgjobs import clock, events
from pgjobs.db.database import GAVE_UP, Database
from pgjobs.processes import floors
from pgjobs.processes.executor import Claimed
from pgjobs.store import claimed as claimed_store
from pgjobs.store import control as control_store
from pgjobs.store import finished as finished_store
from pgjobs.store import pauses as pauses_store
from pgjobs.store import ready as ready_store
from pgjobs.store.jobs import done_channel, notify_channel

REFRESH_PAUSES = 1.0  # seconds between re-reads of pgjobs_pauses
REFRESH_QUEUES = 1.0  # seconds between loose index scans for ``prefix*`` / ``*`` with pauses
_active = events.active


def _by_weight(queues: list[str], weights: dict[str, int]) -> list[str]:
    """``queues`` in a random order where heavier queues tend to come first (each next queue is
    drawn in proportion to its weight among those left)."""
    left, order = list(queues), []
    while left:
        pick = random.choices(left, [weights[q] for q in left])[0]
        order.append(pick)
        left.remove(pick)
    return order


def _ids(ids: list[int]) -> str:
    """Ids as a bigint[] literal: psycopg adapts a list element by element (~2 µs each)."""
    return "{" + ",".join(map(str, ids)) + "}"


class Claims:
    """The claiming and finishing half of a worker."""

    id: int | None
    name: str
    database: Database
    patterns: tuple[str, ...]
    weights: dict[str, int] | None  # weighted queues: picked in proportion, not in strict order
    floors: floors.Floors
    in_flight: dict[int, Claimed]
    to_finish: list[int]
    to_finish_keyed: list[int]
    _batch_of: dict[int, int]  # the batch of each job of a batch in to_finish_keyed
    to_finish_results: list[tuple[int, str]]
    _keyed_results: list[tuple[int, str]]
    _finished_keys: list[str]
    _paused: frozenset[str]
    _paused_at: float
    _queues: list[str]
    _queues_at: float
    _alone: int | None
    _draining: list[int]
    _pending_unique: list[int]
    _claim_all: str
    _claim_queue: str
    _claim_merged: str
    _finish_only_sql: str
    _finish_keyed_sql: str

    if TYPE_CHECKING:  # provided by the other parts of Worker

        def execute(
            self, template: str, params: dict[str, Any] | None = None
        ) -> list[tuple[Any, ...]]: ...  # Process.execute

        def _locked(self) -> None: ...  # Worker._locked

        def _unblock(self, keys: Any) -> None: ...  # Worker._unblock

        def _released(self, count: int, why: str) -> None: ...  # Worker._released

        def _fields(self, claimed: Claimed) -> dict[str, Any]: ...  # Recording._fields

    def _release_unique(self, ids: list[int]) -> None:
        ids = self._pending_unique + ids
        try:
            self.execute(finished_store.RELEASE_UNIQUE_AT_CLAIM, {"ids": ids})
            self._pending_unique = []
        except GAVE_UP:  # the job runs meanwhile; its key is released a pass later
            self._pending_unique = ids

    def _still_ready(self, ids: list[int]) -> bool:
        try:
            return bool(self.execute(ready_store.ANY_READY, {"ids": ids}))
        except GAVE_UP:
            return True

    def isolate(self, claimed: list[Claimed]) -> list[Claimed]:
        """Jobs that were running when a process died (``interruptions > 0``) are suspects: one
        of them may be what killed it.  A suspect runs alone — claimed by an idle worker, which
        gives back the rest of its batch and claims nothing until the suspect ends — so a job
        that kills its worker is failed after ``max_interruptions`` crashes of its own, and its
        neighbours are interrupted at most once.  A busy worker that claims a suspect gives it
        back and claims nothing while it still waits in ready (until an idle worker took it)."""
        if not any(c.interruptions for c in claimed):
            return claimed
        if self.in_flight:
            keep = [c for c in claimed if not c.interruptions]
            self._draining = [c.id for c in claimed if c.interruptions]
        else:
            suspect = next(c for c in claimed if c.interruptions)
            keep = [suspect]
            self._alone = suspect.id
            if "run_alone" in _active:
                events.emit(
                    "run_alone", **self._fields(suspect), interruptions=suspect.interruptions
                )
        back = [c for c in claimed if c not in keep]
        if back:
            rows = self.execute(
                claimed_store.RELEASE,
                {
                    "process_ids": [self.id],
                    "job_ids": [c.id for c in back],
                    "channel": notify_channel(self.database.schema),
                },
            )
            for c in back:  # back in ready with their old ids: below this worker's floors
                self.floors.notified(c.queue_name, None)
            self._released(int(rows[0][0]), "jobs claimed beside a job that runs alone")
        return keep

    def _finish_params(self) -> dict[str, Any]:
        return {"finished": _ids(self.to_finish), "process_id": self.id, "now": clock.now()}

    def _finish_only(self) -> None:
        try:
            self.execute(self._finish_only_sql, self._finish_params())
        except GAVE_UP:
            self._locked()  # the jobs stay claimed by us, finished with a later trip
            return
        self.to_finish = []

    def _finish_results(self) -> None:
        ids, results = zip(*self.to_finish_results, strict=True)
        params = {
            "finished": _ids(list(ids)),
            "results": list(results),
            "process_id": self.id,
            "now": clock.now(),
            "done_channel": done_channel(self.database.schema),
        }
        try:
            self.execute(control_store.FINISH_RESULTS, params)
        except GAVE_UP:
            self._locked()  # the jobs stay claimed by us, finished later
            return
        self.to_finish_results = []

    def _finish_keyed(self) -> None:
        params = {"finished": _ids(self.to_finish_keyed), "process_id": self.id, "now": clock.now()}
        try:
            if self._keyed_results:  # stored while we hold the jobs, then finished
                ids, results = zip(*self._keyed_results, strict=True)
                self.execute(
                    control_store.STORE_RESULTS,
                    {"ids": _ids(list(ids)), "results": list(results), "process_id": self.id},
                )
                self._keyed_results = []
            if not self._batch_of:
                self.execute(self._finish_keyed_sql, params)
            else:
                self._finish_by_batch(params)
        except GAVE_UP:
            self._locked()  # the jobs stay claimed by us, finished later
            return
        keys, self._finished_keys, self.to_finish_keyed = self._finished_keys, [], []
        self._unblock(keys)

    def _finish_by_batch(self, params: dict[str, Any]) -> None:
        """Jobs of batches: one statement per batch (first the jobs in none), in batch order.
        Each job's end locks its batch's row (a trigger counts it there), held until the commit:
        a statement ending jobs of two batches could lock them in the opposite order to another
        worker's and deadlock.  One batch per statement, each committed before the next, never
        waits for a second batch's row while holding one (a nested batch's parent is locked
        after it, always in that order)."""
        groups: dict[int, list[int]] = {}
        for id_ in self.to_finish_keyed:
            groups.setdefault(self._batch_of.get(id_, 0), []).append(id_)
        for batch in sorted(groups):
            ids = groups[batch]
            # A batch's jobs: counted once per statement (finished.FINISH_BATCH), not per row.
            statement = finished_store.FINISH_BATCH if batch else self._finish_keyed_sql
            self.execute(statement, {**params, "finished": _ids(ids)})
            done = set(ids)
            self.to_finish_keyed = [id_ for id_ in self.to_finish_keyed if id_ not in done]
            for id_ in ids:
                self._batch_of.pop(id_, None)

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
        if self.weights is not None:
            return self._claim_weighted(limit, paused)
        if self.patterns == ("*",):
            if not paused:
                return self._claim(self._claim_all, limit, floor=floors.EVERY_QUEUE)
            queues = [q for q in self.ready_queues() if q not in paused]
            if not queues:
                if self.to_finish:
                    self._finish_only()
                return []
            return self._claim(self._claim_merged, limit, queues=queues)
        claimed: list[Claimed] = []
        for name in self.queue_order(paused):
            claimed += self._claim(self._claim_queue, limit - len(claimed), queue=name, floor=name)
            if len(claimed) >= limit:
                break
        if self.to_finish:
            self._finish_only()
        return claimed

    def _claim_weighted(self, limit: int, paused: frozenset[str]) -> list[Claimed]:
        """Weighted queues (Sidekiq's weighted mode): each of the ``limit`` jobs is drawn from a
        queue picked at random in proportion to its weight, so while every queue has ready jobs
        each gets its share; a queue that had fewer than its draw gives what is left to the
        others, tried in an order itself drawn by weight.  One claim statement per queue."""
        weights = self.weights
        assert weights is not None
        queues = [q for q in weights if q not in paused]
        claimed: list[Claimed] = []
        if queues:
            draws = Counter(random.choices(queues, [weights[q] for q in queues], k=limit))
            short: set[str] = set()
            for name, count in draws.items():
                got = self._claim(self._claim_queue, count, queue=name, floor=name)
                claimed += got
                if len(got) < count:
                    short.add(name)
            for name in _by_weight([q for q in queues if q not in short], weights):
                if len(claimed) >= limit:
                    break
                claimed += self._claim(
                    self._claim_queue, limit - len(claimed), queue=name, floor=name
                )
        if self.to_finish:
            self._finish_only()
        return claimed

    def _claim(
        self, template: str, limit: int, floor: str | None = None, **params: Any
    ) -> list[Claimed]:
        if floor is not None:
            params["floor_priority"], params["floor_id"] = self.floors.floor(floor)
        try:
            rows = self.execute(template, {**self._finish_params(), "limit": limit, **params})
        except GAVE_UP:
            # Rolled back whole (to_finish is kept for the next trip).  The jobs earlier
            # statements of this pass claimed are returned all the same: they are ours.
            return []
        if floor is not None:  # rows come in claim order: the first is the new floor
            self.floors.claimed(floor, (rows[0][5], rows[0][0]) if rows else None)
        self.to_finish = []
        if rows and "claim" in _active:
            events.emit("claim", process_id=self.id, count=len(rows), queue=params.get("queue"))
        return [Claimed(*row) for row in rows]
