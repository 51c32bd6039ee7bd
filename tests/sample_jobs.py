"""Jobs used by the tests (importable by worker subprocesses as ``tests.sample_jobs``)."""

from __future__ import annotations

import pgjobs
from pgjobs import hooks
from pgjobs.jobs import callbacks

EVENTS: list[str] = []


class SendWelcomeEmail(pgjobs.Job):
    queue_as = "mailers"

    def perform(self, user_id: int) -> int:
        EVENTS.append(f"perform {user_id}")
        return user_id


class Aliased(pgjobs.Job):
    job_name = "welcome-email-v2"

    def perform(self) -> str:
        return "aliased"


class DynamicQueue(pgjobs.Job):
    def queue_as(self) -> str:  # type: ignore[override]
        return "premium" if self.args and self.args[0] == "vip" else "default"

    def perform(self, kind: str) -> None:
        pass


class Base(pgjobs.Job):
    @callbacks.before_perform
    def base_before(self) -> None:
        EVENTS.append("base before")

    @callbacks.around_perform
    def base_around(self, proceed: object) -> None:
        EVENTS.append("base around in")
        proceed()  # type: ignore[operator]
        EVENTS.append("base around out")

    @callbacks.after_perform
    def base_after(self) -> None:
        EVENTS.append("base after")

    @callbacks.before_enqueue
    def base_before_enqueue(self) -> None:
        EVENTS.append(f"before enqueue {self.queue_name}")

    @callbacks.after_enqueue
    def base_after_enqueue(self) -> None:
        EVENTS.append("after enqueue")


class Child(Base):
    @callbacks.before_perform
    def child_before(self) -> None:
        EVENTS.append("child before")

    @callbacks.after_perform
    def child_after(self) -> None:
        EVENTS.append("child after")

    def perform(self, value: int) -> int:
        EVENTS.append(f"perform {value} attempt {self.executions}")
        return value * 2


class AsyncBase(pgjobs.Job):
    @callbacks.before_perform
    def base_before(self) -> None:
        EVENTS.append("base before")

    @callbacks.after_perform
    async def base_after(self) -> None:
        EVENTS.append("base after")


class AsyncChild(AsyncBase):
    @callbacks.around_perform
    async def async_around(self, proceed: object) -> None:
        EVENTS.append("async around in")
        await proceed()  # type: ignore[operator]
        EVENTS.append("async around out")

    async def perform(self, value: int) -> int:
        EVENTS.append(f"async perform {value}")
        return value + 1


@pgjobs.job(queue="indexing", priority=5)
def rebuild_index(name: str) -> str:
    EVENTS.append(f"rebuild {name}")
    return name


@pgjobs.job
async def async_function_job(value: int) -> int:
    return value * 3


def noop(*args: object, **kwargs: object) -> None:
    """Does nothing (benchmarks and throughput tests)."""


@pgjobs.job(queue="default")
def noop_job(*args: object, **kwargs: object) -> None:
    pass


def _log_line(line: str) -> None:
    import os

    path = os.environ.get("PGJOBS_TEST_LOG")
    if path:
        with open(path, "a") as fh:  # O_APPEND: one short write per line is atomic
            fh.write(line + "\n")


class Record(pgjobs.Job):
    """Appends "<job_id> <executions> <tag>" to $PGJOBS_TEST_LOG."""

    def perform(self, tag: str = "") -> None:
        _log_line(f"{self.job_id} {self.executions} {tag}")


class Sleepy(pgjobs.Job):
    def perform(self, seconds: float) -> None:
        import time

        _log_line(f"{self.job_id} start")
        time.sleep(seconds)
        _log_line(f"{self.job_id} done")


class KillsItsWorker(pgjobs.Job):
    def perform(self) -> None:
        import os
        import signal

        _log_line(f"{self.job_id} {self.executions} kill")
        os.kill(os.getpid(), signal.SIGKILL)


class Boom(pgjobs.Job):
    def perform(self, message: str = "boom") -> None:
        raise RuntimeError(message)


class Stamp(pgjobs.Job):
    """Logs "<job_id> <unix time at perform>" (latency tests)."""

    def perform(self) -> None:
        import time

        _log_line(f"{self.job_id} {time.time()}")


# -- recurring tasks (tests/test_recurring.py) -----------------------------------------------------


class DailyDigestJob(pgjobs.Job):
    """Registered under a Solid Queue style name, as recurring.yml files refer to jobs."""

    job_name = "DailyDigestJob"

    def perform(self, kind: str = "daily") -> str:
        EVENTS.append(f"digest {kind}")
        return kind


class CleanupJob(pgjobs.Job):
    job_name = "CleanupJob"
    queue_as = "maintenance"

    def perform(self, older_than_days: int = 90) -> int:
        EVENTS.append(f"cleanup {older_than_days}")
        return older_than_days


def purge_expired_tokens(batch_size: int = 100, *, dry_run: bool = False) -> str:
    """A plain function run by a recurring task's ``command``."""
    EVENTS.append(f"purge {batch_size} dry_run={dry_run}")
    return f"purged {batch_size}"


class RefusesEnqueue(pgjobs.Job):
    """Its before_enqueue callback fails while ``REFUSE`` holds True (atomicity tests)."""

    REFUSE = [True]

    @callbacks.before_enqueue
    def refuse(self) -> None:
        if self.REFUSE[0]:
            raise RuntimeError("enqueue refused")

    def perform(self) -> None:
        pass


@hooks.on_worker_start
def _worker_started(process: object) -> None:
    _log_line(f"hook worker_start {getattr(process, 'name', '?')}")


@hooks.on_worker_stop
def _worker_stopped(process: object) -> None:
    _log_line(f"hook worker_stop {getattr(process, 'name', '?')}")


@hooks.on_start
def _supervisor_started(process: object) -> None:
    _log_line("hook supervisor_start")


@hooks.on_stop
def _supervisor_stopped(process: object) -> None:
    _log_line("hook supervisor_stop")


# -- error rules and timeouts (tests/test_rules.py, tests/test_timeouts.py) ---------------------


class FlakyRecord(pgjobs.Job):
    """Fails with RuntimeError until its ``succeed_on``-th execution; logs every attempt."""

    retry_on = [pgjobs.retry_on(RuntimeError, wait=0.2, attempts=3, jitter=0)]

    def perform(self, succeed_on: int = 3) -> None:
        _log_line(f"{self.job_id} {self.executions} flaky")
        if self.executions < succeed_on:
            raise RuntimeError(f"attempt {self.executions} failed")


class BusyTimeout(pgjobs.Job):
    """Runs Python bytecode until interrupted by its timeout."""

    timeout = 1.0

    def perform(self) -> None:
        import time

        _log_line(f"{self.job_id} start")
        while True:
            time.sleep(0.01)


class StuckTimeout(pgjobs.Job):
    """Blocks in one long C call: its thread cannot be interrupted and is abandoned."""

    timeout = 1.0

    def perform(self, seconds: float = 30.0) -> None:
        import time

        _log_line(f"{self.job_id} start")
        time.sleep(seconds)
        _log_line(f"{self.job_id} woke up")


# -- concurrency limits and unique jobs --------------------------------------------------------


def _span(kind: str, key: str, seconds: float) -> None:
    """Log "<kind> <key> start <t>" / "... end <t>" around a sleep (wall clock, one machine)."""
    import time

    _log_line(f"span {kind} {key} start {time.time():.6f}")
    time.sleep(seconds)
    _log_line(f"span {kind} {key} end {time.time():.6f}")


class LimitedPerStore(pgjobs.Job):
    """At most 2 at once per store, across every worker."""

    limits_concurrency = pgjobs.limit(to=2, key=lambda store, seconds=0.0: store, duration=60)

    def perform(self, store: str, seconds: float = 0.0) -> None:
        _span("limited", store, seconds)


class OneAtATime(pgjobs.Job):
    """One at a time; a crashed holder's slot comes back after 2 seconds."""

    limits_concurrency = pgjobs.limit(to=1, duration=2)

    def perform(self, seconds: float = 0.0) -> None:
        _span("one", "all", seconds)


class DiscardWhenBusy(pgjobs.Job):
    limits_concurrency = pgjobs.limit(to=1, key=lambda name: name, on_conflict="discard")

    def perform(self, name: str) -> None:
        _log_line(f"discard-when-busy {name}")


class FailsLimited(pgjobs.Job):
    limits_concurrency = pgjobs.limit(to=1, key=lambda name: name)

    def perform(self, name: str) -> None:
        raise RuntimeError(f"boom {name}")


class RebuildIndex(pgjobs.Job):
    unique = pgjobs.unique(key=lambda index: index)

    def perform(self, index: str) -> None:
        _log_line(f"rebuild {index}")


class RebuildIndexUntilExecuting(pgjobs.Job):
    unique = pgjobs.unique(key=lambda index: index, until="executing")

    def perform(self, index: str) -> None:
        _log_line(f"rebuild-executing {index}")


class StrictUnique(pgjobs.Job):
    unique = pgjobs.unique(key=lambda name: name, on_conflict="raise")

    def perform(self, name: str) -> None:
        pass


class Debounced(pgjobs.Job):
    unique = pgjobs.unique(key=lambda name, version: name, on_conflict="replace")

    def perform(self, name: str, version: int) -> None:
        _log_line(f"debounced {name} {version}")


class Hourly(pgjobs.Job):
    unique = pgjobs.unique(key=lambda name: name, period=3600)

    def perform(self, name: str) -> None:
        pass


class UniqueAndLimited(pgjobs.Job):
    unique = pgjobs.unique(key=lambda name: name)
    limits_concurrency = pgjobs.limit(to=1, group="shared")

    def perform(self, name: str) -> None:
        pass


# -- the dashboard's browser tests and screenshots (tests/test_browser.py) ---------------------


class PaymentDeclinedError(Exception):
    """What the payment gateway of the screenshots' shop answers for some orders."""


def _authorize_card(order_id: int, amount_cents: int) -> None:
    if order_id % 9 == 0:
        raise PaymentDeclinedError(
            f"card declined for order {order_id} ({amount_cents / 100:.2f} EUR): insufficient funds"
        )


class FailsFirstTime(pgjobs.Job):
    """Raises on its first execution and succeeds when retried (``executions`` is the number of
    the current attempt, 1 for the first); logs "<job_id> <executions> fails-first-time"."""

    def perform(self, order_id: int) -> None:
        _log_line(f"{self.job_id} {self.executions} fails-first-time")
        if self.executions == 1:
            _authorize_card(order_id * 9, 4200)


class ChargeCard(pgjobs.Job):
    """Declined (PaymentDeclinedError) for every ninth order."""

    job_name = "ChargeCard"
    queue_as = "payments"

    def perform(self, order_id: int, amount_cents: int) -> None:
        _authorize_card(order_id, amount_cents)


class DeliverWebhook(pgjobs.Job):
    """Fails (ConnectionRefusedError) for endpoints on the legacy host."""

    job_name = "DeliverWebhook"
    queue_as = "webhooks"

    def perform(self, endpoint: str, event: str) -> None:
        if "legacy" in endpoint:
            raise ConnectionRefusedError(f"POST {endpoint} ({event}): connection refused")


class SyncInventory(pgjobs.Job):
    """Times out (TimeoutError) for one warehouse."""

    job_name = "SyncInventory"

    def perform(self, warehouse: str, skus: int = 100) -> None:
        if warehouse == "eu-west-2":
            raise TimeoutError(f"warehouse {warehouse}: stock API did not answer within 5.0 s")


class SendReceiptEmail(pgjobs.Job):
    job_name = "SendReceiptEmail"
    queue_as = "mailers"

    def perform(self, order_id: int, email: str) -> None:
        pass


class BuildSalesReport(pgjobs.Job):
    job_name = "BuildSalesReport"
    queue_as = "reports"

    def perform(self, day: str, region: str = "all") -> None:
        pass


class ReindexProduct(pgjobs.Job):
    job_name = "ReindexProduct"
    queue_as = "search"
    priority = 10

    def perform(self, product_id: int) -> None:
        pass


class ImportCatalog(pgjobs.Job):
    """At most two imports at once per supplier; sleeps ``seconds``."""

    job_name = "ImportCatalog"
    queue_as = "imports"
    limits_concurrency = pgjobs.limit(
        to=2, key=lambda supplier, seconds=0.0: supplier, duration=600
    )

    def perform(self, supplier: str, seconds: float = 0.0) -> None:
        import time

        time.sleep(seconds)


class LogsThroughTheApp(pgjobs.Job):
    """Logs through the application's own logger ``tests.app`` (the job's identity is added)."""

    queue_as = "reports"

    def perform(self, message: str) -> None:
        import logging

        logging.getLogger("tests.app").info("app says %s", message)
        _log_line(f"{self.job_id} {self.executions} logged")


class AsyncLogsThroughTheApp(pgjobs.Job):
    """The async twin of :class:`LogsThroughTheApp`, run on the worker's event loop."""

    queue_as = "reports"

    async def perform(self, message: str) -> None:
        import logging

        logging.getLogger("tests.app").info("async app says %s", message)
        _log_line(f"{self.job_id} {self.executions} logged")


class FansOut(pgjobs.Job):
    """Enqueues ``count`` :class:`Record` jobs from inside a job (counted where it runs)."""

    def perform(self, count: int) -> None:
        for i in range(count):
            Record.perform_later(f"fan-{i}")


class DiscardsBadInput(pgjobs.Job):
    """Discarded: ValueError is in its ``discard_on``."""

    discard_on = [ValueError]

    def perform(self) -> None:
        raise ValueError("bad input")


# -- flow control: ordered keys and rate limits ------------------------------------------------


class OrderedPerAccount(pgjobs.Job):
    """One at a time per account, in enqueue order; logs "ordered <account> <seq> start|end <t>"."""

    ordered = pgjobs.ordered(key=lambda account, seq, seconds=0.0: account)

    def perform(self, account: str, seq: int, seconds: float = 0.0) -> None:
        import time

        _log_line(f"ordered {account} {seq} start {time.time():.6f}")
        time.sleep(seconds)
        _log_line(f"ordered {account} {seq} end {time.time():.6f}")


class OrderedContinue(pgjobs.Job):
    """Ordered, but a job failed for good lets the next one of its key proceed."""

    ordered = pgjobs.ordered(key=lambda account, seq: account, on_failure="continue")

    def perform(self, account: str, seq: int) -> None:
        pass


class RatePerAccount(pgjobs.Job):
    """At most 10 starts per second per account; logs "rate <account> <seq> <t>" at its start."""

    rate_limit = pgjobs.rate_limit(limit=10, period=1, key=lambda account, seq: account)

    def perform(self, account: str, seq: int) -> None:
        import time

        _log_line(f"rate {account} {seq} {time.time():.6f}")


class RateAndLimited(pgjobs.Job):
    """Both a rate limit (3 per minute) and a concurrency limit (2 at once)."""

    rate_limit = pgjobs.rate_limit(limit=3, period=60)
    limits_concurrency = pgjobs.limit(to=2, duration=60)

    def perform(self, n: int) -> None:
        pass


class OrderedReplace(pgjobs.Job):
    """Ordered per account, and unique per (account, name) — a newer job replaces a waiting one."""

    ordered = pgjobs.ordered(key=lambda account, name: account)
    unique = pgjobs.unique(key=lambda account, name: f"{account}/{name}", on_conflict="replace")

    def perform(self, account: str, name: str) -> None:
        pass


class SteppedAsyncSlow(pgjobs.Job):
    """An async stepped job: "prepare", then "items" over 0..count-1 with a cursor (``pause``
    seconds per item), then "finish"; each run of a step's body logs "<job id> <what>"."""

    async def perform(self, count: int, pause: float) -> str:
        await self.step("prepare", self.prepare)
        await self.step("items", self.items, count, pause)
        await self.step("finish", self.finish)
        return "stepped"

    async def prepare(self, step: pgjobs.Step) -> None:
        _log_line(f"{self.job_id} prepare")

    async def items(self, step: pgjobs.Step, count: int, pause: float) -> None:
        import asyncio

        start = 0 if step.cursor is None else step.cursor + 1
        for item in range(start, count):
            _log_line(f"{self.job_id} item {item}")
            await asyncio.sleep(pause)
            step.advance(item)

    async def finish(self, step: pgjobs.Step) -> None:
        _log_line(f"{self.job_id} finish")


class SnoozesAsync(pgjobs.Job):
    """An async job that snoozes ``times`` times (its runs counted in the log), then finishes."""

    async def perform(self, times: int, log: str) -> str:
        import asyncio
        import os

        runs = 0
        if os.path.exists(log):
            with open(log) as fh:
                runs = sum(1 for line in fh if line.startswith(f"{self.job_id} run"))
        _log_line(f"{self.job_id} run {self.executions}")
        await asyncio.sleep(0)
        if runs < times:
            self.snooze(0.2)
        return f"ran {runs + 1} times"


from tests import workflow_jobs as _workflow_jobs  # noqa: E402, F401  (known to worker subprocesses)
