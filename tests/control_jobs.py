"""Jobs for the job-control tests (importable by worker subprocesses as ``tests.control_jobs``).

They append lines to ``$PGJOBS_TEST_LOG`` (one short O_APPEND write each): what ran, in order.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import pgjobs
from tests.sample_jobs import _log_line


class Compute(pgjobs.Job):
    def perform(self, n: int) -> dict[str, Any]:
        return {"n": n, "square": n * n, "on": datetime.date(2026, 12, 6)}


class ComputeAsync(pgjobs.Job):
    async def perform(self, n: int) -> list[int]:
        await asyncio.sleep(0)
        return [n, n + 1]


class Explodes(pgjobs.Job):
    def perform(self) -> None:
        raise ValueError("no such report")


class Nothing(pgjobs.Job):
    def perform(self) -> None:
        return None


class Huge(pgjobs.Job):
    max_result_bytes = 100

    def perform(self) -> str:
        return "x" * 1000


class Unkept(pgjobs.Job):
    store_result = False

    def perform(self) -> int:
        return 42


class Cooperative(pgjobs.Job):
    """Runs until cancelled, checking between short sleeps; after_cancel logs."""

    def perform(self, tag: str) -> None:
        _log_line(f"{tag} start")
        for _ in range(600):
            self.check_cancelled()
            time.sleep(0.02)
        _log_line(f"{tag} end")

    def after_cancel(self) -> None:
        _log_line(f"{self.args[0]} after_cancel")


class CooperativeAsync(pgjobs.Job):
    async def perform(self, tag: str) -> None:
        _log_line(f"{tag} start")
        await asyncio.sleep(60)
        _log_line(f"{tag} end")

    async def after_cancel(self) -> None:
        _log_line(f"{self.args[0]} after_cancel")


class Stubborn(pgjobs.Job):
    """Ignores cancel requests."""

    def perform(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done anyway"


class Reports(pgjobs.Job):
    """Reports progress, then waits for ``seconds`` before its last report."""

    def perform(self, total: int, seconds: float) -> None:
        for done in range(total):
            self.progress(done, total, f"item {done}")
        time.sleep(seconds)
        self.progress(total, total, "all done")


class Snoozes(pgjobs.Job):
    """Snoozes ``times`` times (its runs counted in the log), then finishes."""

    def perform(self, times: int, log: str) -> str:
        with open(log) as fh:
            runs = sum(1 for line in fh if line.startswith(f"{self.job_id} run"))
        _log_line(f"{self.job_id} run {self.executions}")
        if runs < times:
            self.snooze(0.2)
        return f"ran {runs + 1} times"


class Stepped(pgjobs.Job):
    """Step "prepare" (logs once per run of it), then "items" over 0..count-1 with a cursor,
    ``pause`` seconds per item, then "finish"."""

    def perform(self, count: int, pause: float) -> str:
        self.step("prepare", self.prepare)

        @self.step("items")
        def items(step: pgjobs.Step) -> None:
            start = 0 if step.cursor is None else step.cursor + 1
            for item in range(start, count):
                _log_line(f"{self.job_id} item {item}")
                time.sleep(pause)
                step.advance(item)

        self.step("finish", lambda step: _log_line(f"{self.job_id} finish"))
        return "stepped"

    def prepare(self, step: pgjobs.Step) -> None:
        _log_line(f"{self.job_id} prepare")


class SteppedAsync(pgjobs.Job):
    async def perform(self, count: int) -> int:
        async def add(step: pgjobs.Step) -> int:
            total = 0 if step.cursor is None else step.cursor
            for item in range(count):
                total += item
                step.advance(total)
                await asyncio.sleep(0)
            return total

        return int(await self.step("add", add))


class Records(pgjobs.Job):
    """Logs that it started (the cancel/claim race)."""

    def perform(self, tag: str, pause: float = 0.0) -> None:
        _log_line(f"{tag} started")
        time.sleep(pause)
