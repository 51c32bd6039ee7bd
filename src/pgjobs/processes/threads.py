"""A worker's job threads, and the deadlines of the jobs they run (a mixin of
:class:`pgjobs.processes.worker.Worker`).

Each thread takes claimed jobs from the worker's inbox, performs them
(:func:`pgjobs.processes.executor.perform`) and puts their outcomes in the outbox for the main
loop to record; a bug in pgjobs that escapes a job is reported and the thread goes on.

Timeouts (``timeout`` on a job, else the ``job_timeout`` setting): the main loop watches the
deadlines of running jobs — free while no running job has one.  Past its deadline an async job is
cancelled by its own ``asyncio.timeout``; a sync job's thread gets :class:`TimeoutInterrupt`
raised in it (``PyThreadState_SetAsyncExc``: it lands at the thread's next Python bytecode, so it
cannot cut a blocking C call short).  Either way the job then fails with ``JobTimeout`` (its rules
may retry it).  A job still holding its thread ``timeout_grace`` seconds after the deadline is
failed by the main loop itself; that thread is abandoned (a daemon: whatever it eventually does is
ignored, and it exits) and a new thread takes its place, so capacity is restored.
"""

from __future__ import annotations

import ctypes
import functools
import queue
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pgjobs import events
from pgjobs.observability import outcomes
from pgjobs.processes.executor import (
    Claimed,
    EventLoopThread,
    Outcome,
    TimeoutInterrupt,
    perform,
    timed_out,
)
from pgjobs.processes.jobcontrol import Control

TIMEOUT_GRACE = 2.0  # seconds a timed-out job's thread has to give its slot back
INF = float("inf")
_active = events.active


class _Slot:
    """One job thread and the job it runs; ``lock`` orders the main loop's interruption of the
    thread with the thread's own release of the job."""

    __slots__ = ("abandoned", "claimed", "ident", "injected", "lock", "thread", "watched")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claimed: Claimed | None = None
        self.watched = False  # the running job has a deadline (main may interrupt it)
        self.injected = False  # a TimeoutInterrupt is (or was) pending in the thread
        self.abandoned = False
        self.ident: int | None = None
        self.thread: threading.Thread | None = None


@dataclass(slots=True)
class _Deadline:
    claimed: Claimed
    slot: _Slot
    at: float  # time.monotonic() deadline
    timeout: float
    is_async: bool
    passed: bool = False  # the deadline passed and was acted upon; next step: abandon


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> int:
    """Raise ``exc`` in thread ``ident`` at its next bytecode (``None``: cancel a pending one)."""
    obj = ctypes.py_object(exc) if exc is not None else None
    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), obj))


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.total_seconds() if isinstance(value, timedelta) else value)


class JobThreads:
    """The thread pool and deadline half of a worker."""

    inbox: queue.SimpleQueue[Claimed | None]
    outbox: queue.SimpleQueue[Outcome]
    in_flight: dict[int, Claimed]
    loop: EventLoopThread
    control: Control
    default_timeout: float | None
    timeout_grace: float
    stopping: threading.Event
    wake: threading.Event
    _slots: list[_Slot]
    _started_threads: int
    _timed: dict[int, _Deadline]
    _wake_at: float
    safe_until: float  # Process.safe_until
    _beat_now: threading.Event  # Process._beat_now

    if TYPE_CHECKING:  # provided by the other parts of Worker

        def _fields(self, claimed: Claimed) -> dict[str, Any]: ...  # Recording._fields

        def _record(self, outcome: Outcome) -> None: ...  # Worker._record

    # -- the thread pool ----------------------------------------------------------------------

    def _start_thread(self) -> _Slot:
        slot = _Slot()
        name = f"pgjobs-worker-{self._started_threads}"
        self._started_threads += 1
        slot.thread = threading.Thread(target=self._work, args=(slot,), name=name, daemon=True)
        slot.thread.start()
        self._slots.append(slot)
        return slot

    def _work(self, slot: _Slot) -> None:
        slot.ident = threading.get_ident()
        watch = functools.partial(self._watch, slot)
        while True:
            try:
                self._run_jobs(slot, watch)
                return
            except TimeoutInterrupt:
                # The interruption landed outside the executor: the job is past its deadline.
                if not self._interrupted_between(slot):
                    return
            except BaseException as exc:  # a bug in pgjobs: report it, keep the thread
                events.thread_error(exc, threading.current_thread().name)
                with slot.lock:
                    claimed, slot.claimed, slot.watched = slot.claimed, None, False
                if claimed is not None:
                    self._deliver(Outcome(claimed, exc, traceback.format_exc(), 0.0, "fail"))

    def _run_jobs(self, slot: _Slot, watch: functools.partial[None]) -> None:
        inbox, loop, default_timeout = self.inbox, self.loop, self.default_timeout
        control = self.control
        while True:
            claimed = inbox.get()
            if claimed is None:
                return
            if time.monotonic() >= self.safe_until:
                # No beat has found our row for too long: a pruner may have judged us dead and
                # another worker run this job already.  It does not start: the main loop gives it
                # back, uncounted, if it is still ours, and the heartbeat beats now.
                self._beat_now.set()
                self.outbox.put(Outcome(claimed, None, "", 0.0, "unstarted"))
                self.wake.set()
                continue
            slot.claimed = claimed
            outcome = perform(claimed, loop, watch, default_timeout, control)
            if slot.watched:  # the main loop may interrupt this job: release it in step with it
                with slot.lock:
                    if slot.injected:  # cancel an interruption still pending
                        _set_async_exc(threading.get_ident(), None)
                        slot.injected = False
                    slot.claimed, slot.watched = None, False
                    if slot.abandoned:
                        return  # the main loop failed the job and replaced this thread
            else:
                slot.claimed = None
            self.outbox.put(outcome)
            self.wake.set()

    def _interrupted_between(self, slot: _Slot) -> bool:
        """A stray TimeoutInterrupt was caught; report the job held, if any.  False: exit."""
        with slot.lock:
            claimed, slot.claimed = slot.claimed, None
            slot.watched = slot.injected = False
            if slot.abandoned:
                return False
        if claimed is not None:
            deadline = self._timed.get(claimed.id)
            error = timed_out(claimed, deadline.timeout if deadline else None)
            self._deliver(Outcome(claimed, error, "", 0.0, "fail"))
        return True

    def _deliver(self, outcome: Outcome) -> None:
        self.outbox.put(outcome)
        self.wake.set()

    # -- deadlines ----------------------------------------------------------------------------

    def _watch(self, slot: _Slot, claimed: Claimed, timeout: float, is_async: bool) -> None:
        """Called in the job's thread when a job with a timeout starts."""
        at = time.monotonic() + timeout
        slot.watched = True
        self._timed[claimed.id] = _Deadline(claimed, slot, at, timeout, is_async)
        if at < self._wake_at:
            self.wake.set()  # the main loop sleeps past this deadline: have it re-plan

    def check_deadlines(self, *, replace: bool = True) -> float:
        """Act on passed deadlines; returns when the next one is due (monotonic, or inf)."""
        now = time.monotonic()
        upcoming = INF
        for deadline in list(self._timed.values()):
            claimed = deadline.claimed
            if self.in_flight.get(claimed.id) is not claimed:
                self._timed.pop(claimed.id, None)  # over (collected, released)
                continue
            if not deadline.passed:
                if now < deadline.at:
                    upcoming = min(upcoming, deadline.at)
                    continue
                deadline.passed = True
                self._interrupt(deadline)
            if now < deadline.at + self.timeout_grace:
                upcoming = min(upcoming, deadline.at + self.timeout_grace)
            else:
                self._abandon(deadline, replace=replace)
        return upcoming

    def _interrupt(self, deadline: _Deadline) -> None:
        slot = deadline.slot
        if not deadline.is_async:  # an async job is cancelled on its loop by asyncio.timeout
            with slot.lock:
                if slot.claimed is deadline.claimed and not slot.abandoned and slot.ident:
                    _set_async_exc(slot.ident, TimeoutInterrupt)
                    slot.injected = True
        if "timeout" in _active:
            events.emit(
                "timeout",
                **self._fields(deadline.claimed),
                timeout=deadline.timeout,
                abandoned=False,
            )

    def _abandon(self, deadline: _Deadline, *, replace: bool) -> None:
        """The job kept its thread past the grace: fail it here, and replace the thread."""
        slot, claimed = deadline.slot, deadline.claimed
        with slot.lock:
            holds = slot.claimed is claimed
            if holds:
                slot.abandoned = True
        stack = ""
        if holds:
            if slot in self._slots:
                self._slots.remove(slot)
            if replace and not self.stopping.is_set():
                self._start_thread()
            frame = sys._current_frames().get(slot.ident or 0)
            if frame is not None:
                stack = "the job's thread was abandoned here:\n" + "".join(
                    traceback.format_stack(frame)
                )
        self.in_flight.pop(claimed.id, None)
        self._timed.pop(claimed.id, None)
        self.control.cancelled.discard(claimed.id)
        if "timeout" in _active:
            events.emit(
                "timeout", **self._fields(claimed), timeout=deadline.timeout, abandoned=holds
            )
        error = timed_out(claimed, deadline.timeout)
        outcome = Outcome(claimed, error, stack, deadline.timeout + self.timeout_grace, "fail")
        if outcomes.observe is not None:
            outcomes.observe([outcome])
        self._record(outcome)
