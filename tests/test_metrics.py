"""Prometheus metrics in one process: the counters a worker's events feed, the database gauges,
and the dashboard's /metrics.  (tests/test_metrics_e2e.py runs the host endpoint for real.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import pgjobs
from pgjobs import events
from pgjobs.config.queue import ConfigurationError, parse_config
from pgjobs.db.database import Database
from pgjobs.observability import outcomes
from pgjobs.observability.metrics import (
    Counts,
    DatabaseCollector,
    HostCollector,
    Recorder,
    instrument,
    uninstrument,
)
from pgjobs.processes.worker import Worker
from pgjobs.web.pinned import PinnedDatabase
from tests.engine_helpers import run_once
from tests.test_events import Discards, Fails, Rescues, Retries, Works, worker
from tests.web_helpers import add_job, add_process, basic, client_on


@pytest.fixture
def metrics() -> Iterator[tuple[Recorder, CollectorRegistry]]:
    registry = CollectorRegistry()
    recorder = instrument(registry)
    yield recorder, registry
    uninstrument()
    assert outcomes.observe is None and list(registry.collect()) == []


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


__all__ = ["worker"]  # a fixture, shared with tests/test_events.py


@pytest.mark.committed
def test_a_worker_pass_counts_each_outcome(
    worker: Worker, metrics: tuple[Recorder, CollectorRegistry]
) -> None:
    _, registry = metrics
    for cls in (Works, Works, Retries, Discards, Fails, Rescues):
        cls.perform_later()
    run_once(worker)

    def finished(cls: type[pgjobs.Job], outcome: str) -> float | None:
        labels = {"queue": "default", "job_class": cls.job_name, "outcome": outcome}
        return sample(registry, "pgjobs_jobs_finished_total", **labels)

    assert finished(Works, "succeeded") == 2
    assert finished(Rescues, "succeeded") == 1  # rescued: the job handled its error
    assert finished(Retries, "retried") == 1
    assert finished(Discards, "discarded") == 1
    assert finished(Fails, "failed") == 1
    assert finished(Fails, "succeeded") is None  # a series appears with its first count
    assert (
        sample(registry, "pgjobs_jobs_enqueued_total", queue="default", job_class=Works.job_name)
        == 2
    )
    duration = {"queue": "default", "job_class": Works.job_name}
    assert sample(registry, "pgjobs_job_duration_seconds_count", **duration) == 2
    assert sample(registry, "pgjobs_job_duration_seconds_bucket", **duration, le="+Inf") == 2
    # every one was a first attempt: six waits, each from its enqueue to its start
    assert sample(registry, "pgjobs_job_wait_seconds_count", queue="default") == 6
    wait_sum = sample(registry, "pgjobs_job_wait_seconds_sum", queue="default")
    assert wait_sum is not None and 0 <= wait_sum < 60


class Snoozes(pgjobs.Job):
    def perform(self) -> None:
        self.snooze(60)


class CancelsItself(pgjobs.Job):
    def perform(self) -> None:
        raise pgjobs.JobCancelled()


@pytest.mark.committed
def test_job_control_outcomes_are_counted(
    worker: Worker, metrics: tuple[Recorder, CollectorRegistry]
) -> None:
    _, registry = metrics
    Snoozes.perform_later()
    CancelsItself.perform_later()
    run_once(worker)
    for cls, outcome in ((Snoozes, "snoozed"), (CancelsItself, "cancelled")):
        labels = {"queue": "default", "job_class": cls.job_name, "outcome": outcome}
        assert sample(registry, "pgjobs_jobs_finished_total", **labels) == 1


def test_recoveries_count_interrupted_executions_and_prunes_count_processes(
    metrics: tuple[Recorder, CollectorRegistry],
) -> None:
    _, registry = metrics
    interrupted = [("default", "app:Import", 2), ("mail", "app:Send", 1)]
    events.emit("recover", process_ids=[7], requeued=3, failed=0, interrupted=interrupted)
    events.emit("recover_orphans", requeued=1, failed=0, interrupted=[("mail", "app:Send", 1)])
    events.emit("prune_processes", process_ids=[7, 8], names=["a", "b"])
    labels = {"queue": "default", "job_class": "app:Import", "outcome": "interrupted"}
    assert sample(registry, "pgjobs_jobs_finished_total", **labels) == 2
    labels = {"queue": "mail", "job_class": "app:Send", "outcome": "interrupted"}
    assert sample(registry, "pgjobs_jobs_finished_total", **labels) == 2
    assert sample(registry, "pgjobs_processes_pruned_total") == 2


def test_skipped_enqueues_are_counted_with_their_reason(
    metrics: tuple[Recorder, CollectorRegistry],
) -> None:
    _, registry = metrics
    fields = events.job_fields("x", "app:Report", "default")
    events.emit("enqueue_skipped", **fields, reason="duplicate")
    labels = {"queue": "default", "job_class": "app:Report", "reason": "duplicate"}
    assert sample(registry, "pgjobs_jobs_enqueue_skipped_total", **labels) == 1


# -- the database gauges --------------------------------------------------------------------------


def gauges(database: Any, **options: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(database, refresh=0, **options))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
    }


def test_the_gauges_describe_queues_states_and_processes(conn: psycopg.Connection[Any]) -> None:
    old = datetime.now(UTC) - timedelta(minutes=5)
    for _ in range(3):
        add_job(conn, "ready", queue="mail", created_at=old)
    add_job(conn, "ready", queue="reports")
    add_job(conn, "scheduled")
    add_job(conn, "failed")
    conn.execute("INSERT INTO pgjobs_pauses (queue_name) VALUES ('reports')")
    worker_id = add_process(conn, metadata={"queues": ["mail*"], "threads": 4})
    small_id = add_process(conn, metadata={"queues": ["*"], "threads": 2})
    add_process(conn, "dispatcher", metadata={})
    add_process(conn, metadata={"queues": ["*"], "threads": 9}, heartbeat=old)  # dead
    add_job(conn, "in_progress", process_id=worker_id)
    for _ in range(5):  # 2 running, 3 claimed ahead, waiting for a thread
        add_job(conn, "in_progress", process_id=small_id)
    found = gauges(PinnedDatabase(conn), alive_threshold=60)

    def g(name: str, **labels: str) -> float | None:
        return found.get((name, tuple(sorted(labels.items()))))

    assert g("pgjobs_database_up") == 1
    assert g("pgjobs_jobs", state="ready") == 4
    assert (g("pgjobs_jobs", state="scheduled"), g("pgjobs_jobs", state="failed")) == (1, 1)
    assert (g("pgjobs_jobs", state="claimed"), g("pgjobs_jobs", state="blocked")) == (6, 0)
    assert g("pgjobs_queue_ready_jobs", queue="mail") == 3
    latency = g("pgjobs_queue_latency_seconds", queue="mail")
    assert latency is not None and 290 < latency < 400
    assert (g("pgjobs_queue_paused", queue="mail"), g("pgjobs_queue_paused", queue="reports")) == (
        0,
        1,
    )
    assert g("pgjobs_queue_workers", queue="mail") == 2  # "mail*" and "*"; the dead one not
    assert g("pgjobs_queue_workers", queue="reports") == 1
    assert g("pgjobs_processes", kind="worker", hostname="host-1") == 2
    assert g("pgjobs_processes", kind="dispatcher", hostname="host-1") == 1
    assert g("pgjobs_worker_threads", hostname="host-1") == 6
    assert g("pgjobs_worker_busy_threads", hostname="host-1") == 3  # 1 + 2 (not 5: its threads)


def test_gauges_are_queried_at_most_once_per_refresh(conn: psycopg.Connection[Any]) -> None:
    collector = DatabaseCollector(PinnedDatabase(conn), refresh=3600)
    first = collector.current()
    add_job(conn, "ready", queue="mail")
    assert collector.current() is first  # within the refresh: the same snapshot
    collector.refresh = 0
    assert collector.current().jobs["ready"] == first.jobs["ready"] + 1


def test_an_unreachable_database_reports_down_and_no_stale_gauges() -> None:
    unreachable = Database("postgresql://postgres@127.0.0.1:1/nowhere", pool_size=1)
    try:
        assert gauges(unreachable) == {("pgjobs_database_up", ()): 0}
    finally:
        unreachable.close()


def test_the_dashboard_serves_the_gauges_behind_its_auth(conn: psycopg.Connection[Any]) -> None:
    add_job(conn, "ready", queue="mail")
    client = client_on(conn)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    (ready,) = families["pgjobs_queue_ready_jobs"].samples
    assert (ready.labels, ready.value) == ({"queue": "mail"}, 1)
    assert families["pgjobs_database_up"].samples[0].value == 1
    anonymous = TestClient(client.app, follow_redirects=False)
    assert anonymous.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=basic(password="wrong")).status_code == 401


# -- configuration --------------------------------------------------------------------------------


def test_the_metrics_section_is_validated() -> None:
    config = parse_config({"metrics": {"port": 9394, "host": "0.0.0.0", "refresh": 15}})
    assert (config.metrics.host, config.metrics.port, config.metrics.refresh) == (
        "0.0.0.0",
        9394,
        15.0,
    )
    assert parse_config({}).metrics.port is None  # off unless asked for
    with pytest.raises(ConfigurationError, match=r"metrics\.port.*TCP port number.*70000"):
        parse_config({"metrics": {"port": 70000}})
    with pytest.raises(ConfigurationError, match=r"metrics\.prot: unknown key.*'port'"):
        parse_config({"metrics": {"prot": 9394}})


def test_the_host_adds_up_every_process_and_keeps_the_exited_ones(tmp_path: Path) -> None:
    def written(pid: int, succeeded: float, duration: float) -> None:
        counts = Counts()
        labels = ("default", "app:Job")
        counts.inc("pgjobs_jobs_finished", (*labels, "succeeded"), succeeded)
        with counts.lock:
            counts._observe("pgjobs_job_duration_seconds", labels, duration)
        (tmp_path / f"pgjobs_{pid}.json").write_text(json.dumps(counts.dump()))

    def totals(collector: HostCollector) -> tuple[float | None, float | None, float | None]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        labels = {"queue": "default", "job_class": "app:Job"}
        return (
            registry.get_sample_value(
                "pgjobs_jobs_finished_total", {**labels, "outcome": "succeeded"}
            ),
            registry.get_sample_value("pgjobs_job_duration_seconds_count", labels),
            registry.get_sample_value(
                "pgjobs_job_duration_seconds_bucket", {**labels, "le": "0.01"}
            ),
        )

    written(101, 5, 0.002)
    written(102, 7, 3.0)
    written(103, 1, 0.004)
    host = HostCollector(str(tmp_path))
    assert totals(host) == (13, 3, 2)
    host.exited(101)
    host.exited(103)
    assert totals(host) == (13, 3, 2)  # the same: merged, not lost or doubled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pgjobs_102.json", "pgjobs_exited.json"]
    written(104, 2, 0.5)  # a restarted worker
    assert totals(host) == (15, 4, 2)
