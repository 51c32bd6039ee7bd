"""A real ``pgjobs start --app``: the worker's ``process`` span continues the enqueuer's trace."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from pgjobs.db.database import Database
from tests.engine_helpers import config_file, pgjobs_start, scalar, wait_for
from tests.otel_app import TracedWork
from tests.test_otel import ids, instrumented

pytestmark = [pytest.mark.committed, pytest.mark.slow]


def exported(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_worker_continues_the_trace_of_the_enqueue(db: Database, tmp_path: Path) -> None:
    with instrumented() as traced, traced.span("request"):
        job = TracedWork.perform_later("ada")  # committed: the worker sees it
    trace_id, send_id = ids(traced.one("send traced"))
    spans = tmp_path / "spans.jsonl"
    finished = "SELECT finished_at IS NOT NULL FROM pgjobs_jobs WHERE job_id = %s"
    app = ("--app", "tests.otel_app")  # the last --app wins over the helper's
    env = {"PGJOBS_TEST_SPANS": str(spans)}
    with pgjobs_start(db.url, config_file(tmp_path), tmp_path / "log", *app, env=env) as proc:
        wait_for(lambda: scalar(db.url, finished, [job.job_id]))
        assert exported(spans) == []  # batched: nothing is exported before the flush at stop
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    (process,) = [s for s in exported(spans) if s["name"] == "process traced"]
    assert (process["trace_id"], process["parent_span_id"]) == (
        f"{trace_id:032x}",
        f"{send_id:016x}",
    )
    assert process["kind"] == "CONSUMER" and process["status"] == "UNSET"
    assert process["attributes"]["messaging.message.id"] == str(job.job_id)
    assert process["attributes"]["pgjobs.job.attempt"] == 1
    (work,) = [s for s in exported(spans) if s["name"] == "work ada"]
    assert (work["trace_id"], work["parent_span_id"]) == (process["trace_id"], process["span_id"])
