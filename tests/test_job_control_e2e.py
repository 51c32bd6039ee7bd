"""Job control with real ``pgjobs start`` processes: each guarantee of the issue, end to end.

Results cross processes (sync, async, a failure); running jobs are cancelled from this process
within 2 s; progress is visible here while the job runs elsewhere; stepped jobs survive SIGKILL
and SIGTERM (sync and async) without repeating a completed step or a written cursor; snoozes
(sync and async) use no attempts; cancel and claim race on hundreds of jobs with exactly one
winner each.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import pgjobs
from pgjobs.db.database import Database
from tests.control_jobs import (
    Compute,
    ComputeAsync,
    Cooperative,
    CooperativeAsync,
    Explodes,
    Records,
    Reports,
    Snoozes,
    Stepped,
    SteppedAsync,
)
from tests.engine_helpers import config_file, log_lines, pgjobs_start, states, wait_for, worker_pids
from tests.sample_jobs import SnoozesAsync, SteppedAsyncSlow

pytestmark = pytest.mark.committed
WORKERS = '  - queues: "*"\n    threads: 5\n    processes: 2\n    polling_interval: 0.2'


def info(job: pgjobs.EnqueuedJob) -> pgjobs.JobInfo:
    return pgjobs.get_job(job.job_id)


def test_results_cross_processes(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    sync, in_async, failing = (
        Compute.perform_later(12),
        ComputeAsync.perform_later(1),
        Explodes.perform_later(),
    )
    with pgjobs_start(db.url, config_file(tmp_path), log) as proc:
        assert sync.result(timeout=30)["square"] == 144
        assert asyncio.run(in_async.result_async(timeout=30)) == [1, 2]
        with pytest.raises(pgjobs.JobFailed, match="no such report"):
            failing.result(timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_running_jobs_are_cancelled_from_another_process_within_2_seconds(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    sync, in_async = Cooperative.perform_later("sync"), CooperativeAsync.perform_later("async")
    with pgjobs_start(db.url, config_file(tmp_path, WORKERS), log) as proc:
        wait_for(lambda: {"sync start", "async start"} <= set(log_lines(log)))
        for job in (sync, in_async):
            asked = time.monotonic()
            assert pgjobs.cancel(job.job_id) == "cancelling"
            with pytest.raises(pgjobs.JobCancelled):
                job.result(timeout=10)
            assert time.monotonic() - asked < 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert sorted(log_lines(log)) == [
        "async after_cancel",
        "async start",
        "sync after_cancel",
        "sync start",
    ]
    assert [info(j).state for j in (sync, in_async)] == ["cancelled", "cancelled"]


def test_progress_is_visible_from_another_process_while_the_job_runs(
    db: Database, tmp_path: Path
) -> None:
    job = Reports.perform_later(10, 3.0)
    with pgjobs_start(db.url, config_file(tmp_path), tmp_path / "jobs.log") as proc:
        running = wait_for(lambda: (i := info(job)).progress is not None and i)
        assert running.state == "running" and running.progress.total == 10
        assert job.result(timeout=30) is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    progress = info(job).progress
    assert progress is not None and (progress.done, progress.message) == (10, "all done")


def _items(log: Path, job: pgjobs.EnqueuedJob) -> Counter[str]:
    prefix = f"{job.job_id} "
    return Counter(line[len(prefix) :] for line in log_lines(log) if line.startswith(prefix))


def test_a_stepped_job_killed_mid_step_resumes_from_its_last_checkpoint(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    job = Stepped.perform_later(40, 0.1)
    with pgjobs_start(db.url, config_file(tmp_path), log) as proc:
        saved = wait_for(lambda: (i := info(job)).step == "items" and (i.cursor or 0) >= 12 and i)
        cursor = saved.cursor
        (pid,) = worker_pids(db.url)
        os.kill(pid, signal.SIGKILL)
        assert job.result(timeout=60) == "stepped"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    seen = _items(log, job)
    assert seen["prepare"] == 1 and seen["finish"] == 1  # completed steps never ran again
    assert all(seen[f"item {n}"] == 1 for n in range(cursor + 1))  # nor written positions
    assert all(seen[f"item {n}"] >= 1 for n in range(40))
    done = info(job)
    # The crashed run counts as an attempt and an interruption (toward max_interruptions and
    # retry attempts), and records no error: it did not fail.
    assert (done.state, done.attempts, done.interruptions) == ("finished", 2, 1)
    assert done.errors == () and done.error_class is None
    assert done.steps_completed == ("prepare", "items", "finish")


def test_a_stepped_job_stops_at_its_next_checkpoint_on_sigterm_and_resumes(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    job = Stepped.perform_later(30, 0.1)
    config = config_file(tmp_path, shutdown_timeout=30)
    with pgjobs_start(db.url, config, log) as proc:
        wait_for(lambda: _items(log, job)["item 5"])
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - stopping < 5  # not shutdown_timeout: it stopped at a checkpoint
    given_back = info(job)
    assert (given_back.state, given_back.attempts, given_back.step) == ("ready", 0, "items")
    last = max(int(k.split()[1]) for k in _items(log, job) if k.startswith("item"))
    assert given_back.cursor == last  # written on the way out
    with pgjobs_start(db.url, config, log) as proc:
        assert job.result(timeout=60) == "stepped"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    seen = _items(log, job)
    assert seen["prepare"] == 1 and seen["finish"] == 1
    assert [seen[f"item {n}"] for n in range(30)] == [1] * 30  # nothing repeated
    assert (info(job).attempts, info(job).interruptions) == (1, 0)


def test_an_async_stepped_job_stops_at_its_next_checkpoint_on_sigterm_and_resumes(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    job = SteppedAsyncSlow.perform_later(30, 0.1)
    config = config_file(tmp_path, shutdown_timeout=30)
    with pgjobs_start(db.url, config, log) as proc:
        wait_for(lambda: _items(log, job)["item 5"])
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - stopping < 5  # not shutdown_timeout: it stopped at a checkpoint
    given_back = info(job)
    assert (given_back.state, given_back.attempts, given_back.step) == ("ready", 0, "items")
    last = max(int(k.split()[1]) for k in _items(log, job) if k.startswith("item"))
    assert given_back.cursor == last  # written on the way out
    assert given_back.steps_completed == ("prepare",)
    with pgjobs_start(db.url, config, log) as proc:
        assert job.result(timeout=60) == "stepped"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    seen = _items(log, job)
    assert seen["prepare"] == 1 and seen["finish"] == 1
    assert [seen[f"item {n}"] for n in range(30)] == [1] * 30  # nothing repeated
    done = info(job)
    assert (done.attempts, done.interruptions, done.errors) == (1, 0, ())


def test_an_async_stepped_job_runs_its_steps(db: Database, tmp_path: Path) -> None:
    job = SteppedAsync.perform_later(5)
    with pgjobs_start(db.url, config_file(tmp_path), tmp_path / "jobs.log") as proc:
        assert job.result(timeout=30) == 10
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert info(job).steps_completed == ("add",)


def test_snoozed_jobs_do_not_use_up_attempts(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    job = Snoozes.perform_later(2, str(log))  # snoozes twice, then finishes
    with pgjobs_start(db.url, config_file(tmp_path), log) as proc:
        assert job.result(timeout=30) == "ran 3 times"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    done = info(job)
    assert (done.attempts, done.errors) == (1, ())
    assert [line.split(" ", 1)[1] for line in log_lines(log)] == ["run 1", "run 1", "run 1"]


def test_an_async_job_snoozes_without_using_an_attempt(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    job = SnoozesAsync.perform_later(2, str(log))  # snoozes twice, then finishes
    with pgjobs_start(db.url, config_file(tmp_path), log) as proc:
        assert asyncio.run(job.result_async(timeout=30)) == "ran 3 times"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    done = info(job)
    assert (done.attempts, done.interruptions, done.errors) == (1, 0, ())
    assert [line.split(" ", 1)[1] for line in log_lines(log)] == ["run 1", "run 1", "run 1"]


def test_cancel_and_claim_race_with_exactly_one_winner(db: Database, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    workers = '  - queues: "*"\n    threads: 4\n    processes: 2\n    polling_interval: 0.05'
    answers: dict[str, str] = {}
    with pgjobs_start(db.url, config_file(tmp_path, workers), log) as proc:
        wait_for(lambda: len(worker_pids(db.url)) == 2)
        for _ in range(4):  # rounds: each races the workers draining it
            jobs = pgjobs.perform_all_later([Records(f"r{i}", 0.01) for i in range(150)])
            by_tag = {f"r{i}": j for i, j in enumerate(jobs)}

            def cancel(tags: list[str], by_tag: dict[str, Any] = by_tag) -> None:
                for tag in tags:
                    answers[str(by_tag[tag].job_id)] = pgjobs.cancel(by_tag[tag].job_id)

            # One thread from the head of the queue, racing the claims; one from its tail.
            tags = list(by_tag)
            halves = (tags[: len(tags) // 2], tags[len(tags) // 2 :][::-1])
            threads = [threading.Thread(target=cancel, args=(half,)) for half in halves]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            wait_for(lambda: set(states(db.url)) <= {"finished"}, timeout=30)
            started = {line.split()[0] for line in log_lines(log)}
            for tag, job in by_tag.items():
                answer, state = answers[str(job.job_id)], info(job).state
                if answer == "cancelled":
                    assert tag not in started and state == "cancelled", (tag, answer, state)
                else:
                    assert answer in ("cancelling", "finished"), answer
                    assert (tag in started) == (state == "finished"), (tag, answer, state)
            log.unlink(missing_ok=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    outcomes = Counter(answers.values())
    assert outcomes["cancelled"] and outcomes["cancelling"] + outcomes["finished"], outcomes
