"""Claim floors: a claim starts past the dead head of the ready index, and nothing is left
behind it for long (pgjobs.processes.floors)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

import pgjobs
from pgjobs.config.queue import Config, WorkerConfig
from pgjobs.db.database import Database
from pgjobs.processes.floors import EVERY_QUEUE, NO_FLOOR, Floors, parse
from pgjobs.processes.worker import Worker
from tests.sample_jobs import Record


def test_parse_reads_new_jobs_and_plain_queues() -> None:
    assert parse("mail\t-3\t42") == ("mail", (-3, 42))
    assert parse("mail") == ("mail", None)
    assert parse("*") == ("*", None)


def test_a_claim_sets_the_floor_and_arrivals_lower_it() -> None:
    floors = Floors()
    assert floors.floor(EVERY_QUEUE) == NO_FLOOR
    floors.claimed(EVERY_QUEUE, (0, 100))
    assert floors.floor(EVERY_QUEUE) == (0, 100)
    floors.notified("mail", (0, 90))  # committed late, below the floor
    floors.claimed(EVERY_QUEUE, (0, 120))  # ... while that claim was in flight
    assert floors.floor(EVERY_QUEUE) == (0, 90)
    floors.claimed(EVERY_QUEUE, (0, 130))
    floors.notified("mail", None)  # a retried job: its id is unknown
    assert floors.floor(EVERY_QUEUE) == NO_FLOOR
    floors.claimed("mail", (0, 5))
    floors.claimed(EVERY_QUEUE, (0, 5))
    floors.notified("*", None)
    assert floors.floor("mail") == floors.floor(EVERY_QUEUE) == NO_FLOOR


def test_floors_are_dropped_every_rescan_interval() -> None:
    floors = Floors(rescan_every=0.0)
    floors.claimed("q", (0, 10))
    assert floors.floor("q") == NO_FLOOR


@pytest.fixture
def worker(db: Database) -> Iterator[Worker]:
    made = Worker(Database(db.url), Config(), WorkerConfig(queues=("*",), threads=10))
    made.register()
    yield made
    made.stop()
    made.close()


@pytest.mark.committed
def test_a_job_behind_the_floor_is_claimed_after_its_notification(
    db: Database, worker: Worker
) -> None:
    pgjobs.perform_all_later([Record(str(i)) for i in range(3)])
    assert len(worker.claim(1)) == 1
    assert len(worker.claim(1)) == 1  # the floor is now the second job
    with psycopg.connect(db.url, autocommit=True) as conn:  # a job re-queued with an old id
        conn.execute(
            """WITH m AS (DELETE FROM pgjobs_claimed_executions
                          WHERE job_id = (SELECT min(job_id) FROM pgjobs_claimed_executions)
                          RETURNING job_id)
               INSERT INTO pgjobs_ready_executions (job_id, queue_name, priority)
               SELECT job_id, 'default', 0 FROM m"""
        )
    assert len(worker.claim(5)) == 1  # only the one above the floor
    assert worker.claim(5) == []  # the re-queued one is behind it ...
    worker.wanted("*")  # ... until its notification
    assert len(worker.claim(5)) == 1


@pytest.mark.committed
def test_a_more_urgent_new_job_lowers_the_floor(db: Database, worker: Worker) -> None:
    pgjobs.perform_all_later([Record(str(i)) for i in range(3)])
    assert len(worker.claim(1)) == 1
    urgent = Record.set(priority=-5).perform_later("urgent")
    worker.wanted(f"default\t-5\t{urgent.id}")
    assert worker.claim(1)[0].job_id == urgent.job_id


@pytest.mark.committed
def test_the_claim_starts_its_index_scan_at_the_floor(db: Database) -> None:
    from pgjobs.store import ready

    with psycopg.connect(db.url) as conn:
        plan = conn.execute(
            "EXPLAIN " + db.sql(ready.CLAIM_ALL),
            {"finished": "{}", "process_id": 0, "now": None, "limit": 10,
             "floor_priority": 0, "floor_id": 1000},
        ).fetchall()  # fmt: skip
        conn.rollback()
    text = "\n".join(r[0] for r in plan)
    assert "Index Cond: (ROW(priority, job_id) >= ROW(" in text, text
