"""Concurrency limits with real ``pgjobs start`` processes: limits hold across workers, blocked
jobs all run, and a killed holder's slot comes back after ``duration``."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from pathlib import Path

import pytest

import pgjobs
from pgjobs.config.queue import Config, DispatcherConfig
from pgjobs.db.database import Database
from pgjobs.processes.dispatcher import Dispatcher
from tests.engine_helpers import config_file, log_lines, pgjobs_start, states, wait_for
from tests.sample_jobs import LimitedPerStore, OneAtATime

pytestmark = [pytest.mark.committed, pytest.mark.slow]

THREE_WORKERS = '  - queues: "*"\n    threads: 4\n    processes: 3\n    polling_interval: 0.1'


def spans(log: Path, kind: str) -> dict[str, list[tuple[float, float]]]:
    """(start, end) of every finished execution, by key."""
    starts: dict[str, list[float]] = defaultdict(list)
    result: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in log_lines(log):
        parts = line.split()
        if parts[0] != "span" or parts[1] != kind:
            continue
        key, what, at = parts[2], parts[3], float(parts[4])
        if what == "start":
            starts[key].append(at)
        else:
            result[key].append((starts[key].pop(0), at))
    return result


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def test_three_workers_never_run_more_than_the_limit(db: Database, tmp_path: Path) -> None:
    jobs = [LimitedPerStore(store, 0.3) for store in ("a", "b") for _ in range(8)]
    results = pgjobs.perform_all_later(jobs)
    assert sorted(r.state for r in results) == ["blocked"] * 12 + ["ready"] * 4
    log = tmp_path / "jobs.log"
    with pgjobs_start(db.url, config_file(tmp_path, THREE_WORKERS), log):
        wait_for(lambda: states(db.url) == {"finished": 16}, timeout=60)
    by_key = spans(log, "limited")
    assert {k: len(v) for k, v in by_key.items()} == {"a": 8, "b": 8}
    # 12 workers' threads were free; the limit, not the capacity, kept each store at 2.
    assert most_at_once(by_key["a"]) == 2
    assert most_at_once(by_key["b"]) == 2


def test_a_killed_holders_slot_comes_back_after_duration(db: Database, tmp_path: Path) -> None:
    OneAtATime.perform_later(600)  # holds the only slot, then its whole host dies
    OneAtATime.perform_later(0)
    log = tmp_path / "jobs.log"
    with pgjobs_start(db.url, config_file(tmp_path), log) as proc:
        wait_for(lambda: any("start" in line for line in log_lines(log)))
        os.killpg(proc.pid, signal.SIGKILL)  # supervisor and workers: nobody recovers anything
        proc.wait()
    assert states(db.url) == {"claimed": 1, "blocked": 1}
    # No process of that host will heartbeat again.  Once the semaphore is `duration` old (2 s
    # for OneAtATime) and its holder's heartbeat is older than the alive threshold (3 s here), a
    # dispatcher's maintenance forgets the semaphore and unblocks the waiting job.
    config = Config(heartbeat_interval=1, process_alive_threshold=3)
    dispatcher = Dispatcher(Database(db.url), config, DispatcherConfig())
    wait_for(lambda: dispatcher.maintain()[1].readied == 1, timeout=15, interval=0.5)
    assert states(db.url) == {"claimed": 1, "ready": 1}
    dispatcher.close()
    # A new host runs the unblocked job, prunes the dead processes and recovers the killed job
    # (re-queued); it then runs too (0 s would be quick, 600 s is killed by the stop below).
    with pgjobs_start(db.url, config_file(tmp_path), log):
        wait_for(lambda: states(db.url).get("finished") == 1, timeout=30)
        wait_for(lambda: "claimed" in states(db.url) and "ready" not in states(db.url))
    final = states(db.url)
    assert sum(final.values()) == 2 and "lost" not in final
