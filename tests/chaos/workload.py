"""The chaos run's jobs (``pgjobs start --app tests.chaos.workload``).

Every execution of ``perform`` writes a row to the ledger (:mod:`tests.chaos.ledger`) on its own
autocommit connection: when it started, and when it ended with which outcome ("ok", "raised",
"poison").  A run whose process died under it keeps ``ended_at`` NULL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pgjobs
from tests.chaos import ledger

LIMIT = 2  # runs of one Limited key at once
LIMIT_DURATION = 900  # longer than any run: a slot never expires under a live job


class ChaosJob(pgjobs.Job):
    """Runs ``body`` between two ledger writes."""

    def ledgered(self, kind: str, key: str | None, body: Callable[[], None]) -> None:
        with ledger.connect(os.environ[ledger.ENV]) as conn:
            run_id = ledger.start_run(conn, str(self.job_id), kind, key, self.executions)
            outcome = "raised"
            try:
                body()
                outcome = "ok"
            finally:
                ledger.end_run(conn, run_id, outcome)


class Fast(ChaosJob):
    queue_as = "fast"

    def perform(self, n: int) -> None:
        self.ledgered("fast", None, lambda: time.sleep(0.01))


class Slow(ChaosJob):
    def perform(self, seconds: float) -> None:
        self.ledgered("slow", None, lambda: time.sleep(seconds))


class Limited(ChaosJob):
    """At most LIMIT at once per store, across every host."""

    limits_concurrency = pgjobs.limit(
        to=LIMIT, key=lambda store, seconds: store, duration=LIMIT_DURATION
    )

    def perform(self, store: str, seconds: float) -> None:
        self.ledgered("limited", f"limit:{store}", lambda: time.sleep(seconds))


class Unique(ChaosJob):
    """One waiting or running per name (``until="executed"``, the default)."""

    unique = pgjobs.unique(key=lambda name, seconds: name)

    def perform(self, name: str, seconds: float) -> None:
        self.ledgered("unique", f"unique:{name}", lambda: time.sleep(seconds))


class FailsOnce(ChaosJob):
    """Raises on its first attempt; the retry succeeds."""

    retry_on = [pgjobs.retry_on(RuntimeError, wait=0.5, attempts=5, jitter=0)]

    def perform(self, seconds: float) -> None:
        def body() -> None:
            time.sleep(seconds)
            if self.executions == 1:
                raise RuntimeError("fails on its first attempt")

        self.ledgered("fails_once", None, body)


class PoisonPill(ChaosJob):
    """SIGKILLs its own worker (an OOM kill): must end failed with ProcessExitError."""

    queue_as = "fast"

    def perform(self) -> None:
        with ledger.connect(os.environ[ledger.ENV]) as conn:
            run_id = ledger.start_run(conn, str(self.job_id), "poison", None, self.executions)
            ledger.end_run(conn, run_id, "poison")
        os.kill(os.getpid(), signal.SIGKILL)
