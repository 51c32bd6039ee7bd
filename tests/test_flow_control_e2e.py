"""Ordered keys and rate limits with real ``pgjobs start`` processes (the issue's tests): every
key's jobs ran strictly in order and never overlapped; a rate limit of 10/s over 300 jobs never
had more than 10 starts in any second, ran all of them, and took ~30 s."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from pathlib import Path

import pytest

import pgjobs
from pgjobs.db.database import Database
from tests.engine_helpers import config_file, log_lines, pgjobs_start, states, wait_for
from tests.sample_jobs import OrderedPerAccount, RatePerAccount

pytestmark = [pytest.mark.committed, pytest.mark.slow]


def _workers(processes: int, threads: int) -> str:
    return (
        f'  - queues: "*"\n    threads: {threads}\n    processes: {processes}\n'
        "    polling_interval: 0.1"
    )


def test_four_workers_run_every_keys_jobs_strictly_in_order(db: Database, tmp_path: Path) -> None:
    keys, per_key = 20, 50
    jobs = [
        OrderedPerAccount(f"k{k:02d}", seq, 0.002) for seq in range(per_key) for k in range(keys)
    ]
    pgjobs.perform_all_later(jobs)  # interleaved: k00/0, k01/0, ... k19/0, k00/1, ...
    assert states(db.url) == {"ready": keys, "blocked": keys * (per_key - 1)}
    log = tmp_path / "jobs.log"
    with pgjobs_start(db.url, config_file(tmp_path, _workers(4, 5)), log):
        wait_for(lambda: states(db.url) == {"finished": keys * per_key}, timeout=120)
    runs: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
    for line in log_lines(log):
        kind, key, seq, what, at = line.split()
        if kind == "ordered":
            runs[key].append((int(seq), what, float(at)))
    assert len(runs) == keys
    for key, events in runs.items():
        events.sort(key=lambda e: (e[2], e[1] == "start"))  # by time; an end before a start
        # start 0, end 0, start 1, end 1, ...: in order, one at a time.
        expected = [(seq, what) for seq in range(per_key) for what in ("start", "end")]
        assert [(seq, what) for seq, what, _ in events] == expected, key


def test_a_rate_limit_of_ten_a_second_holds_across_three_workers(
    db: Database, tmp_path: Path
) -> None:
    pgjobs.perform_all_later([RatePerAccount("acct", seq) for seq in range(300)])
    log = tmp_path / "jobs.log"
    with pgjobs_start(db.url, config_file(tmp_path, _workers(3, 5)), log):
        wait_for(lambda: states(db.url) == {"finished": 300}, timeout=90, interval=0.5)
    starts = sorted(float(line.split()[3]) for line in log_lines(log) if line.startswith("rate"))
    assert len(starts) == 300  # all ran, once each
    # No window of one second holds more than 10 starts: the window starting at each start.
    busiest = max(bisect.bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts))
    assert busiest <= 10
    took = starts[-1] - starts[0]
    # 30 periods of 10; the last ten start at the beginning of the 30th second.
    assert 30 * 0.8 <= took <= 30 * 1.2, took


def test_rate_limited_jobs_of_other_keys_do_not_wait_for_a_busy_key(
    db: Database, tmp_path: Path
) -> None:
    pgjobs.perform_all_later([RatePerAccount("busy", seq) for seq in range(40)])
    log = tmp_path / "jobs.log"
    with pgjobs_start(db.url, config_file(tmp_path, _workers(1, 5)), log):
        wait_for(lambda: states(db.url).get("finished", 0) >= 10)
        enqueued = time.time()
        RatePerAccount.perform_later("quiet", 0)
        wait_for(lambda: any(" quiet " in line for line in log_lines(log)), timeout=10)
        (started,) = [float(x.split()[3]) for x in log_lines(log) if " quiet " in x]
        assert started - enqueued < 0.5  # not behind the busy key's line
        wait_for(lambda: states(db.url) == {"finished": 41}, timeout=30, interval=0.5)
