"""The RQ job the benchmarks run, in a module of its own that imports next to nothing.

RQ's default worker forks a work horse per job, and the horse imports the job's module unless
the worker already has: ``rq worker --config benchmarks.rq_jobs`` makes the worker import it
(as its settings module; it defines no settings) before it forks — what RQ's docs advise for
modules every job needs.  Importing :mod:`benchmarks.systems.rq_` instead would cost each horse
~90 ms (psycopg, rq, redis...).
"""

from __future__ import annotations

from benchmarks import probe


def noop(i: int, sent_at: float | None = None) -> None:
    """Do nothing; in the latency scenario (``sent_at`` given) record the start time."""
    if sent_at is not None:
        probe.record(i)
