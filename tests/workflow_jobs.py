"""Jobs of the batch and workflow tests (imported by tests.sample_jobs, so that worker
subprocesses started with ``--app tests.sample_jobs`` know them)."""

from __future__ import annotations

import os
import time
from typing import Any

import pgjobs


def _log_line(line: str) -> None:
    path = os.environ.get("PGJOBS_TEST_LOG")
    if path:
        with open(path, "a") as fh:  # O_APPEND: one short write per line is atomic
            fh.write(line + "\n")


class Part(pgjobs.Job):
    """Logs "part <tag> <start> <end>" (wall-clock times); sleeps ``seconds``; returns ``tag``."""

    job_name = "tests.Part"

    def perform(self, tag: str, seconds: float = 0.0) -> str:
        start = time.time()
        if seconds:
            time.sleep(seconds)
        _log_line(f"part {tag} {start} {time.time()}")
        return tag


class Broken(pgjobs.Job):
    """Fails for good at once (no retry rule)."""

    job_name = "tests.Broken"

    def perform(self, tag: str = "") -> None:
        _log_line(f"broken {tag}")
        raise RuntimeError(f"broken {tag}")


class Callback(pgjobs.Job):
    """A batch callback: logs "callback <tag> <batch_id> <state> <succeeded> <failed>"."""

    job_name = "tests.Callback"

    def perform(self, batch: pgjobs.BatchInfo, tag: str = "") -> None:
        _log_line(f"callback {tag} {batch.batch_id} {batch.state} {batch.succeeded} {batch.failed}")


class FanOut(pgjobs.Job):
    """Adds ``n`` Parts to its own batch while it runs."""

    job_name = "tests.FanOut"

    def perform(self, n: int) -> None:
        self.add_to_batch(*(Part.build(f"child-{i}") for i in range(n)))


class ReadsDependencies(pgjobs.Job):
    """Logs "deps <tag> <results>" and returns them."""

    job_name = "tests.ReadsDependencies"

    def perform(self, tag: str) -> list[Any]:
        results = self.dependency_results()
        _log_line(f"deps {tag} {','.join(map(str, results))}")
        return results


class KillsWorkerOnce(pgjobs.Job):
    """SIGKILLs its worker on its first run (after logging "kill <tag>"); succeeds after."""

    job_name = "tests.KillsWorkerOnce"

    def perform(self, tag: str) -> str:
        import signal

        if not os.path.exists(_marker(tag)):
            open(_marker(tag), "w").close()
            _log_line(f"kill {tag}")
            os.kill(os.getpid(), signal.SIGKILL)
        _log_line(f"part {tag} {time.time()} {time.time()}")
        return tag


def _marker(tag: str) -> str:
    return os.environ.get("PGJOBS_TEST_LOG", "/tmp/pgjobs-test") + f".killed-{tag}"
