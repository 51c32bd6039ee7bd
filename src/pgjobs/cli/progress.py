"""Progress of a long operator command (``pgjobs failed retry --all``, ``pgjobs jobs discard``):
a running count with its rate, rewritten in place on stderr — only when stderr is a terminal.

Anywhere else (``--json``, a log file, CI) it writes nothing: the command prints its usual one
line when it ends.  Call the reporter with the running total after each batch (it is the
``progress`` callback of :meth:`pgjobs.FailedJobs.retry_all` and friends), then ``close()``.
"""

from __future__ import annotations

import sys
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
