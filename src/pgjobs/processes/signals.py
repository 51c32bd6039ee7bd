"""Signal handling that takes no lock: a handler writes one byte, a thread does the rest.

Python runs a signal handler in the main thread between two bytecodes — possibly while that
thread holds a lock: inside ``Event.wait()``, ``set()`` or ``clear()`` (an Event's condition lock
is not reentrant), inside ``logging``, inside another handler.  A handler that takes such a lock
(``Event.set()``, a log call, ``queue.put``) then waits for its own thread forever.  A terminal's
Ctrl-C makes that likely: every process of the group gets SIGINT, and each child gets the
supervisor's SIGTERM a moment later, often while its first handler is still inside
``Event.set()``.

Guarantees:

- The handler installed by :func:`install` does one ``os.write`` of the signal number to a
  non-blocking pipe (async-signal-safe, no Python lock), so a signal landing anywhere — in a
  locked section, in another handler — cannot deadlock the process.
- A daemon thread reads the pipe and calls the action once per signal, in arrival order, outside
  any handler: the action may log, set events and take locks.  Actions must be idempotent (a
  terminal sends SIGINT to the whole group and the supervisor then sends SIGTERM).
- A process forked from one that installed the handlers (``multiprocessing`` in a job) gets the
  previous handlers back, so a signal meant for it never reaches its parent's action.
- A signal is dropped only if 64 KiB of signals are already waiting in the pipe unread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from pgjobs import events

#: ``action(signum)``: what a signal does, called in the signal thread.
Action = Callable[[int], None]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)

_action: Action | None = None
_pipe: tuple[int, int] | None = None  # (read end, write end), created once per process
_owner = 0  # the pid that created the pipe: a forked copy must not write to it
_previous: dict[int, Any] = {}  # the handlers ours replaced, restored in a forked child


def install(action: Action, signals: Iterable[int] = STOP_SIGNALS) -> None:
    """Route ``signals`` to ``action(signum)``, called in a daemon thread (main thread only).

    A later call replaces the action, as ``signal.signal`` replaces a handler.
    """
    global _action, _pipe, _owner
    _action = action
    if _pipe is None or _owner != os.getpid():
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)  # a full pipe drops a signal rather than block
        _pipe, _owner = (read_end, write_end), os.getpid()
        threading.Thread(
            target=_deliver, args=(read_end,), name="pgjobs-signals", daemon=True
        ).start()
    for signum in signals:
        previous = signal.signal(signum, _handler)
        if previous is not _handler:
            _previous[signum] = previous


def _handler(signum: int, frame: FrameType | None) -> None:
    # Runs between two bytecodes of the main thread, which may hold any lock: so no lock, no
    # logging, no Event or queue here; os.write takes none (and is async-signal-safe).
    pipe = _pipe
    if pipe is None or os.getpid() != _owner:  # a forked copy that did not run the at-fork hook
        return
    with contextlib.suppress(OSError):  # full: plenty of signals are waiting to be handled
        os.write(pipe[1], bytes((signum,)))


def _deliver(read_end: int) -> None:
    while True:
        data = os.read(read_end, 64)
        if not data:
            return
        for signum in data:
            action = _action
            if action is None:
                continue
            try:
                action(signum)
            except Exception as exc:  # a bug: report it, keep handling signals
                events.thread_error(exc, f"handling signal {signal.Signals(signum).name}")


def _after_fork_in_child() -> None:
    """A forked child has no signal thread: give it back the handlers ours replaced."""
    global _action, _pipe
    if _pipe is None:
        return
    for fd in _pipe:
        os.close(fd)  # the parent's pipe: the child must neither read nor write it
    _pipe, _action = None, None
    for signum, previous in _previous.items():
        # None: the handler was set from C and cannot be restored.  ValueError: the forking
        # thread does not count as the child's main thread (CPython makes it so; be safe).
        with contextlib.suppress(ValueError):
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
    _previous.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
