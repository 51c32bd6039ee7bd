"""Error rules: retry_on wait schedules and attempts, discard_on, rescue_from, after_discard,
inheritance and precedence — judged in the executor, recorded by the worker in one statement."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.jobs import rules
from pgjobs.processes.executor import Claimed, EventLoopThread, Outcome, perform
from pgjobs.processes.worker import Worker
from pgjobs.serialization import serialize_arguments
from tests.engine_helpers import (
    config_file,
    log_lines,
    pgjobs_start,
    run_once,
    scalar,
    states,
    wait_for,
)
from tests.sample_jobs import FlakyRecord

SEEN: list[str] = []


class GatewayError(Exception):
    pass


class GatewayTimeout(GatewayError):
    pass


class InvalidCard(Exception):
    pass


class OtherError(Exception):
    pass


class Flaky(pgjobs.Job):
    retry_on = [
        pgjobs.retry_on(GatewayError, wait="polynomially_longer", attempts=3, jitter=0),
        pgjobs.retry_on(TimeoutError, wait=30, attempts=5, jitter=0, queue="slow", priority=7),
        pgjobs.retry_on(KeyError, wait=lambda executions: executions * 10),
    ]
    discard_on = [
        InvalidCard,
        pgjobs.discard_on(OtherError, if_=lambda job, error: "permanent" in str(error)),
    ]

    def perform(self, error: str = "", message: str = "") -> str:
        SEEN.append(f"perform {self.executions}")
        if error:
            raise ERRORS[error](message)
        return "ok"

    def after_discard(self, error: BaseException) -> None:
        SEEN.append(f"after_discard {type(error).__name__}")


ERRORS: dict[str, type[Exception]] = {
    "gateway": GatewayError,
    "gateway_timeout": GatewayTimeout,
    "timeout": TimeoutError,
    "key": KeyError,
    "card": InvalidCard,
    "other": OtherError,
    "value": ValueError,
    "runtime": RuntimeError,
}


class Rescuing(Flaky):
    """Inherits Flaky's rules and adds handlers of its own."""

    retry_on = [pgjobs.retry_on(ValueError, wait=1, attempts=2, jitter=0)]

    @pgjobs.rescue_from(RuntimeError)
    def handle(self, error: RuntimeError) -> None:
        SEEN.append(f"rescued {error}")
        if str(error) == "again":
            raise error
        if str(error) == "later":
            self.retry_job(wait=5, queue="later")
        if str(error) == "other":
            raise OtherError("permanent, from the handler")


class Overriding(Rescuing):
    """Retries what its base discards: a subclass's rule wins a tie."""

    retry_on = [pgjobs.retry_on(InvalidCard, wait=2, attempts=2, jitter=0)]

    def handle(self, error: RuntimeError) -> None:  # no decorator: the rule stays, this runs
        SEEN.append(f"overridden {error}")


class Exhausting(pgjobs.Job):
    retry_on = [
        pgjobs.retry_on(
            GatewayError,
            wait=0,
            attempts=2,
            on_exhausted=lambda job, error: SEEN.append(f"exhausted {job.executions} {error}"),
        )
    ]

    def perform(self) -> None:
        raise GatewayError("down")

    def after_discard(self, error: BaseException) -> None:
        SEEN.append(f"after_discard {error}")


class AsyncRescuing(pgjobs.Job):
    retry_on = [pgjobs.retry_on(GatewayError, wait=0, attempts=2)]

    async def perform(self, error: str) -> None:
        await asyncio.sleep(0)
        raise ERRORS[error]("async")

    @pgjobs.rescue_from(ValueError)
    async def handle(self, error: ValueError) -> None:
        await asyncio.sleep(0)
        SEEN.append(f"async rescued {error}")

    async def after_discard(self, error: BaseException) -> None:
        SEEN.append(f"async after_discard {type(error).__name__}")


class Unlimited(pgjobs.Job):
    retry_on = [pgjobs.retry_on(GatewayError, wait=0, attempts="unlimited")]

    def perform(self) -> None:
        raise GatewayError("again")


class DiscardsBadArguments(pgjobs.Job):
    discard_on = [pgjobs.DeserializationError]

    def perform(self, value: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    SEEN.clear()
    yield
    SEEN.clear()


LOOP = EventLoopThread()


def claimed_for(
    job_class: type[pgjobs.Job], *args: Any, executions: int = 0, arguments: Any = None
) -> Claimed:
    return Claimed(
        id=1,
        job_id=uuid.uuid4(),
        class_name=job_class.job_name,
        arguments=serialize_arguments(args, {}) if arguments is None else arguments,
        queue_name="default",
        priority=0,
        executions=executions,
        created_at=datetime.now(UTC),
        scheduled_at=None,
    )


def run(job_class: type[pgjobs.Job], *args: Any, executions: int = 0) -> Outcome:
    return perform(claimed_for(job_class, *args, executions=executions), LOOP)


# -- wait schedules ---------------------------------------------------------------------------


@pytest.mark.parametrize("wait", ["polynomially_longer", "exponentially_longer"])
def test_polynomial_schedule_is_activejobs(wait: str) -> None:
    rule = pgjobs.retry_on(GatewayError, wait=wait, jitter=0)
    assert [rule.delay(n) for n in range(1, 6)] == [3, 18, 83, 258, 627]


def test_polynomial_jitter_adds_up_to_executions_to_the_fourth_times_jitter() -> None:
    rule = pgjobs.retry_on(GatewayError, wait="polynomially_longer", jitter=0.15)
    assert rule.delay(2, lambda: 0.0) == 18
    assert rule.delay(2, lambda: 0.5) == pytest.approx(16 + 0.5 * 16 * 0.15 + 2)
    assert rule.delay(3, lambda: 1.0) == pytest.approx(81 * 1.15 + 2)


def test_numeric_and_timedelta_waits_get_jitter_proportional_to_the_wait() -> None:
    rule = pgjobs.retry_on(GatewayError, wait=30, jitter=0.15)
    assert rule.delay(1, lambda: 0.0) == 30
    assert rule.delay(4, lambda: 1.0) == pytest.approx(34.5)  # same for every execution
    assert pgjobs.retry_on(GatewayError, wait=timedelta(minutes=1), jitter=0).delay(3) == 60
    assert pgjobs.retry_on(GatewayError, wait=0).delay(1) == 0


def test_a_callable_wait_gets_the_execution_number_and_no_jitter() -> None:
    rule = pgjobs.retry_on(GatewayError, wait=lambda executions: executions * 10, jitter=0.5)
    assert [rule.delay(n, lambda: 1.0) for n in (1, 2, 3)] == [10, 20, 30]
    in_minutes = pgjobs.retry_on(GatewayError, wait=lambda n: timedelta(minutes=n))
    assert in_minutes.delay(2) == 120


def test_defaults_are_activejobs() -> None:
    rule = pgjobs.retry_on(GatewayError)
    assert (rule.wait, rule.attempts, rule.jitter) == (3.0, 5, 0.15)
    assert 3.0 <= rule.delay(1) <= 3.0 * 1.15


def test_seeded_randomness_gives_a_reproducible_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = pgjobs.retry_on(GatewayError, wait="polynomially_longer")
    monkeypatch.setattr(rules, "rand", random.Random(42).random)
    first = [rule.delay(n) for n in range(1, 6)]
    monkeypatch.setattr(rules, "rand", random.Random(42).random)
    assert [rule.delay(n) for n in range(1, 6)] == first
    for n, delay in enumerate(first, start=1):
        assert n**4 + 2 <= delay <= n**4 * 1.15 + 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wait": "linearly"}, "wait must be"),
        ({"wait": -1}, "seconds >= 0"),
        ({"attempts": 0}, "attempts must be"),
        ({"jitter": -0.1}, "jitter must be"),
        ({"priority": "high"}, "priority must be an int"),
        ({"queue": ""}, "queue must be"),
    ],
)
def test_bad_retry_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match=message):
        pgjobs.retry_on(GatewayError, **kwargs)


def test_rules_must_name_exception_classes() -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="not an exception class"):
        pgjobs.retry_on("GatewayError")  # type: ignore[arg-type]
    with pytest.raises(pgjobs.ConfigurationError, match="not a retry rule"):

        class Wrong(pgjobs.Job):
            retry_on = [pgjobs.discard_on(GatewayError)]


# -- what the executor decides --------------------------------------------------------------------


def test_success_is_a_finished_outcome() -> None:
    outcome = run(Flaky)
    assert (outcome.kind, outcome.error) == ("finished", None)
    assert SEEN == ["perform 1"]


def test_retry_on_gives_the_rules_wait_queue_and_priority() -> None:
    outcome = run(Flaky, "timeout", "slow gateway", executions=1)
    assert outcome.kind == "retry"
    assert isinstance(outcome.error, TimeoutError)
    assert (outcome.wait, outcome.queue, outcome.priority) == (30, "slow", 7)
    assert "slow gateway" in outcome.backtrace
    assert run(Flaky, "gateway", executions=1).wait == 18  # execution 2
    assert run(Flaky, "key", executions=3).wait == 40


def test_attempts_count_executions_then_the_job_fails_and_after_discard_runs() -> None:
    assert run(Flaky, "gateway", executions=0).kind == "retry"  # execution 1 of 3
    assert run(Flaky, "gateway", executions=1).kind == "retry"  # 2 of 3
    assert SEEN == ["perform 1", "perform 2"]
    last = run(Flaky, "gateway", executions=2)  # 3 of 3: exhausted
    assert last.kind == "fail"
    assert isinstance(last.error, GatewayError)
    assert SEEN[-1] == "after_discard GatewayError"


def test_unlimited_attempts_never_give_up() -> None:
    assert run(Unlimited, executions=10_000).kind == "retry"


def test_on_exhausted_decides_instead_of_failing() -> None:
    assert run(Exhausting).kind == "retry"
    outcome = run(Exhausting, executions=1)
    assert outcome.kind == "discard"
    assert SEEN == ["exhausted 2 down", "after_discard down"]


def test_discard_on_a_bare_class_and_a_conditional_discard() -> None:
    outcome = run(Flaky, "card", "stolen")
    assert (outcome.kind, type(outcome.error)) == ("discard", InvalidCard)
    assert SEEN[-1] == "after_discard InvalidCard"
    assert run(Flaky, "other", "a permanent problem").kind == "discard"
    SEEN.clear()
    transient = run(Flaky, "other", "transient")  # if_ is false: no rule applies
    assert transient.kind == "fail"
    assert SEEN == ["perform 1", "after_discard OtherError"]


def test_an_error_no_rule_names_fails_the_job() -> None:
    outcome = run(Flaky, "value", "bad")
    assert (outcome.kind, type(outcome.error)) == ("fail", ValueError)
    assert "ValueError: bad" in outcome.backtrace


def test_rescue_from_can_swallow_the_error() -> None:
    outcome = run(Rescuing, "runtime", "swallow")
    assert (outcome.kind, outcome.error) == ("finished", None)
    assert SEEN == ["perform 1", "rescued swallow"]


def test_rescue_from_can_re_raise_and_the_job_fails() -> None:
    outcome = run(Rescuing, "runtime", "again")
    assert (outcome.kind, str(outcome.error)) == ("fail", "again")
    assert "rescued again" in SEEN


def test_a_bare_raise_in_a_handler_re_raises_the_error() -> None:
    class BareRaise(pgjobs.Job):
        @pgjobs.rescue_from(GatewayError)
        def handle(self, error: GatewayError) -> None:
            raise  # noqa: PLE0704 - the handler runs while the error is being handled

        def perform(self) -> None:
            raise GatewayError("bare")

    outcome = run(BareRaise)
    assert (outcome.kind, str(outcome.error)) == ("fail", "bare")
    assert "in perform" in outcome.backtrace


def test_rescue_from_can_raise_something_else() -> None:
    outcome = run(Rescuing, "runtime", "other")
    assert outcome.kind == "fail"  # what a handler raises is not matched against the rules again
    assert str(outcome.error) == "permanent, from the handler"


def test_rescue_from_can_re_enqueue_with_retry_job() -> None:
    outcome = run(Rescuing, "runtime", "later")
    assert (outcome.kind, outcome.wait, outcome.queue) == ("retry", 5, "later")
    assert str(outcome.error) == "later"


def test_rules_are_inherited_subclass_rules_first() -> None:
    assert run(Rescuing, "gateway", executions=0).kind == "retry"  # from Flaky
    assert run(Rescuing, "card").kind == "discard"  # from Flaky
    assert run(Rescuing, "value").kind == "retry"  # its own
    retried = run(Overriding, "card")  # Flaky discards InvalidCard, Overriding retries it
    assert (retried.kind, retried.wait) == ("retry", 2)
    overridden = run(Overriding, "runtime", "x")
    assert overridden.kind == "finished"
    assert SEEN[-1] == "overridden x"


def test_the_most_specific_error_class_wins() -> None:
    class Specific(pgjobs.Job):
        retry_on = [pgjobs.retry_on(GatewayTimeout, wait=1, jitter=0)]
        discard_on = [GatewayError, Exception]

        def perform(self, error: str) -> None:
            raise ERRORS[error]("x")

    assert run(Specific, "gateway_timeout").kind == "retry"
    assert run(Specific, "gateway").kind == "discard"
    assert [type(r).__name__ for r in rules.candidates(Specific._rules, GatewayTimeout())] == [
        "RetryRule",
        "DiscardRule",
        "DiscardRule",
    ]


def test_on_a_tie_rescue_from_beats_discard_on_beats_retry_on() -> None:
    class Tied(pgjobs.Job):
        retry_on = [GatewayError]
        discard_on = [GatewayError]

        @pgjobs.rescue_from(GatewayError)
        def handle(self, error: GatewayError) -> None:
            SEEN.append("handled")

        def perform(self) -> None:
            raise GatewayError

    assert run(Tied).kind == "finished"
    assert SEEN[-1] == "handled"
    kinds = [r.kind for r in rules.candidates(Tied._rules, GatewayError())]
    assert kinds == ["rescue", "discard", "retry"]


def test_after_discard_errors_fail_the_job() -> None:
    class BadHook(pgjobs.Job):
        discard_on = [InvalidCard]

        def perform(self) -> None:
            raise InvalidCard("gone")

        def after_discard(self, error: BaseException) -> None:
            raise RuntimeError("the dead-letter store is down")

    outcome = run(BadHook)
    assert (outcome.kind, str(outcome.error)) == ("fail", "the dead-letter store is down")


def test_async_jobs_may_have_async_handlers_and_hooks() -> None:
    rescued = run(AsyncRescuing, "value")
    assert rescued.kind == "finished"
    assert SEEN == ["async rescued async"]
    assert run(AsyncRescuing, "gateway").kind == "retry"
    assert run(AsyncRescuing, "gateway", executions=1).kind == "fail"
    assert SEEN[-1] == "async after_discard GatewayError"


def test_unknown_classes_fail_and_bad_arguments_can_be_discarded() -> None:
    unknown = perform(
        Claimed(
            1,
            uuid.uuid4(),
            "nowhere:Nothing",
            {"args": [], "kwargs": {}},
            "q",
            0,
            0,
            datetime.now(UTC),
            None,
        ),
        LOOP,
    )
    assert (unknown.kind, type(unknown.error)) == ("fail", pgjobs.UnknownJobError)
    bad = {"args": [{"__pgjobs__": "no-such-tag", "v": 1}], "kwargs": {}}
    discarded = perform(claimed_for(DiscardsBadArguments, arguments=bad), LOOP)
    assert (discarded.kind, type(discarded.error)) == ("discard", pgjobs.DeserializationError)
    failed = perform(claimed_for(Flaky, arguments=bad), LOOP)
    assert (failed.kind, type(failed.error)) == ("fail", pgjobs.DeserializationError)


def test_the_job_decorator_takes_rules_and_a_timeout() -> None:
    @pgjobs.job(retry_on=[pgjobs.retry_on(GatewayError, wait=9, jitter=0)], timeout=2)
    def charge() -> None:
        raise GatewayError("no")

    assert charge.job_class.timeout == 2.0
    assert run(charge.job_class).wait == 9


def test_timeouts_are_validated() -> None:
    class Minutes(pgjobs.Job):
        timeout = timedelta(minutes=2)

    assert Minutes.timeout == 120.0
    with pytest.raises(pgjobs.ConfigurationError, match="timeout must be"):

        class Negative(pgjobs.Job):
            timeout = -1


# -- perform_now ----------------------------------------------------------------------------------


def test_perform_now_applies_rescue_and_discard_but_raises_what_a_worker_would_retry() -> None:
    assert Flaky.perform_now() == "ok"
    assert Flaky.perform_now("card", "x") is None  # discarded
    assert SEEN[-1] == "after_discard InvalidCard"
    assert Rescuing.perform_now("runtime", "swallow") is None
    with pytest.raises(GatewayError):
        Flaky.perform_now("gateway")  # a retry: nothing to reschedule inline
    with pytest.raises(RuntimeError, match="later"):
        Rescuing.perform_now("runtime", "later")  # retry_job inline: raised too
    with pytest.raises(ValueError, match="bad"):
        Flaky.perform_now("value", "bad")
    with pytest.raises(OtherError, match="from the handler"):
        Rescuing.perform_now("runtime", "other")


def test_perform_now_on_async_jobs() -> None:
    assert AsyncRescuing.perform_now("value") is None
    with pytest.raises(GatewayError):
        AsyncRescuing.perform_now("gateway")


# -- recorded by the worker -----------------------------------------------------------------------

CONFIG = Config(heartbeat_interval=30)


@pytest.fixture
def make_worker(db: Database) -> Iterator[Any]:
    made: list[Worker] = []

    def make(config: Config = CONFIG, threads: int = 5) -> Worker:
        worker = Worker(Database(db.url), config, WorkerConfig(queues=("*",), threads=threads))
        worker.register()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()
        worker.close()


def job_row(url: str, job_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT id, queue_name, priority, executions, scheduled_at, finished_at, "
            "discarded_at FROM pgjobs_jobs WHERE job_id = %s",
            [job_id],
        )
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))


def errors_of(url: str, job_id: uuid.UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT e.attempt, e.exception_class, e.message, e.hostname IS NOT NULL "
            "FROM pgjobs_job_errors e JOIN pgjobs_jobs j ON j.id = e.job_id "
            "WHERE j.job_id = %s ORDER BY e.id",
            [job_id],
        ).fetchall()


@pytest.mark.committed
def test_a_retry_without_wait_is_the_same_job_ready_again(make_worker: Any, db: Database) -> None:
    job = Flaky.perform_later("key", "missing")  # KeyError: waits executions * 10 s
    worker = make_worker()
    unlimited = Unlimited.perform_later()
    run_once(worker)
    row = job_row(db.url, unlimited.job_id)
    assert row["executions"] == 1 and row["finished_at"] is None
    assert states(db.url) == {"ready": 1, "scheduled": 1}
    assert errors_of(db.url, unlimited.job_id) == [
        (1, "tests.test_rules.GatewayError", "again", True)
    ]
    assert len(run_once(worker)) == 1  # the same job, claimed again
    assert job_row(db.url, unlimited.job_id)["executions"] == 2
    assert len(errors_of(db.url, unlimited.job_id)) == 2
    assert job_row(db.url, job.job_id)["executions"] == 1


@pytest.mark.committed
def test_a_retry_with_wait_is_scheduled_on_the_rules_queue(make_worker: Any, db: Database) -> None:
    job = Flaky.perform_later("timeout", "slow")
    before = datetime.now(UTC)
    run_once(make_worker())
    row = job_row(db.url, job.job_id)
    assert (row["queue_name"], row["priority"], row["executions"]) == ("slow", 7, 1)
    assert before + timedelta(seconds=29) < row["scheduled_at"] < before + timedelta(seconds=32)
    assert states(db.url) == {"scheduled": 1}
    with psycopg.connect(db.url) as conn:
        scheduled = conn.execute(
            "SELECT queue_name, priority, scheduled_at FROM pgjobs_scheduled_executions"
        ).fetchone()
    assert scheduled == ("slow", 7, row["scheduled_at"])


@pytest.mark.committed
def test_exhausted_retries_end_as_on_exhausted_decides(make_worker: Any, db: Database) -> None:
    job = Exhausting.perform_later()
    worker = make_worker()
    run_once(worker)  # execution 1 of 2: retried at once
    assert states(db.url) == {"ready": 1}
    run_once(worker)  # execution 2 of 2: exhausted, on_exhausted discards it
    assert SEEN == ["exhausted 2 down", "after_discard down"]
    row = job_row(db.url, job.job_id)
    assert row["executions"] == 2 and row["discarded_at"] is not None
    assert row["finished_at"] == row["discarded_at"]
    assert [e[0] for e in errors_of(db.url, job.job_id)] == [1, 2]
    assert states(db.url) == {"finished": 1}


@pytest.mark.committed
def test_discard_finishes_the_job_as_discarded(make_worker: Any, db: Database) -> None:
    job = Flaky.perform_later("card", "stolen")
    run_once(make_worker())
    row = job_row(db.url, job.job_id)
    assert row["finished_at"] is not None and row["discarded_at"] == row["finished_at"]
    assert row["executions"] == 1
    assert errors_of(db.url, job.job_id) == [(1, "tests.test_rules.InvalidCard", "stolen", True)]
    assert states(db.url) == {"finished": 1}
    assert SEEN[-1] == "after_discard InvalidCard"


@pytest.mark.committed
def test_failure_is_recorded_in_failed_and_in_the_history(make_worker: Any, db: Database) -> None:
    job = Flaky.perform_later("value", "bad input")
    run_once(make_worker())
    assert states(db.url) == {"failed": 1}
    assert errors_of(db.url, job.job_id) == [(1, "builtins.ValueError", "bad input", True)]
    with psycopg.connect(db.url) as conn:
        failed = conn.execute(
            "SELECT exception_class, message, attempt, backtrace FROM pgjobs_failed_executions"
        ).fetchone()
    assert failed is not None and failed[:3] == ("builtins.ValueError", "bad input", 1)
    assert "ValueError: bad input" in failed[3]


@pytest.mark.committed
def test_rescued_jobs_finish_normally(make_worker: Any, db: Database) -> None:
    job = Rescuing.perform_later("runtime", "swallow")
    run_once(make_worker())
    assert states(db.url) == {"finished": 1}
    assert errors_of(db.url, job.job_id) == []  # handled: not an error of the job's


@pytest.mark.committed
def test_an_outcome_for_a_job_this_process_no_longer_holds_changes_nothing(
    make_worker: Any, db: Database
) -> None:
    job = Unlimited.perform_later()
    worker = make_worker()
    (claimed,) = worker.claim(1)
    with psycopg.connect(db.url, autocommit=True) as conn:  # released meanwhile (recovered)
        conn.execute("DELETE FROM pgjobs_claimed_executions")
        conn.execute(
            "INSERT INTO pgjobs_ready_executions (job_id, queue_name) VALUES (%s, 'default')",
            [claimed.id],
        )
    worker.in_flight[claimed.id] = claimed
    worker.outbox.put(perform(claimed, worker.loop))
    worker._collect()
    assert states(db.url) == {"ready": 1}
    assert job_row(db.url, job.job_id)["executions"] == 0
    assert errors_of(db.url, job.job_id) == []


@pytest.mark.committed
def test_a_stale_outcome_is_ignored(make_worker: Any, db: Database) -> None:
    Unlimited.perform_later()
    worker = make_worker()
    (claimed,) = worker.claim(1)
    worker.outbox.put(perform(claimed, worker.loop))  # not in flight (e.g. failed on timeout)
    worker._collect()
    assert states(db.url) == {"claimed": 1}


@pytest.mark.committed
@pytest.mark.parametrize("preserve", [True, False])
def test_preserve_finished_jobs_false_deletes_finished_and_discarded_jobs(
    make_worker: Any, db: Database, preserve: bool
) -> None:
    config = Config(heartbeat_interval=30, preserve_finished_jobs=preserve)
    worker = make_worker(config)
    done = Flaky.perform_later()
    discarded = Flaky.perform_later("card")
    failing = Flaky.perform_later("value")
    retried = Unlimited.perform_later()
    with psycopg.connect(db.url, autocommit=True) as conn:  # give the finished job a history
        conn.execute(
            "INSERT INTO pgjobs_job_errors (job_id, attempt, exception_class, message, backtrace) "
            "SELECT id, 0, 'x', 'y', '' FROM pgjobs_jobs WHERE job_id = %s",
            [done.job_id],
        )
    run_once(worker)
    run_once(worker)  # finishes the first pass's finished job (and the retried job again)
    if preserve:
        assert states(db.url) == {"finished": 2, "failed": 1, "ready": 1}
    else:
        assert states(db.url) == {"failed": 1, "ready": 1}
        with psycopg.connect(db.url) as conn:
            left = {r[0] for r in conn.execute("SELECT job_id FROM pgjobs_jobs")}
            orphans = conn.execute(
                "SELECT count(*) FROM pgjobs_job_errors e WHERE NOT EXISTS "
                "(SELECT 1 FROM pgjobs_jobs j WHERE j.id = e.job_id)"
            ).fetchone()
        assert left == {failing.job_id, retried.job_id}
        assert orphans == (0,)
    assert discarded.job_id != done.job_id


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.committed
@pytest.mark.slow
def test_pgjobs_start_retries_a_flaky_job_until_it_succeeds(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = FlakyRecord.perform_later(3)
    exhausted = FlakyRecord.perform_later(99)
    done = (
        f"SELECT count(*) FROM pgjobs_jobs WHERE job_id = '{job.job_id}' "
        "AND finished_at IS NOT NULL"
    )
    failed = (
        "SELECT count(*) FROM pgjobs_failed_executions f JOIN pgjobs_jobs j ON j.id = f.job_id "
        f"WHERE j.job_id = '{exhausted.job_id}'"
    )
    with pgjobs_start(db.url, config_file(tmp_path), log) as proc:  # (a recurring task may run)
        wait_for(lambda: scalar(db.url, done) == 1 and scalar(db.url, failed) == 1, timeout=30)
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    attempts = [line.split()[1] for line in log_lines(log) if line.startswith(str(job.job_id))]
    assert attempts == ["1", "2", "3"]
    row = job_row(db.url, job.job_id)
    assert row["executions"] == 3 and row["finished_at"] is not None
    assert [e[0] for e in errors_of(db.url, job.job_id)] == [1, 2]
    assert [e[0] for e in errors_of(db.url, exhausted.job_id)] == [1, 2, 3]


# -- the configuration's default retry policy --------------------------------------------------


def test_the_default_policy_retries_errors_no_rule_names(tmp_path: Path) -> None:
    from pgjobs.config.queue import load_config
    from pgjobs.jobs import rules

    path = tmp_path / "queue.yml"
    path.write_text("retry:\n  attempts: 2\n  wait: 30s\n  jitter: 0\n")
    config = load_config(path)
    assert config.retry == {"attempts": 2, "wait": 30.0, "jitter": 0}
    try:
        rules.set_default_retry(config.retry)
        first = run(Flaky, "value", "bad", executions=0)
        assert (first.kind, first.wait) == ("retry", 30.0)
        last = run(Flaky, "value", "bad", executions=1)  # the second execution: used up
        assert last.kind == "fail"
        assert run(Flaky, "value", "bad").kind == "retry"
    finally:
        rules.set_default_retry(None)
    assert run(Flaky, "value", "bad").kind == "fail"


def test_a_bad_default_policy_is_reported_with_its_line(tmp_path: Path) -> None:
    from pgjobs.config.queue import load_config

    path = tmp_path / "queue.yml"
    path.write_text("workers: []\nretry:\n  attempt: 2\n")
    with pytest.raises(
        pgjobs.ConfigurationError, match=r"queue.yml:2: retry: unknown key 'attempt'"
    ):
        load_config(path)
    path.write_text("retry:\n  wait: sometimes\n")
    with pytest.raises(pgjobs.ConfigurationError, match="retry"):
        load_config(path)
