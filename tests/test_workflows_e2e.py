"""Batches and workflows with real ``pgjobs start`` processes: the guarantees of docs/workflows.md.

- callbacks run exactly once, also when the last two jobs of a batch end at the same moment on
  two worker processes, and when the worker running a batch's last job is SIGKILLed;
- a dependent never starts before all its dependencies succeeded, none is lost when a worker
  dies mid-workflow, and a job reads its dependencies' results (also with
  ``preserve_finished_jobs: false``, which keeps a workflow's jobs until clear_finished);
- a job adds jobs to its own batch while it runs, and on_finish waits for them.

(Crashes of PostgreSQL itself are the chaos suite's: tests/chaos.)
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

import pgjobs
from pgjobs.db.database import Database
from tests.engine_helpers import config_file, log_lines, pgjobs_start, scalar, states, wait_for
from tests.workflow_jobs import Callback, FanOut, KillsWorkerOnce, Part, ReadsDependencies

pytestmark = pytest.mark.committed
WORKERS = '  - queues: "*"\n    threads: 4\n    processes: 2\n    polling_interval: 0.2'


def _parts(log: Path) -> dict[str, tuple[float, float]]:
    """Each Part's (start, end) by tag (its last run, if it ran twice)."""
    found = {}
    for line in log_lines(log):
        if line.startswith("part "):
            _, tag, start, end = line.split()
            found[tag] = (float(start), float(end))
    return found


def _callbacks(log: Path) -> Counter[tuple[str, str]]:
    return Counter(
        (line.split()[1], line.split()[2]) for line in log_lines(log) if line.startswith("callback")
    )


def _stop(proc: object) -> None:
    proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    assert proc.wait(timeout=20) == 0  # type: ignore[attr-defined]


def test_callbacks_run_once_when_the_last_jobs_end_together_on_two_workers(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    batches = []
    for n in range(24):
        with pgjobs.batch(on_finish=Callback.build("finish"), on_success=Callback.build("ok")) as b:
            # Two jobs of equal length, claimed together: they end within a few ms, each on
            # whichever worker (of two processes) claimed it.
            b.add(Part.build(f"{n}a", 0.3), Part.build(f"{n}b", 0.3))
        batches.append(b)
    with pgjobs_start(db.url, config_file(tmp_path, WORKERS), log) as proc:
        wait_for(lambda: sum(_callbacks(log).values()) >= 48, timeout=60)
        _stop(proc)
    calls = _callbacks(log)
    for b in batches:
        assert calls[("finish", str(b.batch_id))] == 1
        assert calls[("ok", str(b.batch_id))] == 1
        found = pgjobs.get_batch(b.batch_id)
        assert (found.state, found.succeeded, found.pending) == ("succeeded", 2, 0)
    # Ends on both processes really were concurrent for some batches.
    ends = _parts(log)
    close = [n for n in range(24) if abs(ends[f"{n}a"][1] - ends[f"{n}b"][1]) < 0.05]
    assert close, "no batch had its two jobs end together: the race was not exercised"
    assert scalar(db.url, "SELECT count(*) FROM pgjobs_jobs WHERE class_name = %s",
                  (Callback.job_name,)) == 48  # fmt: skip


def test_the_callback_runs_once_when_the_worker_running_the_last_job_is_killed(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    with pgjobs.batch(on_finish=Callback.build("finish")) as b:
        b.add(Part.build("first"), KillsWorkerOnce.build("last"))
    with pgjobs_start(db.url, config_file(tmp_path, WORKERS), log) as proc:
        wait_for(lambda: "kill last" in log_lines(log), timeout=30)
        # Its worker died holding it: the supervisor starts another, the job is recovered and
        # runs again, and its end — counted once — writes the callback.
        wait_for(lambda: _callbacks(log), timeout=60)
        _stop(proc)
    assert _callbacks(log) == Counter({("finish", str(b.batch_id)): 1})
    found = pgjobs.get_batch(b.batch_id)
    assert (found.succeeded, found.failed, found.state) == (2, 0, "succeeded")


def test_dependents_never_start_before_their_dependencies_succeeded(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    graph = {  # tag: (seconds, after)
        "a": (0.3, []),
        "b": (0.1, []),
        "c": (0.2, ["a"]),
        "d": (0.0, ["a", "b"]),
        "e": (0.2, ["c", "d"]),
        "f": (0.0, ["e"]),
        "g": (0.1, ["b"]),
    }
    with pgjobs.workflow(on_success=Callback.build("done")) as wf:
        built = {}
        for tag, (seconds, after) in graph.items():
            job = KillsWorkerOnce.build(tag) if tag == "c" else Part.build(tag, seconds)
            built[tag] = wf.add(job, after=[built[t] for t in after])
        reader = wf.add(ReadsDependencies.build("reader"), after=[built["f"], built["g"]])
    with pgjobs_start(db.url, config_file(tmp_path, WORKERS), log) as proc:
        wait_for(lambda: _callbacks(log), timeout=60)
        _stop(proc)
    runs = _parts(log)
    for tag, (_, after) in graph.items():
        for dependency in after:
            assert runs[tag][0] >= runs[dependency][1], f"{tag} started before {dependency} ended"
    assert "kill c" in log_lines(log)  # c's first run died with its worker; e waited for c's rerun
    assert "deps reader f,g" in log_lines(log)
    assert pgjobs.get_job(reader.job_id).result == ["f", "g"]
    assert set(states(db.url)) == {"finished"}
    assert pgjobs.get_batch(wf.batch_id).succeeded == len(graph) + 1


def test_a_job_fans_out_into_its_own_batch_and_on_finish_waits_for_all(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    with pgjobs.batch(on_finish=Callback.build("finish")) as b:
        b.add(FanOut.build(5))
    with pgjobs_start(db.url, config_file(tmp_path, WORKERS), log) as proc:
        wait_for(lambda: _callbacks(log), timeout=60)
        _stop(proc)
    assert sorted(_parts(log)) == [f"child-{i}" for i in range(5)]
    found = pgjobs.get_batch(b.batch_id)
    assert (found.total, found.succeeded) == (6, 6)
    # The callback saw the whole batch: written only after the last child ended.
    assert [line.split()[3:] for line in log_lines(log) if line.startswith("callback")] == [
        ["succeeded", "6", "0"]
    ]


def test_without_preserved_jobs_a_workflow_keeps_its_jobs_for_its_dependents(
    db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    first, second = Part.build("x"), Part.build("y")
    with pgjobs.workflow() as wf:
        wf.add(first)
        wf.add(second)
        reader = wf.add(ReadsDependencies.build("r"), after=[first, second])
    plain = Part.perform_later("plain")
    config = config_file(tmp_path, WORKERS, extra="preserve_finished_jobs: false\n")
    with pgjobs_start(db.url, config, log) as proc:
        wait_for(lambda: "deps r x,y" in log_lines(log), timeout=60)
        wait_for(lambda: pgjobs.get_batch(wf.batch_id).state == "succeeded", timeout=30)
        _stop(proc)
    assert pgjobs.get_job(reader.job_id).result == ["x", "y"]
    with pytest.raises(pgjobs.JobNotFound):  # a job in no workflow is deleted as it ends
        pgjobs.get_job(plain.job_id)
