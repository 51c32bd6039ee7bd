"""What a benchmark job does when it is timed: append ``<i> <start time>`` to a file.

The latency scenario sets ``BENCH_LATENCY_FILE`` in the workers' environment and passes each
job its enqueue timestamp; the job calls :func:`record` first thing, with ``time.time()`` on the
same machine's clock as the enqueuer's.  Lines are short and written with one ``write()`` on a
file opened for append, so several processes and threads can share the file.  The same helper
is used by the pgjobs, procrastinate and pgqueuer jobs, so the cost is the same for all three.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TextIO

_lock = threading.Lock()
_file: TextIO | None = None


def read(path: os.PathLike[str] | str) -> dict[int, float]:
    """The recorded start time of each job ``i`` in a probe file (the first record wins)."""
    seen: dict[int, float] = {}
    with open(path, encoding="ascii") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 2:
                seen.setdefault(int(parts[0]), float(parts[1]))
    return seen


def record(i: int) -> None:
    """Record that job ``i`` started now (a no-op when ``BENCH_LATENCY_FILE`` is unset)."""
    started = time.time()
    global _file
    with _lock:
        if _file is None:
            path = os.environ.get("BENCH_LATENCY_FILE")
            if not path:
                return
            _file = open(path, "a", buffering=1, encoding="ascii")  # noqa: SIM115
        _file.write(f"{i} {started!r}\n")
