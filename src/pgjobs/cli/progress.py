"""Progress of a long operator command on stderr, rewritten in place — only when stderr is a
terminal: a running count with its rate (:class:`Progress`: ``pgjobs failed retry --all``,
``pgjobs jobs discard``), or the step running and for how long (:class:`Ticker`:
``pgjobs migrate``).

Anywhere else (``--json``, a log file, CI) it writes nothing: the command prints its usual one
line when it ends.  Call the reporter with the running total after each batch (it is the
``progress`` callback of :meth:`pgjobs.FailedJobs.retry_all` and friends), then ``close()``.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

MIN_INTERVAL = 0.1  # seconds between redraws: a fast walk does not flood the terminal
MIN_RATE_AFTER = 0.5  # seconds before the rate is shown


class Progress:
    """``label: 12,000 jobs (3,400/s)`` on ``stream`` while it is a TTY; nothing otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._drawn = False

    def __call__(self, count: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._drawn and now - self._drawn_at < MIN_INTERVAL:
            return
        self._drawn_at = now
        elapsed = now - self.started
        # The rate once it means something (the first batch alone would say millions a second).
        rate = f" ({count / elapsed:,.0f}/s)" if elapsed >= MIN_RATE_AFTER else ""
        self.stream.write(f"\r\x1b[K{self.label}: {count:,} jobs{rate}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the line (the command prints its result next)."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


class Ticker:
    """``label (12s)`` rewritten in place every half second while a step runs — a long statement
    (``pgjobs migrate`` altering a big table, or waiting for a lock) shows it is alive — on
    ``stream`` while it is a TTY; nothing otherwise.  Call it with each step's label, and with
    ``""`` when done (or ``close()``)."""

    def __init__(self, prefix: str, stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.prefix = prefix
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self.interval = interval
        self._label = ""
        self._since = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, label: str) -> None:
        if not self.enabled:
            return
        if not label:
            self.close()
            return
        with self._lock:
            self._label, self._since = label, time.monotonic()
        self._draw()
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="pgjobs-ticker", daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            if self._stop.is_set() or not self._label:
                return
            elapsed = time.monotonic() - self._since
            self.stream.write(f"\r\x1b[K{self.prefix}: {self._label} ({elapsed:.0f}s)")
            self.stream.flush()

    def close(self) -> None:
        """Stop and erase the line (the command prints its result next)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self.enabled and self._label:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            self._label = ""

    def __enter__(self) -> Ticker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
