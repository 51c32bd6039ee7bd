"""A real ``pgjobs start --metrics-port``: /metrics adds up every worker process's counters and
serves the database gauges, in a format prometheus_client's own parser reads."""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgjobs.db.database import Database
from pgjobs.operations.queues import Queue
from tests.engine_helpers import config_file, free_port, pgjobs_start, scalar, states, wait_for
from tests.sample_jobs import (
    Boom,
    DiscardsBadInput,
    FansOut,
    FlakyRecord,
    KillsItsWorker,
    SendWelcomeEmail,
)

pytestmark = [pytest.mark.committed, pytest.mark.slow]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_count_every_outcome_across_worker_processes(db: Database, tmp_path: Path) -> None:
    port = free_port()
    workers = (
        '  - queues: "default, held"\n    threads: 2\n    processes: 2\n    polling_interval: 0.1\n'
        '  - queues: "doomed"\n    threads: 1\n    polling_interval: 0.1'  # kills only itself
    )
    config = config_file(tmp_path, workers, max_interruptions=2)
    fan, flaky = "tests.sample_jobs:FansOut", "tests.sample_jobs:FlakyRecord"
    boom = "tests.sample_jobs:Boom"
    FansOut.perform_later(5)  # its 5 Records are enqueued by a worker: counted there
    FlakyRecord.perform_later(2)  # fails once (retried), then succeeds
    Boom.perform_later()  # no retry rule: failed
    DiscardsBadInput.perform_later()
    KillsItsWorker.set(
        queue="doomed"
    ).perform_later()  # interrupted twice (max_interruptions: 2), then failed
    Queue("held", database=db).pause()
    SendWelcomeEmail.set(queue="held").perform_later(1)  # waits in a paused queue
    with pgjobs_start(db.url, config, tmp_path / "log", "--metrics-port", str(port)) as proc:
        expected = {"finished": 8, "failed": 2, "ready": 1}
        wait_for(lambda: states(db.url) == expected, timeout=60)
        samples = wait_for(
            lambda: (
                (s := scrape(port))
                and value(s, "pgjobs_processes", kind="worker", hostname=_host(s)) == 3
                and s
            ),
            timeout=30,
        )
        # the footprint docs/architecture.md states: one connection for the gauges (a pool of
        # one: a second shows only while a replaced connection's backend is still going away)
        count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgjobs-metrics'"
        metrics_connections = wait_for(lambda: scalar(db.url, count) == 1 and 1, timeout=5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert metrics_connections == 1

    finished = "pgjobs_jobs_finished_total"
    record = "tests.sample_jobs:Record"
    assert value(samples, finished, queue="default", job_class=record, outcome="succeeded") == 5
    assert value(samples, finished, queue="default", job_class=fan, outcome="succeeded") == 1
    assert value(samples, finished, queue="default", job_class=flaky, outcome="retried") == 1
    assert value(samples, finished, queue="default", job_class=flaky, outcome="succeeded") == 1
    assert value(samples, finished, queue="default", job_class=boom, outcome="failed") == 1
    discards = "tests.sample_jobs:DiscardsBadInput"
    assert value(samples, finished, queue="default", job_class=discards, outcome="discarded") == 1
    kills = "tests.sample_jobs:KillsItsWorker"
    assert value(samples, finished, queue="doomed", job_class=kills, outcome="interrupted") == 2
    enqueued = "pgjobs_jobs_enqueued_total"
    assert value(samples, enqueued, queue="default", job_class=record) == 5  # by the worker
    assert value(samples, enqueued, queue="default", job_class=fan) is None  # by the test
    duration = "pgjobs_job_duration_seconds_count"
    assert value(samples, duration, queue="default", job_class=record) == 5
    assert value(samples, duration, queue="default", job_class=flaky) == 2  # both attempts
    # first attempts only: the fan-out and its 5 records, flaky, boom, the discard (the killed
    # job's first attempt never ended in its process; its later attempts were interrupted ones)
    assert value(samples, "pgjobs_job_wait_seconds_count", queue="default") == 9
    # the database gauges
    assert value(samples, "pgjobs_database_up") == 1
    assert value(samples, "pgjobs_jobs", state="failed") == 2
    assert value(samples, "pgjobs_jobs", state="ready") == 1
    assert value(samples, "pgjobs_queue_ready_jobs", queue="held") == 1
    assert value(samples, "pgjobs_queue_paused", queue="held") == 1
    assert value(samples, "pgjobs_queue_workers", queue="held") == 2
    latency = value(samples, "pgjobs_queue_latency_seconds", queue="held")
    assert latency is not None and latency > 0
    assert value(samples, "pgjobs_processes", kind="supervisor", hostname=_host(samples)) == 1
    assert value(samples, "pgjobs_worker_threads", hostname=_host(samples)) == 5


def _host(samples: Samples) -> str:
    for name, labels in samples:
        if name == "pgjobs_processes":
            return dict(labels)["hostname"]
    return ""


def test_a_port_in_use_is_a_clear_error_before_anything_starts(
    db: Database, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "log"
        with pgjobs_start(db.url, config_file(tmp_path), log, "--metrics-port", str(port)) as proc:
            assert proc.wait(timeout=20) != 0
        output = log.with_suffix(".out").read_text()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in output
    assert "started worker" not in output
