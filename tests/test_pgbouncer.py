"""pgjobs through a real PgBouncer (Debian's 1.18) in transaction mode, in front of the test
server: enqueue (single, bulk, transactional, keyed), a drain by two worker processes with a
SIGKILL, concurrency limits, unique jobs and recurring ticks, with LISTEN on the direct URL or
polling without one; migrations on the direct URL; result waiters.

``.ci/run`` installs ``pgbouncer``; without it these tests are skipped (locally).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import pgjobs
from pgjobs import runtime
from pgjobs.db.database import Database
from tests import pgbouncer
from tests.engine_helpers import (
    config_file,
    log_lines,
    pgjobs_cli,
    pgjobs_start,
    scalar,
    states,
    wait_for,
    worker_pids,
)
from tests.sample_jobs import LimitedPerStore, RebuildIndex, Sleepy, noop_job

pytestmark = [
    pytest.mark.committed,
    pytest.mark.skipif(
        pgbouncer.binary() is None and not os.environ.get("PGJOBS_REQUIRE_PGBOUNCER"),
        reason="pgbouncer is not installed (apt-get install pgbouncer; CI requires it)",
    ),
]

TWO_WORKERS = '  - queues: "*"\n    threads: 3\n    processes: 2\n    polling_interval: 0.2'


@pytest.fixture(scope="session")
def bouncer(server_url: str) -> Iterator[str]:
    """PgBouncer in transaction mode: a URL template with ``{dbname}``."""
    # Not under pytest's tmp_path: PgBouncer runs as postgres, which may not enter root's.
    directory = Path(tempfile.mkdtemp(prefix="pgjobs-pgbouncer-"))
    try:
        with pgbouncer.start(server_url, directory) as template:
            yield template
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pooled(db: Database, bouncer: str) -> Iterator[Database]:
    """The test database through PgBouncer, with the direct URL for LISTEN, as the default."""
    url = bouncer.format(dbname=conninfo_to_dict(db.url)["dbname"])
    database = Database(url, transaction_pooling=True, direct_url=db.url)
    previous = runtime.use(database)
    try:
        yield database
    finally:
        runtime.use(previous)
        database.close()
        # PgBouncer keeps its server connections to the database (with the application names
        # of their last clients) after the test: drop them, so that later tests counting
        # pgjobs' connections in pg_stat_activity count only their own.
        name = conninfo_to_dict(db.url)["dbname"]
        with _admin(url) as admin:
            admin.execute(f"KILL {name}")
            admin.execute(f"RESUME {name}")


def clients(url: str) -> set[str]:
    """The application names of PgBouncer's clients (``SHOW CLIENTS`` on its admin console)."""
    with _admin(url) as conn:
        cur = conn.execute("SHOW CLIENTS")
        names = [d.name for d in cur.description or ()]
        return {row[names.index("application_name")] for row in cur.fetchall()}


def _admin(url: str) -> psycopg.Connection[Any]:
    admin = url.rsplit("/", 1)[0] + "/pgbouncer"
    return psycopg.connect(admin, autocommit=True, prepare_threshold=None)


def server_ports(url: str) -> set[int]:
    """The local ports of PgBouncer's server connections (``SHOW SERVERS``)."""
    with _admin(url) as conn:
        cur = conn.execute("SHOW SERVERS")
        names = [d.name for d in cur.description or ()]
        return {int(row[names.index("local_port")]) for row in cur.fetchall()}


def listening(direct_url: str) -> set[int]:
    """The client ports of the listeners' backends of this database whose last statement was a
    LISTEN (a listener going through PgBouncer would be on one of its server connections)."""
    with psycopg.connect(direct_url) as conn:
        rows = conn.execute(
            "SELECT client_port FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'pgjobs-listener' AND query LIKE 'LISTEN %'"
        ).fetchall()
    return {int(row[0]) for row in rows}


def lock_timeouts(url: str) -> set[str]:
    """``SHOW lock_timeout`` through PgBouncer from several clients at once (several server
    connections)."""
    found: set[str] = set()
    clients = [psycopg.connect(url, prepare_threshold=None) for _ in range(4)]
    try:
        for conn in clients:  # each holds a transaction: four server connections
            found.add(str(conn.execute("SHOW lock_timeout").fetchone()[0]))  # type: ignore[index]
    finally:
        for conn in clients:
            conn.close()
    return found


def test_enqueue_through_pgbouncer(db: Database, pooled: Database) -> None:
    for i in range(12):  # more than psycopg's prepare threshold (5) on one connection
        assert noop_job.perform_later(i).enqueued
    pgjobs.perform_all_later([noop_job.build(i) for i in range(100)])
    pgjobs.perform_all_later([noop_job.build("mixed"), noop_job.set(queue="q").build(1)])
    for _ in range(6):  # the statement of many jobs of one class, more than 5 times
        assert noop_job.perform_all_later_args([(1,), (2,)]) == 2
    with psycopg.connect(pooled.url, prepare_threshold=None) as conn:  # the application's
        noop_job.set(connection=conn).perform_later("kept")
        conn.commit()
        noop_job.set(connection=conn).perform_later("rolled back")
        conn.rollback()
    assert RebuildIndex.perform_later("products").enqueued  # unique
    assert RebuildIndex.perform_later("products").state == "duplicate"
    assert [LimitedPerStore.perform_later("s").state for _ in range(3)] == [
        "ready",
        "ready",
        "blocked",
    ]
    assert states(db.url) == {"ready": 130, "blocked": 1}
    # Two clients at once, many statements each: a statement prepared by either would clash on
    # the server connections they share.
    errors: list[BaseException] = []

    def enqueue_many() -> None:
        try:
            for i in range(40):
                noop_job.perform_later(i)
        except BaseException as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=enqueue_many) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_without_transaction_pooling_prepared_statements_break(db: Database, bouncer: str) -> None:
    """The negative control, the issue's failure: what ``transaction_pooling`` prevents.  Two
    clients with psycopg's defaults, one after the other: the first prepares its statements on
    the server connection PgBouncer lends it, the second is lent the same one and prepares the
    same names there."""
    url = bouncer.format(dbname=conninfo_to_dict(db.url)["dbname"])
    with (
        psycopg.connect(url, autocommit=True) as first,
        psycopg.connect(url, autocommit=True) as second,
        pytest.raises(psycopg.Error) as raised,
    ):
        for conn in (first, second):
            for i in range(8):  # past psycopg's prepare_threshold (5)
                noop_job.set(connection=conn).perform_later(i)
    assert type(raised.value).__name__ in {"DuplicatePreparedStatement", "InvalidSqlStatementName"}


def test_workers_drain_through_pgbouncer_and_recover_a_killed_worker(
    db: Database, pooled: Database, tmp_path: Path
) -> None:
    recurring = tmp_path / "recurring.yml"
    recurring.write_text(
        "development:\n  tick:\n    class: tests.sample_jobs:noop_job\n    schedule: every second\n"
    )
    pgjobs.perform_all_later([noop_job.build(i) for i in range(150)])
    jobs = [LimitedPerStore(store, 0.2) for store in ("a", "b") for _ in range(4)]
    pgjobs.perform_all_later(jobs)
    RebuildIndex.perform_later("catalog")
    victim = Sleepy.perform_later(3.0)  # its worker is SIGKILLed while it runs
    log = tmp_path / "jobs.log"
    env = {
        "PGJOBS_TRANSACTION_POOLING": "1",
        "PGJOBS_DIRECT_DATABASE_URL": db.url,
        "PGJOBS_ENV": "development",
    }
    config = config_file(tmp_path, TWO_WORKERS)
    with pgjobs_start(
        pooled.url, config, log, "--recurring-schedule", str(recurring), env=env
    ) as proc:
        wait_for(lambda: any(f"{victim.job_id} start" in x for x in log_lines(log)))
        running = scalar(
            db.url,
            "SELECT p.pid FROM pgjobs_claimed_executions c"
            " JOIN pgjobs_processes p ON p.id = c.process_id"
            " JOIN pgjobs_jobs j ON j.id = c.job_id WHERE j.job_id = %s",
            (victim.job_id,),
        )
        os.kill(running, signal.SIGKILL)
        # Recovered (the attempt counted) and run again: everything finishes.
        wait_for(lambda: set(states(db.url)) == {"finished"}, timeout=60)
        assert sum(f"{victim.job_id} done" in x for x in log_lines(log)) == 1
        wait_for(lambda: len(worker_pids(db.url)) == 2)  # the killed worker was replaced
        # The processes' own connections go through PgBouncer (its admin console lists them)...
        # (the dispatcher's and the scheduler's are the supervisor's: they are its threads)...
        assert {"pgjobs-worker", "pgjobs-supervisor"} <= clients(pooled.url)
        # ...but none of its server connections is LISTENing: the listener uses the direct URL.
        assert len(listening(db.url) - server_ports(pooled.url)) == 1  # one per host
        # No session setting leaked onto PgBouncer's server connections (a worker's SET
        # lock_timeout would: every client after it would get it).
        assert lock_timeouts(pooled.url) == {"0"}
        ticks = wait_for(
            lambda: scalar(db.url, "SELECT count(*) FROM pgjobs_recurring_executions") >= 2
        )
        assert ticks
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    ended: dict[str, int] = {}
    for line in log_lines(log):
        parts = line.split()
        if parts[:2] == ["span", "limited"] and parts[3] == "end":
            ended[parts[2]] = ended.get(parts[2], 0) + 1
    assert ended == {"a": 4, "b": 4}  # each limited job ran to its end once (one may have
    # been killed with the victim's worker and run again)
    executions = "SELECT executions, interruptions FROM pgjobs_jobs WHERE job_id = %s"
    with psycopg.connect(db.url) as conn:
        assert conn.execute(executions, (victim.job_id,)).fetchone() == (2, 1)
    duplicates = scalar(
        db.url,
        "SELECT count(*) FROM (SELECT task_key, run_at FROM pgjobs_recurring_executions"
        " GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    assert duplicates == 0
    output = log.with_suffix(".out").read_text()
    assert "LISTEN cannot work" not in output  # the direct URL served LISTEN


def test_without_a_direct_url_workers_poll(db: Database, pooled: Database, tmp_path: Path) -> None:
    pgjobs.perform_all_later([noop_job.build(i) for i in range(30)])
    log = tmp_path / "jobs.log"
    env = {"PGJOBS_TRANSACTION_POOLING": "1", "PGJOBS_DIRECT_DATABASE_URL": ""}
    with pgjobs_start(pooled.url, config_file(tmp_path), log, env=env):
        wait_for(lambda: states(db.url) == {"finished": 30}, timeout=30)
    output = log.with_suffix(".out").read_text()
    assert output.count("LISTEN cannot work; relying on polling") == 1  # said once


def test_migrate_works_through_pgbouncer_and_leaves_no_lock(
    db: Database,
    pooled: Database,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PGJOBS_TRANSACTION_POOLING", "1")
    monkeypatch.delenv("PGJOBS_DIRECT_DATABASE_URL", raising=False)
    with psycopg.connect(pooled.url, prepare_threshold=None) as other:  # another client meanwhile
        other.execute("SELECT 1")
        assert pgjobs_cli(pooled.url, "migrate") == 0
    assert "is up to date" in capsys.readouterr().err
    # The migration's lock is transaction-level: nothing is left held on a server connection.
    assert scalar(db.url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    pgjobs.migrate(pooled.url)  # the Python API too
    assert scalar(db.url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


def test_durable_claims_false_is_refused_with_transaction_pooling(
    db: Database,
    pooled: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PGJOBS_TRANSACTION_POOLING", "1")
    config = config_file(tmp_path, extra="durable_claims: false\n")
    assert pgjobs_cli(pooled.url, "start", "--config", str(config), "--skip-recurring") == 1
    assert "durable_claims: false is a session setting" in capsys.readouterr().out


def test_results_are_awaited_through_pgbouncer(db: Database, pooled: Database) -> None:
    from pgjobs.operations.results import wait_result

    def finish_soon(job_id: object) -> threading.Thread:
        def finish() -> None:
            time.sleep(0.5)
            with psycopg.connect(db.url, autocommit=True) as conn:
                conn.execute(
                    "WITH r AS (DELETE FROM pgjobs_ready_executions r USING pgjobs_jobs j"
                    " WHERE j.id = r.job_id AND j.job_id = %s RETURNING r.job_id)"
                    " UPDATE pgjobs_jobs SET finished_at = now() WHERE id IN (SELECT job_id FROM r)"
                    " RETURNING pg_notify('pgjobs_done', job_id::text)",
                    (job_id,),
                )

        thread = threading.Thread(target=finish)
        thread.start()
        return thread

    polling = Database(pooled.url, transaction_pooling=True)  # no direct URL: polls
    try:
        for database in (pooled, polling):  # LISTEN on the direct URL, then polling
            handle = noop_job.perform_later("x")
            thread = finish_soon(handle.job_id)
            started = time.monotonic()
            assert wait_result(handle.job_id, timeout=10, database=database) is None
            assert time.monotonic() - started >= 0.4  # it did wait
            thread.join()
    finally:
        polling.close()
