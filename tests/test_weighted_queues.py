"""Weighted queues (issue 20): ``queues: {critical: 6, default: 3, low: 1}`` picks queues in
proportion to their weights while all have ready jobs; an empty queue's share goes to the others."""

from __future__ import annotations

import random
import re
import signal
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgjobs
from pgjobs.config.queue import Config, WorkerConfig, parse_config
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError
from pgjobs.processes.worker import Worker
from tests.engine_helpers import pgjobs_start, scalar, wait_for
from tests.sample_jobs import Record

WEIGHTS = {"critical": 6, "default": 3, "low": 1}


def test_a_mapping_of_queues_to_weights_is_weighted() -> None:
    config = parse_config({"workers": [{"queues": WEIGHTS, "threads": 5}]})
    worker = config.workers[0]
    assert (worker.queues, worker.weights) == (("critical", "default", "low"), (6, 3, 1))
    assert parse_config({"workers": [{"queues": ["a", "b"]}]}).workers[0].weights is None


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        (
            {"critical": 0},
            "workers[0].queues.critical: a queue's weight must be a positive integer",
        ),
        ({"critical": "high"}, "a queue's weight must be a positive integer, got 'high'"),
        ({"reports*": 2}, "weighted queues are named queues: 'reports*' is a pattern"),
        ({}, "workers[0].queues: must name at least one queue"),
    ],
)
def test_bad_weights_are_named(queues: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        parse_config({"workers": [{"queues": queues}]})


def test_weights_are_given_with_the_queues_not_alone() -> None:
    with pytest.raises(ConfigurationError, match="weights: unknown key"):
        parse_config({"workers": [{"queues": ["a"], "weights": [1]}]})


@pytest.fixture
def weighted_worker(db: Database) -> Iterator[Worker]:
    config = WorkerConfig(queues=tuple(WEIGHTS), weights=tuple(WEIGHTS.values()), threads=100)
    worker = Worker(Database(db.url), Config(heartbeat_interval=30), config)
    worker.register()
    yield worker
    worker.stop()
    worker.close()


def _fill(per_queue: dict[str, int]) -> None:
    pgjobs.perform_all_later(
        [Record.set(queue=q).build(q) for q, n in per_queue.items() for _ in range(n)]
    )


@pytest.mark.committed
def test_claims_follow_the_weights_while_every_queue_is_full(weighted_worker: Worker) -> None:
    random.seed(7)
    _fill({q: 1000 for q in WEIGHTS})
    taken: Counter[str] = Counter()
    for _ in range(30):  # 30 passes of 10 jobs, as a busy worker claims
        taken.update(job.queue_name for job in weighted_worker.claim(10))
    assert sum(taken.values()) == 300
    assert abs(taken["critical"] / 300 - 0.6) < 0.08
    assert abs(taken["default"] / 300 - 0.3) < 0.08
    assert abs(taken["low"] / 300 - 0.1) < 0.06


@pytest.mark.committed
def test_an_empty_queue_gives_its_share_to_the_others(weighted_worker: Worker) -> None:
    _fill({"default": 50, "low": 50})  # critical, the heaviest, is empty
    claimed = weighted_worker.claim(40)
    assert len(claimed) == 40  # every slot filled from the queues that have jobs
    assert {job.queue_name for job in claimed} <= {"default", "low"}
    pgjobs.Queue("default").pause()
    weighted_worker._paused_at = float("-inf")
    assert {job.queue_name for job in weighted_worker.claim(40)} == {"low"}


@pytest.mark.committed
def test_a_real_worker_starts_jobs_in_proportion(db: Database, tmp_path: Path) -> None:
    """Issue 20's test: with all three queues full, the share of the first 3,000 started jobs is
    within ±5 points of 60/30/10."""
    config = tmp_path / "queue.yml"
    config.write_text(
        textwrap.dedent(
            """
            heartbeat_interval: 0.5
            dispatchers: []
            workers:
              - queues: {critical: 6, default: 3, low: 1}
                threads: 10
                processes: 2
                polling_interval: 0.05
            """
        )
    )
    _fill({q: 3000 for q in WEIGHTS})
    with pgjobs_start(db.url, config, tmp_path / "jobs.log") as proc:
        wait_for(
            lambda: (
                scalar(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL")
                >= 3000
            )
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    with psycopg.connect(db.url) as conn:
        first = conn.execute(
            "SELECT queue_name FROM pgjobs_jobs WHERE finished_at IS NOT NULL "
            "ORDER BY finished_at, id LIMIT 3000"
        ).fetchall()
    shares = Counter(q for (q,) in first)
    for queue, weight in WEIGHTS.items():
        assert abs(shares[queue] / 3000 - weight / 10) <= 0.05, shares
