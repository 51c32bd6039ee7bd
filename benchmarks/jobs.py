"""The pgjobs job the benchmarks run: ``pgjobs start --app benchmarks.jobs``."""

from __future__ import annotations

import pgjobs
from benchmarks import probe


@pgjobs.job(queue="default")
def noop(i: int, sent_at: float | None = None) -> None:
    """Do nothing; in the latency scenario (``sent_at`` given) record the start time."""
    if sent_at is not None:
        probe.record(i)


@pgjobs.job(queue="default")
def sleepy(i: int, seconds: float, sent_at: float | None = None) -> None:
    """Record the start time (as ``noop``), then hold the thread for ``seconds``."""
    import time

    if sent_at is not None:
        probe.record(i)
    time.sleep(seconds)
