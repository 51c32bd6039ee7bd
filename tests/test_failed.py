"""Failed jobs for operators (``pgjobs.FailedJobs`` and ``pgjobs failed …``), and retention
(``pgjobs.clear_finished`` and ``pgjobs clear-finished``)."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgjobs
import pgjobs.cli.jobs
from pgjobs import clock
from pgjobs.cli import main as cli
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.processes.executor import perform
from pgjobs.processes.worker import Worker
from tests.engine_helpers import scalar, states
from tests.sample_jobs import Hourly

pytestmark = pytest.mark.committed


class PaymentError(Exception):
    pass


class Charge(pgjobs.Job):
    queue_as = "payments"

    def perform(self, amount: int, error: str = "payment") -> None:
        if error == "payment":
            raise PaymentError(f"declined {amount}")
        if error == "value":
            raise ValueError(f"bad amount {amount}")


class Report(pgjobs.Job):
    def perform(self) -> None:
        raise PaymentError("report")


@pytest.fixture
def worker(db: Database) -> Iterator[Worker]:
    made = Worker(Database(db.url), Config(heartbeat_interval=30), WorkerConfig(threads=100))
    made.register()
    yield made
    made.stop()
    made.close()


def run_all(worker: Worker) -> None:
    while claimed := worker.claim(100):
        for job in claimed:
            worker.in_flight[job.id] = job
            worker.outbox.put(perform(job, worker.loop))
        worker._collect()
    if worker.to_finish:
        worker._finish_only()


def fail_ready(error: str = "tests.test_failed.PaymentError") -> None:
    """Fail every ready job directly (fast), as the worker's FAIL statement would."""
    with psycopg.connect(pgjobs.get_database().url, autocommit=True) as conn:
        conn.execute(
            "WITH r AS (DELETE FROM pgjobs_ready_executions RETURNING job_id) "
            "INSERT INTO pgjobs_failed_executions (job_id, exception_class, message, backtrace, "
            "attempt) SELECT job_id, %s, 'declined', '', 1 FROM r",
            [error],
        )


def make_failed(n: int) -> None:
    pgjobs.perform_all_later([Charge(i) for i in range(n)])
    fail_ready()


# -- the API --------------------------------------------------------------------------------------


def test_list_filters_and_pages(worker: Worker, db: Database) -> None:
    charges = [Charge.perform_later(i) for i in range(5)]
    bad = Charge.perform_later(9, "value")
    report = Report.perform_later()
    Charge.perform_later(1, "none")  # succeeds
    run_all(worker)
    failed = pgjobs.FailedJobs()
    everything = failed.list()
    assert [j.job_id for j in everything] == [c.job_id for c in charges] + [
        bad.job_id,
        report.job_id,
    ]
    first = everything[0]
    assert (first.class_name, first.queue_name, first.exception_class, first.message) == (
        Charge.job_name,
        "payments",
        "tests.test_failed.PaymentError",
        "declined 0",
    )
    assert first.attempt == first.executions == 1 and first.hostname and first.pid
    assert first.arguments == {"args": [0], "kwargs": {}} and first.errors == ()
    assert len(failed.list(job_class=Charge)) == 6
    assert len(failed.list(job_class=Charge.job_name, error=PaymentError)) == 5
    assert [j.job_id for j in failed.list(error="ValueError")] == [bad.job_id]
    assert [j.job_id for j in failed.list(error="builtins.ValueError")] == [bad.job_id]
    assert len(failed.list(queue="default")) == 1
    assert failed.count(error="PaymentError") == 6
    page = failed.list(limit=3)
    assert [j.job_id for j in page + failed.list(limit=10, after_id=page[-1].id)] == [
        j.job_id for j in everything
    ]
    now = datetime.now(UTC)
    assert failed.list(failed_before=now - timedelta(hours=1)) == []
    assert len(failed.list(failed_after=now - timedelta(hours=1))) == 7
    assert len(list(pgjobs.FailedJobs(batch_size=2))) == 7
    with pytest.raises(pgjobs.ConfigurationError, match="timezone-aware"):
        failed.list(failed_before=datetime(2030, 1, 1))


def test_get_returns_the_job_with_its_error_history(worker: Worker, db: Database) -> None:
    job = Charge.perform_later(5)
    run_all(worker)
    failed = pgjobs.FailedJobs(db)
    assert failed.retry(job.job_id)
    run_all(worker)  # fails again
    found = failed.get(str(job.job_id))
    assert found is not None and found.executions == 2 and found.attempt == 2
    assert [(e.attempt, e.message) for e in found.errors] == [(1, "declined 5"), (2, "declined 5")]
    assert "PaymentError: declined 5" in found.errors[0].backtrace
    assert failed.get(uuid.uuid4()) is None
    data = found.as_dict()
    assert data["job_id"] == str(job.job_id) and len(data["errors"]) == 2
    json.dumps(data)
    with pytest.raises(pgjobs.ConfigurationError, match="not a job id"):
        failed.get("nope")


def test_retry_puts_the_job_back_to_ready_keeping_its_executions(
    worker: Worker, db: Database
) -> None:
    job = Charge.perform_later(1)
    run_all(worker)
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("UPDATE pgjobs_jobs SET interruptions = 3")
    failed = pgjobs.FailedJobs()
    assert failed.retry(job.job_id) is True
    assert failed.retry(job.job_id) is False  # not failed any more
    assert states(db.url) == {"ready": 1}
    assert scalar(db.url, "SELECT executions FROM pgjobs_jobs") == 1
    assert scalar(db.url, "SELECT interruptions FROM pgjobs_jobs") == 0
    assert failed.state(job.job_id) == "ready"
    assert failed.state(uuid.uuid4()) is None


def test_a_retried_job_with_a_future_scheduled_at_is_scheduled(db: Database) -> None:
    make_failed(2)
    later = datetime.now(UTC) + timedelta(hours=1)
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgjobs_jobs SET scheduled_at = %s WHERE id = (SELECT min(id) FROM pgjobs_jobs)",
            [later],
        )
    assert pgjobs.FailedJobs().retry_all() == 2
    assert states(db.url) == {"ready": 1, "scheduled": 1}


def test_retry_all_and_discard_all_work_in_batches(db: Database) -> None:
    make_failed(2500)
    failed = pgjobs.FailedJobs(batch_size=1000)
    assert failed.retry_all(job_class=Charge, error="PaymentError") == 2500
    assert states(db.url) == {"ready": 2500}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE executions = 0") == 2500
    fail_ready("x.Other")  # fail them all again
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgjobs_job_errors (job_id, attempt, exception_class, message, "
            "backtrace) SELECT id, 1, 'x.Other', 'other', '' FROM pgjobs_jobs"
        )
    assert failed.discard_all(error="PaymentError") == 0
    assert failed.discard_all(error="Other") == 2500
    assert states(db.url) == {}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_job_errors") == 0
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_failed_executions") == 0


def test_batches_are_separate_short_transactions(db: Database) -> None:
    make_failed(25)
    calls: list[int] = []
    database = pgjobs.get_database()
    real = database.connection

    def spy() -> Any:
        calls.append(1)
        return real()

    failed = pgjobs.FailedJobs(database, batch_size=10)
    database.connection = spy  # type: ignore[method-assign]
    try:
        assert failed.retry_all() == 25
    finally:
        del database.connection
    assert len(calls) == 4  # 10 + 10 + 5, then an empty batch ends the walk


def test_discard_deletes_the_job_but_never_a_running_one(worker: Worker, db: Database) -> None:
    failing = Charge.perform_later(1)
    run_all(worker)
    running = Charge.perform_later(2, "none")
    (claimed,) = worker.claim(1)
    failed = pgjobs.FailedJobs()
    assert failed.discard(running.job_id) is False
    assert failed.state(running.job_id) == "claimed"
    assert failed.discard(failing.job_id) is True
    assert failed.discard(failing.job_id) is False
    assert states(db.url) == {"claimed": 1}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_job_errors") == 0
    assert claimed.job_id == running.job_id


def test_filters_must_be_classes_or_names(db: Database) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="job_class must be"):
        pgjobs.FailedJobs().list(job_class=42)  # type: ignore[arg-type]
    with pytest.raises(pgjobs.ConfigurationError, match="error must be"):
        pgjobs.FailedJobs().list(error=42)  # type: ignore[arg-type]
    with pytest.raises(pgjobs.ConfigurationError, match="batch_size"):
        pgjobs.FailedJobs(batch_size=0)


# -- the CLI --------------------------------------------------------------------------------------


def pgjobs_cli(db: Database, *argv: str) -> int:
    """``pgjobs ARGV`` in this process, with the commands of pgjobs.cli.jobs wired in."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "failed" not in sub.choices:  # until cli.py calls add_parsers itself
        pgjobs.cli.jobs.add_parsers(sub)
    args = parser.parse_args([*argv, "--database-url", db.url])
    try:
        return cli.COMMANDS[args.command](args)
    except pgjobs.PgJobsError as exc:
        print(f"pgjobs: error: {exc}")
        return 1


def test_cli_failed_list_and_show(
    worker: Worker, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    charge = Charge.perform_later(7)
    report = Report.perform_later()
    run_all(worker)
    capsys.readouterr()
    assert pgjobs_cli(db, "failed", "list") == 0
    out = capsys.readouterr().out
    assert str(charge.job_id) in out and str(report.job_id) in out
    assert "PaymentError: declined 7" in out
    assert pgjobs_cli(db, "failed", "list", "--class", Report.job_name, "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [j["job_id"] for j in listed] == [str(report.job_id)]
    assert (
        pgjobs_cli(
            db,
            "failed",
            "list",
            "--queue",
            "payments",
            "--error",
            "PaymentError",
            "--limit",
            "1",
            "--json",
        )
        == 0
    )
    assert [j["job_id"] for j in json.loads(capsys.readouterr().out)] == [str(charge.job_id)]
    assert pgjobs_cli(db, "failed", "show", str(charge.job_id)) == 0
    out = capsys.readouterr().out
    assert "declined 7" in out and "error history (1)" in out and "Traceback" in out
    assert pgjobs_cli(db, "failed", "show", str(charge.job_id), "--json") == 0
    assert json.loads(capsys.readouterr().out)["errors"][0]["attempt"] == 1
    missing = uuid.uuid4()
    assert pgjobs_cli(db, "failed", "show", str(missing)) == 1
    assert f"job {missing} is not failed (no such job)" in capsys.readouterr().err


def test_cli_failed_retry_and_discard(
    worker: Worker, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = [Charge.perform_later(i) for i in range(3)] + [Report.perform_later()]
    run_all(worker)
    assert pgjobs_cli(db, "failed", "retry", str(jobs[0].job_id), str(jobs[1].job_id)) == 0
    assert states(db.url) == {"ready": 2, "failed": 2}
    assert pgjobs_cli(db, "failed", "retry", str(jobs[0].job_id)) == 1
    assert f"job {jobs[0].job_id} is not failed (it is ready)" in capsys.readouterr().err
    assert pgjobs_cli(db, "failed", "discard", "--all", "--class", Report.job_name) == 0
    assert "discarded 1 failed job" in capsys.readouterr().out
    assert pgjobs_cli(db, "failed", "retry", "--all", "--batch-size", "1") == 0
    assert "retried 1 failed job" in capsys.readouterr().out
    assert states(db.url) == {"ready": 3}
    assert pgjobs_cli(db, "failed", "retry") == 1
    assert "give JOB_IDs or --all" in capsys.readouterr().out
    assert pgjobs_cli(db, "failed", "discard", str(jobs[0].job_id), "--queue", "x") == 1
    assert "filters go with --all" in capsys.readouterr().out


# -- retention ------------------------------------------------------------------------------------


def finish_all(db: Database, ago: timedelta, **where: str) -> None:
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("DELETE FROM pgjobs_ready_executions")
        conn.execute(
            "UPDATE pgjobs_jobs SET finished_at = now() - %s, created_at = now() - %s * 1.01 "
            "WHERE finished_at IS NULL AND "
            "NOT EXISTS (SELECT 1 FROM pgjobs_failed_executions f WHERE f.job_id = id)",
            [ago, ago],
        )


def test_clear_finished_deletes_old_finished_jobs_in_id_ranges(db: Database) -> None:
    pgjobs.perform_all_later([Charge(i) for i in range(2500)])
    finish_all(db, timedelta(days=2))
    pgjobs.perform_all_later([Charge(i) for i in range(10)])
    finish_all(db, timedelta(hours=1))  # recent: kept
    make_failed(5)  # failed long ago: never cleared
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("UPDATE pgjobs_failed_executions SET created_at = now() - interval '9 days'")
        conn.execute(  # gaps in the ids
            "DELETE FROM pgjobs_jobs WHERE id % 7 = 0 AND finished_at < now() - interval '1 day'"
        )
        conn.execute(
            "INSERT INTO pgjobs_job_errors (job_id, attempt, exception_class, message, backtrace)"
            " SELECT id, 1, 'x', 'y', '' FROM pgjobs_jobs"
        )
    before = scalar(
        db.url, "SELECT count(*) FROM pgjobs_jobs WHERE finished_at < now() - interval '1 day'"
    )
    assert pgjobs.clear_finished(older_than="1d", batch_size=300) == before
    assert states(db.url) == {"finished": 10, "failed": 5}
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_job_errors") == 15
    assert pgjobs.clear_finished(older_than=timedelta(minutes=1), batch_size=1000) == 10
    assert pgjobs.clear_finished(older_than=0) == 0
    assert states(db.url) == {"failed": 5}


def test_clear_finished_stops_at_jobs_created_after_the_cutoff(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pgjobs.perform_all_later([Charge(i) for i in range(300)])
    finish_all(db, timedelta(days=3))
    pgjobs.perform_all_later([Charge(i) for i in range(3000)])
    finish_all(db, timedelta(minutes=5))  # the retained history: not walked
    ranges: list[str] = []
    execute = psycopg.Connection.execute

    def counting(self: psycopg.Connection, query: Any, *args: Any, **kwargs: Any) -> Any:
        if "WITH bounds" in str(query):
            ranges.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    assert pgjobs.clear_finished(older_than="1d", batch_size=100) == 300
    assert len(ranges) <= 5  # 3 ranges of old jobs, then the first all-recent one: stop
    assert states(db.url) == {"finished": 3000}


def test_clear_finished_keeps_a_period_key_until_its_window_ends(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)  # the window
    at = hour + timedelta(minutes=5)
    monkeypatch.setattr(clock, "now", lambda: at)
    first = Hourly.perform_later("digest")
    with psycopg.connect(db.url, autocommit=True) as conn:  # it ran and finished at :06
        conn.execute("DELETE FROM pgjobs_ready_executions")
        conn.execute("UPDATE pgjobs_jobs SET finished_at = %s", [hour + timedelta(minutes=6)])
    at = hour + timedelta(minutes=30)
    assert pgjobs.clear_finished(older_than="10m") == 0  # old enough, but its window is open
    at = hour + timedelta(minutes=40)
    again = Hourly.perform_later("digest")
    assert (again.state, again.duplicate_of) == ("duplicate", first.job_id)
    at = hour + timedelta(minutes=61)
    assert pgjobs.clear_finished(older_than="10m") == 1  # the window has ended
    assert Hourly.perform_later("digest").enqueued


def test_clear_finished_by_class(db: Database) -> None:
    pgjobs.perform_all_later([Charge(1), Charge(2)])
    pgjobs.perform_all_later([Report(), Report()])
    finish_all(db, timedelta(days=3))
    assert pgjobs.clear_finished(job_class=Report) == 2
    assert (
        scalar(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE class_name = %s", [Charge.job_name])
        == 2
    )


def test_clear_finished_validates_its_arguments(db: Database) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="older_than"):
        pgjobs.clear_finished(older_than="soon")
    with pytest.raises(pgjobs.ConfigurationError, match="older_than"):
        pgjobs.clear_finished(older_than=-5)
    with pytest.raises(pgjobs.ConfigurationError, match="batch_size"):
        pgjobs.clear_finished(batch_size=0)
    assert pgjobs.clear_finished() == 0  # an empty table


def test_cli_clear_finished(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    pgjobs.perform_all_later([Charge(i) for i in range(30)])
    finish_all(db, timedelta(hours=3))
    assert pgjobs_cli(db, "clear-finished", "--older-than", "4h") == 0
    assert "cleared 0 finished jobs" in capsys.readouterr().out
    assert pgjobs_cli(db, "clear-finished", "--older-than", "2h", "--class", "nope") == 0
    assert pgjobs_cli(db, "clear-finished", "--older-than", "2h", "--batch-size", "7") == 0
    assert "cleared 30 finished jobs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        pgjobs_cli(db, "clear-finished", "--older-than", "soon")


class NulInItsError(pgjobs.Job):
    def perform(self) -> None:
        raise ValueError("a message with a NUL " + chr(0) + " in it")


def test_an_error_with_a_nul_byte_is_recorded_escaped(worker: Worker, db: Database) -> None:
    """PostgreSQL's text cannot hold NUL: the record used to fail, the worker with it, and the
    job was claimed again for ever.  The NUL is written as the two characters \\0."""
    job = NulInItsError.perform_later()
    run_all(worker)
    with psycopg.connect(db.url) as conn:
        row = conn.execute(
            "SELECT e.message FROM pgjobs_job_errors e JOIN pgjobs_jobs j ON j.id = e.job_id"
            " WHERE j.job_id = %s",
            [job.job_id],
        ).fetchone()
    assert row is not None and row[0] == "a message with a NUL \\0 in it"
