"""Ordered keys and rate limits through the worker, dispatcher and operators' passes.

The passes are called directly on committed data; the runs with real worker processes (the
issue's order and rate tests) are in ``test_flow_control_e2e.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import pgjobs
from pgjobs.config.queue import Config, DispatcherConfig
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError
from pgjobs.operations.failed import FailedJobs
from pgjobs.operations.waiting import WaitingJobs
from pgjobs.processes.dispatcher import Dispatcher
from pgjobs.processes.executor import Claimed, Outcome
from pgjobs.processes.worker import Worker
from tests.engine_helpers import scalar, states
from tests.sample_jobs import (
    OrderedContinue,
    OrderedPerAccount,
    OrderedReplace,
    RateAndLimited,
    RatePerAccount,
)
from tests.test_concurrency_worker import finish

pytestmark = pytest.mark.committed
CONFIG = Config(heartbeat_interval=30, max_interruptions=2)
ORDERED_KEY = "tests.sample_jobs:OrderedPerAccount/{}"


@pytest.fixture
def dispatcher(db: Database) -> Iterator[Dispatcher]:
    made = Dispatcher(Database(db.url), CONFIG, DispatcherConfig())
    yield made
    made.close()


def end(worker: Worker, job: Claimed, kind: str, wait: float | None = None) -> None:
    worker.in_flight[job.id] = job
    worker.record(Outcome(job, RuntimeError("boom"), "Traceback ...", 0.1, kind, wait))  # type: ignore[arg-type]


def take(worker: Worker, limit: int = 10) -> list[Claimed]:
    """Claim as the worker's loop does: rate-limited jobs need a start token."""
    claimed = worker.claim(limit)
    if any(c.rate_key is not None for c in claimed):
        claimed = worker._take_starts(claimed)
    return claimed


def age_windows(db: Database, seconds: float = 2.0) -> None:
    """As if ``seconds`` had passed for every rate limit (their times are the database's)."""
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgjobs_rate_limits SET"
            " starts = ARRAY(SELECT t - make_interval(secs => %(s)s) FROM unnest(starts) t),"
            " free_at = free_at - make_interval(secs => %(s)s),"
            " updated_at = updated_at - make_interval(secs => %(s)s)",
            {"s": seconds},
        )


def seqs(claimed: list[Claimed]) -> list[int]:
    import json

    return [json.loads(c.arguments)["args"][1] for c in claimed]


# -- declarations ------------------------------------------------------------------------------


def test_declarations_are_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"ordered\(on_failure=...\) must be one of"):
        pgjobs.ordered(on_failure="skip")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"rate_limit\(limit=...\) must be an int from 1"):
        pgjobs.rate_limit(limit=0)
    with pytest.raises(ConfigurationError, match="limit=1000, period=36 for 100000 an hour"):
        pgjobs.rate_limit(limit=100_000, period=3600)
    with pytest.raises(ConfigurationError, match=r"rate_limit\(period=...\) must be a positive"):
        pgjobs.rate_limit(limit=1, period=-1)
    with pytest.raises(ConfigurationError, match="both ordered and limits_concurrency"):

        class Both(pgjobs.Job):
            ordered = pgjobs.ordered()
            limits_concurrency = pgjobs.limit(to=2)

    with pytest.raises(ConfigurationError, match=r"rate_limit must be pgjobs.rate_limit\(...\)"):

        class Wrong(pgjobs.Job):
            rate_limit = 10  # type: ignore[assignment]


# -- ordered keys ------------------------------------------------------------------------------


def test_an_ordered_key_runs_one_job_at_a_time_in_enqueue_order(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    # Priorities do not reorder a key's line: enqueue order does.
    for seq, priority in ((0, 5), (1, 9), (2, -3), (3, 0)):
        OrderedPerAccount.set(priority=priority).perform_later("a", seq)
    OrderedPerAccount.perform_later("b", 0)
    assert states(db.url) == {"ready": 2, "blocked": 3}
    key = ORDERED_KEY.format("a")
    semaphore = scalar(db.url, "SELECT expires_at FROM pgjobs_semaphores WHERE key = %s", (key,))
    assert semaphore.year == 9999  # an ordered key's slot never expires
    worker = make_worker()
    order = []
    while claimed := worker.claim(10):
        assert len([c for c in claimed if c.concurrency_key == key]) <= 1
        keys = [str(c.concurrency_key).rsplit("/", 1)[1] for c in claimed]
        order += list(zip(keys, seqs(claimed), strict=True))
        finish(worker, claimed)
    assert [s for k, s in order if k == "a"] == [0, 1, 2, 3]
    assert states(db.url) == {"finished": 5}


def test_a_job_retried_later_keeps_its_place(
    db: Database, make_worker: Callable[..., Worker], dispatcher: Dispatcher
) -> None:
    OrderedPerAccount.perform_later("a", 0)
    OrderedPerAccount.perform_later("a", 1)
    worker = make_worker()
    (first,) = worker.claim(10)
    end(worker, first, "retry", 30.0)
    # Its slot is kept: the next job stays blocked, and the retry goes straight to ready.
    assert states(db.url) == {"scheduled": 1, "blocked": 1}
    assert scalar(db.url, "SELECT concurrency_key FROM pgjobs_scheduled_executions") is None
    assert worker.claim(10) == []
    assert dispatcher.dispatch(now=datetime.now(UTC) + timedelta(minutes=1)) == 1
    (again,) = worker.claim(10)
    assert again.id == first.id
    finish(worker, [again])
    assert seqs(worker.claim(10)) == [1]


def test_a_job_failed_for_good_holds_its_key_until_discarded(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    for seq in range(3):
        OrderedPerAccount.perform_later("a", seq)
    worker = make_worker()
    (first,) = worker.claim(10)
    end(worker, first, "fail")
    assert states(db.url) == {"failed": 1, "blocked": 2}
    assert worker.claim(10) == []  # held: the next job waits for the failed one
    failed = FailedJobs(Database(db.url))
    assert failed.retry(first.job_id)
    (retried,) = worker.claim(10)  # straight to ready: it still held the slot
    assert retried.id == first.id
    end(worker, retried, "fail")
    assert failed.discard(first.job_id)
    assert seqs(worker.claim(10)) == [1]  # discarding it lets the key go on


def test_on_failure_continue_lets_the_next_job_proceed(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    OrderedContinue.perform_later("a", 0)
    OrderedContinue.perform_later("a", 1)
    worker = make_worker()
    (first,) = worker.claim(10)
    end(worker, first, "fail")
    assert seqs(worker.claim(10)) == [1]


def test_an_ordered_job_scheduled_for_later_joins_the_line_when_due(
    db: Database, make_worker: Callable[..., Worker], dispatcher: Dispatcher
) -> None:
    OrderedPerAccount.perform_later("a", 0)
    OrderedPerAccount.set(wait=60, priority=-10).perform_later("a", 1)
    OrderedPerAccount.perform_later("a", 2)
    worker = make_worker()
    (first,) = worker.claim(10)
    assert dispatcher.dispatch(now=datetime.now(UTC) + timedelta(minutes=2)) == 1
    assert states(db.url) == {"claimed": 1, "blocked": 2}
    finish(worker, [first])
    assert seqs(worker.claim(10)) == [1]  # enqueued before 2 (its priority plays no part)


def test_discarding_or_cancelling_a_waiting_ordered_job_keeps_the_line_moving(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    jobs = [OrderedPerAccount.perform_later("a", seq) for seq in range(4)]
    waiting = WaitingJobs(Database(db.url))
    assert waiting.discard(jobs[0].job_id)  # ready, holding the slot: given back
    assert pgjobs.cancel(jobs[1].job_id) == "cancelled"  # blocked
    worker = make_worker()
    assert seqs(worker.claim(10)) == [2]


# -- rate limits -------------------------------------------------------------------------------


def test_a_rate_limit_starts_at_most_limit_jobs_and_lines_up_the_rest(
    db: Database, make_worker: Callable[..., Worker], dispatcher: Dispatcher
) -> None:
    for seq in range(25):
        RatePerAccount.perform_later("a", seq)
    RatePerAccount.perform_later("b", 0)
    worker = make_worker()
    started = take(worker, 100)
    assert len(started) == 11  # 10 of "a", 1 of "b": keys have budgets of their own
    assert sorted(seqs(started)) == [0, *range(10)]
    assert states(db.url) == {"claimed": 11, "blocked": 15}
    line = scalar(
        db.url,
        "SELECT array_agg(DISTINCT concurrency_key) FROM pgjobs_blocked_executions",
    )
    assert line == ["rate|tests.sample_jobs:RatePerAccount/a"]
    # The budget frees a period (plus the guard) after the oldest start in the window: measured
    # from the stamped starts, not from now(), which a loaded machine may reach late.
    free_at = scalar(
        db.url, "SELECT free_at - starts[1] FROM pgjobs_rate_limits WHERE key LIKE '%/a'"
    )
    assert free_at == timedelta(seconds=1.025)
    # Waiting jobs are not polled: nothing moves before the budget frees...
    assert dispatcher.release_rates() == 0
    assert take(worker, 100) == []
    # ...and when it does, the next ten move, in enqueue order.
    age_windows(db)
    assert dispatcher.release_rates() == 10
    assert states(db.url)["ready"] == 10
    assert sorted(seqs(take(worker, 100))) == list(range(10, 20))


def test_a_moved_job_that_finds_the_budget_spent_goes_back_in_line(
    db: Database, make_worker: Callable[..., Worker], dispatcher: Dispatcher
) -> None:
    for seq in range(12):
        RatePerAccount.perform_later("a", seq)
    worker = make_worker()
    assert len(take(worker, 100)) == 10
    age_windows(db)
    assert dispatcher.release_rates() == 2
    # Meanwhile a newer job took the window's only start... (the starts are the database's)
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgjobs_rate_limits SET starts = array_fill(clock_timestamp(), ARRAY[10])"
        )
    assert take(worker, 100) == []  # ...so the moved ones go back in line
    assert states(db.url) == {"claimed": 10, "blocked": 2}
    # The key's free_at is set again: the dispatcher's next pass moves them.
    assert scalar(db.url, "SELECT free_at FROM pgjobs_rate_limits") is not None


def test_a_rate_limited_job_with_a_concurrency_limit_gives_its_slot_back_from_the_line(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    for n in range(4):
        RateAndLimited.perform_later(n)
    assert states(db.url) == {"ready": 2, "blocked": 2}  # 2 slots
    worker = make_worker()
    first = take(worker)
    assert len(first) == 2
    finish(worker, first)  # slots back: the next two are unblocked, and claimed...
    assert len(take(worker)) == 1  # ...but only one start is left this minute
    key = "tests.sample_jobs:RateAndLimited"
    assert scalar(db.url, "SELECT value FROM pgjobs_semaphores WHERE key = %s", (key,)) == 2
    waiting = WaitingJobs(Database(db.url))
    assert waiting.discard_all("blocked") == 1  # the one in the rate line held a slot
    assert scalar(db.url, "SELECT value FROM pgjobs_semaphores WHERE key = %s", (key,)) == 1


def test_status_lists_rate_limits(db: Database, make_worker: Callable[..., Worker]) -> None:
    for seq in range(12):
        RatePerAccount.perform_later("a", seq)
    take(make_worker(), 100)
    from pgjobs.operations.queues import rate_limits

    (info,) = rate_limits(Database(db.url))
    assert (info.key, info.limit, info.period, info.started, info.waiting) == (
        "tests.sample_jobs:RatePerAccount/a",
        10,
        timedelta(seconds=1),
        10,
        2,
    )
    assert info.free_at is not None


def test_maintenance_forgets_rate_keys_long_unused(
    db: Database, make_worker: Callable[..., Worker], dispatcher: Dispatcher
) -> None:
    RatePerAccount.perform_later("a", 0)
    finish(worker := make_worker(), take(worker))
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_rate_limits") == 1
    dispatcher.maintain()
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_rate_limits") == 1  # used just now
    dispatcher.maintain(now=datetime.now(UTC) + timedelta(days=1, minutes=1))
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_rate_limits") == 0


def test_status_and_jobs_show_tell_about_rate_limits(
    db: Database, make_worker: Callable[..., Worker], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tests.engine_helpers import pgjobs_cli

    jobs = [RatePerAccount.perform_later("a", seq) for seq in range(12)]
    take(make_worker(), 100)
    assert pgjobs_cli(db.url, "status") == 0
    out = capsys.readouterr().out
    assert "RATE LIMIT KEY" in out and "rate|" not in out  # the line is not a concurrency key
    line = next(x for x in out.splitlines() if x.startswith("tests.sample_jobs:RatePerAccount/a"))
    assert line.split()[1:] == ["10/1s", "10", "2"]
    assert pgjobs_cli(db.url, "status", "--json") == 0
    (rate,) = json.loads(capsys.readouterr().out)["rate_limits"]
    assert (rate["limit"], rate["period"], rate["started"], rate["waiting"]) == (10, 1.0, 10, 2)
    assert pgjobs_cli(db.url, "jobs", "show", str(jobs[-1].job_id), "--json") == 0
    shown = json.loads(capsys.readouterr().out)["waiting_for"]
    assert shown["rate_limit_key"] == "tests.sample_jobs:RatePerAccount/a"
    assert shown["rate_limit"] == "10 per 1s" and shown["rate_waiting_in_line"] == 2


# -- what a hostile review found (each reproduced before its fix) --------------------------------


def test_discarding_or_cancelling_a_retrying_ordered_job_gives_its_slot_back(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    for seq in range(4):
        OrderedPerAccount.perform_later("a", seq)
    worker = make_worker()
    (first,) = worker.claim(10)
    end(worker, first, "retry", 30.0)  # waits in scheduled, holding the key
    assert WaitingJobs(Database(db.url)).discard(first.job_id)
    (second,) = worker.claim(10)
    assert seqs([second]) == [1]
    end(worker, second, "retry", 30.0)
    assert pgjobs.cancel(second.job_id) == "cancelled"
    assert seqs(worker.claim(10)) == [2]


def test_replacing_a_waiting_job_that_holds_an_ordered_key_gives_the_key_back(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    OrderedReplace.perform_later("a", "x")
    OrderedReplace.perform_later("a", "y")
    worker = make_worker()
    (first,) = worker.claim(10)
    end(worker, first, "retry", 30.0)  # "x" waits for its retry, holding the key
    replaced = OrderedReplace.perform_later("a", "x")
    assert replaced.replaced == first.job_id
    # "y" (enqueued before the new "x") runs next: the key was given back with the old "x".
    (second,) = worker.claim(10)
    assert json.loads(second.arguments)["args"] == ["a", "y"]


def test_a_rate_check_that_gives_up_on_a_lock_gives_its_jobs_back(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    RatePerAccount.perform_later("a", 0)
    worker = make_worker()
    finish(worker, take(worker))  # the key's row exists
    RatePerAccount.perform_later("a", 1)
    RatePerAccount.perform_later("a", 2)
    with psycopg.connect(db.url) as holder:
        holder.execute("SELECT 1 FROM pgjobs_rate_limits FOR UPDATE")  # past lock_timeout
        assert take(worker) == []
    assert states(db.url) == {"finished": 1, "ready": 2}  # not stranded in claimed
    assert sorted(seqs(take(worker))) == [1, 2]


def test_taking_starts_again_after_a_lost_reply_grants_only_jobs_still_held(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    from pgjobs.processes.claims import _ids
    from pgjobs.store import rates

    for seq in range(12):
        RatePerAccount.perform_later("a", seq)
    worker = make_worker()
    claimed = worker.claim(100)
    params = {
        "ids": _ids([c.id for c in claimed]),
        "key": "tests.sample_jobs:RatePerAccount/a",
        "process_id": worker.id,
        "guard": rates.GUARD,
    }
    worker.execute(rates.NEW_KEY, {"key": params["key"], "id": claimed[0].id})
    held, _, granted = worker.execute(rates.TAKE, params)[0][:3]
    assert (held, len(granted)) == (12, 10)
    age_windows(db)  # the window is empty again when the statement runs a second time
    held, _, again = worker.execute(rates.TAKE, params)[0][:3]
    assert held == 10 and sorted(again) == sorted(granted)  # never the two in line
    assert states(db.url) == {"claimed": 10, "blocked": 2}


def test_starts_are_stamped_by_the_database_once_the_key_is_locked(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    import threading
    import time

    RatePerAccount.perform_later("a", 0)
    worker = make_worker()
    finish(worker, take(worker))
    RatePerAccount.perform_later("a", 1)
    released = []
    with psycopg.connect(db.url) as holder:
        holder.execute("SELECT 1 FROM pgjobs_rate_limits FOR UPDATE")

        def release() -> None:
            time.sleep(0.1)  # under the worker's lock_timeout
            released.append(holder.execute("SELECT clock_timestamp()").fetchone()[0])  # type: ignore[index]
            holder.commit()

        thread = threading.Thread(target=release)
        thread.start()
        assert len(take(worker)) == 1
        thread.join()
    last = scalar(db.url, "SELECT starts[array_upper(starts, 1)] FROM pgjobs_rate_limits")
    assert last >= released[0]  # after the wait, not when the worker asked


def test_bulk_enqueue_keeps_an_ordered_keys_list_order_whatever_the_unique_keys(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    pgjobs.perform_all_later([OrderedReplace("a", name) for name in ("zeta", "alpha", "mid")])
    worker = make_worker()
    order = []
    while claimed := worker.claim(10):
        order += [json.loads(c.arguments)["args"][1] for c in claimed]
        finish(worker, claimed)
    assert order == ["zeta", "alpha", "mid"]


def test_maintenance_forgets_free_semaphores(
    db: Database, make_worker: Callable[..., Worker], dispatcher: Dispatcher
) -> None:
    for account in ("a", "b"):
        OrderedPerAccount.perform_later(account, 0)
    worker = make_worker()
    finish(worker, worker.claim(10))
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_semaphores WHERE value = 0") == 2
    dispatcher.maintain(now=datetime.now(UTC) + timedelta(minutes=2))
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_semaphores") == 0
    OrderedPerAccount.perform_later("a", 1)  # the key's semaphore comes back with its next job
    assert len(worker.claim(10)) == 1


def test_an_unblock_never_passes_a_locked_head_of_the_line(
    db: Database, make_worker: Callable[..., Worker]
) -> None:
    for seq in range(3):
        OrderedPerAccount.perform_later("a", seq)
    worker = make_worker()
    (first,) = worker.claim(10)
    with psycopg.connect(db.url) as holder:  # an operator's statement on job 1, not committed
        holder.execute(
            "SELECT 1 FROM pgjobs_blocked_executions b JOIN pgjobs_jobs j ON j.id = b.job_id"
            " WHERE j.arguments->'args'->>1 = '1' FOR UPDATE OF b"
        )
        finish(worker, [first])
        assert worker.claim(10) == []  # job 2 did not pass job 1
        holder.rollback()
    worker._unblock(["tests.sample_jobs:OrderedPerAccount/a"])  # the next release, or maintenance
    assert seqs(worker.claim(10)) == [1]
