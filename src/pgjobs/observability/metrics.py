"""Prometheus metrics: ``pip install "pgjobs[metrics]"`` (prometheus_client).

Two kinds of metric, from two places:

* **Counters and histograms** — jobs enqueued, finished per outcome, perform and wait times —
  are counted by the process where it happens, from pgjobs' events (:mod:`pgjobs.events`).
  :func:`instrument` subscribes them.  Under ``pgjobs start --metrics-port`` every supervised
  process does, in prometheus_client's multiprocess mode (each process writes its values to
  memory-mapped files in a directory the supervisor owns), and the supervisor's ``/metrics``
  adds them up for the host.  An application process that enqueues (a web server) calls
  ``instrument()`` itself and exposes its registry as it already does.
* **Database gauges** — ready jobs and latency per queue, jobs per state, live processes and
  busy threads — describe the shared database, not a process: :class:`DatabaseCollector`
  queries them at scrape time, at most once per ``refresh`` seconds, with capped counts that
  never read a whole table (:mod:`pgjobs.web.counts`).  The supervisor's ``/metrics`` and the
  dashboard's ``/metrics`` serve them.

``docs/observability.md`` lists every metric with its labels, PromQL for the usual alerts, and
the Grafana dashboard built on them (``docs/grafana/pgjobs.json``).  The core of pgjobs never
imports this module: with metrics off, nothing here runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pgjobs import events
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError
from pgjobs.observability.multiproc import ENV

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client import start_http_server as _start_http_server
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised by a fresh install without the extra
    raise ImportError(
        'pgjobs metrics need prometheus_client: pip install "pgjobs[metrics]"'
    ) from exc

log = logging.getLogger("pgjobs")

MULTIPROC_ENV = ENV  # prometheus_client's switch to multiprocess mode

# Jobs run from milliseconds to hours; waits from milliseconds (LISTEN/NOTIFY) to a backlog's
# hours.  Seconds, as Prometheus wants.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip
WAIT_BUCKETS = DURATION_BUCKETS

#: pgjobs' outcome of an execution (the events') -> the metric's ``outcome`` label.
OUTCOMES = {"retry": "retried", "discard": "discarded", "fail": "failed"}


@dataclass
class _Series:
    """The label children of one (queue, job_class): ``labels()`` looked up once, not per job."""

    succeeded: Any
    duration: Any


class JobMetrics:
    """The counters and histograms of one process, fed by its events."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.enqueued = Counter(
            "pgjobs_jobs_enqueued",
            "Jobs written to the queue (delayed ones included), by this process",
            ["queue", "job_class"],
            registry=registry,
        )
        self.skipped = Counter(
            "pgjobs_jobs_enqueue_skipped",
            "Enqueues that wrote no runnable job: a unique key held (duplicate) or no "
            "concurrency slot with on_conflict=discard (discarded)",
            ["queue", "job_class", "reason"],
            registry=registry,
        )
        self.finished = Counter(
            "pgjobs_jobs_finished",
            "Executions that ended, by outcome: succeeded, failed, retried, discarded, "
            "interrupted (the process running it died)",
            ["queue", "job_class", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "pgjobs_job_duration_seconds",
            "Time spent performing a job (every execution, whatever its outcome)",
            ["queue", "job_class"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "pgjobs_job_wait_seconds",
            "A first attempt's wait from when it was due (enqueued, or its scheduled time) to "
            "its start",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.pruned = Counter(
            "pgjobs_processes_pruned",
            "Processes found dead (heartbeat older than process_alive_threshold) and pruned",
            registry=registry,
        )
        self._series: dict[tuple[str, str], _Series] = {}
        self._waits: dict[str, Any] = {}
        self._handlers: dict[str, Callable[[events.Event], None]] = {
            "enqueue": self._on_enqueue,
            "enqueue_skipped": self._on_skipped,
            "perform": self._on_perform,
            "retry": self._on_recorded,
            "discard": self._on_recorded,
            "fail": self._on_recorded,
            "recover": self._on_recover,
            "recover_orphans": self._on_recover,
            "prune_processes": self._on_pruned,
        }

    def subscribe(self) -> None:
        for name, handler in self._handlers.items():
            events.subscribe(name, handler)

    def unsubscribe(self) -> None:
        for name, handler in self._handlers.items():
            events.unsubscribe(name, handler)

    # -- handlers (the thread that emits: a job thread for perform) -----------------------------

    def _of(self, queue: str, job_class: str) -> _Series:
        series = self._series.get((queue, job_class))
        if series is None:
            series = _Series(
                self.finished.labels(queue, job_class, "succeeded"),
                self.duration.labels(queue, job_class),
            )
            self._series[queue, job_class] = series
        return series

    def _on_perform(self, event: events.Event) -> None:
        fields = event.fields
        queue = fields["queue"]
        series = self._of(queue, fields["class"])
        if fields["outcome"] in ("finished", "rescued"):
            series.succeeded.inc()
        series.duration.observe(fields["duration_ms"] / 1000)
        wait_ms = fields.get("wait_ms")
        if wait_ms is not None:
            waits = self._waits.get(queue)
            if waits is None:
                waits = self._waits[queue] = self.wait.labels(queue)
            waits.observe(wait_ms / 1000)

    def _on_recorded(self, event: events.Event) -> None:
        # retry / discard / fail are counted when recorded (a job failed on its timeout after
        # the grace has no perform event: its thread never came back)
        fields = event.fields
        self.finished.labels(fields["queue"], fields["class"], OUTCOMES[event.name]).inc()

    def _on_enqueue(self, event: events.Event) -> None:
        self.enqueued.labels(event.fields["queue"], event.fields["class"]).inc()

    def _on_skipped(self, event: events.Event) -> None:
        fields = event.fields
        self.skipped.labels(fields["queue"], fields["class"], fields["reason"]).inc()

    def _on_recover(self, event: events.Event) -> None:
        for queue, job_class, count in event.fields.get("interrupted") or ():
            self.finished.labels(queue, job_class, "interrupted").inc(count)

    def _on_pruned(self, event: events.Event) -> None:
        self.pruned.inc(len(event.fields["process_ids"]))


_installed: JobMetrics | None = None
_install_lock = threading.Lock()


def instrument(registry: CollectorRegistry | None = REGISTRY) -> JobMetrics:
    """Count this process's jobs in Prometheus metrics (``registry``: prometheus_client's
    default); idempotent.  Returns the metrics, whose attributes are the prometheus_client
    objects."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = JobMetrics(registry)
            _installed.subscribe()
        return _installed


def uninstrument() -> None:
    """Stop counting and unregister the metrics (tests)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            _installed.unsubscribe()
            _installed = None


# -- database gauges ------------------------------------------------------------------------------

# Live processes (heartbeat within the threshold, on the database's clock) and the jobs each
# holds: processes is small, claimed is counted per process through its process index.
LIVE_PROCESSES = """
SELECT p.kind, p.hostname, p.metadata,
       (SELECT count(*) FROM {claimed} c WHERE c.process_id = p.id)
FROM {processes} p
WHERE p.last_heartbeat_at >= now() - make_interval(secs => %(threshold)s)
"""

STATE_LABELS = {"in_progress": "claimed"}


@dataclass
class Snapshot:
    """The gauges' values, as of one refresh."""

    jobs: dict[str, int] = field(default_factory=dict)
    queues: list[tuple[str, int, float, bool, int]] = field(default_factory=list)
    processes: dict[tuple[str, str], int] = field(default_factory=dict)
    threads: dict[str, int] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)
    up: bool = True


def snapshot(database: Database, *, alive_threshold: float, timeout: float = 5.0) -> Snapshot:
    """Query every gauge's value in one transaction (``timeout``: its statement timeout, so a
    scrape never hangs on a sick database)."""
    from pgjobs.processes.poller import matches
    from pgjobs.web import counts

    found = Snapshot()
    with database.connection() as conn, conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
        now_row = conn.execute("SELECT now()").fetchone()
        assert now_row is not None
        now = now_row[0]
        executions = counts.execution_counts(conn, database.schema)
        found.jobs = {STATE_LABELS.get(k, k): c.value for k, c in executions.items()}
        stats = counts.queue_stats(conn, database.schema)
        rows = conn.execute(database.sql(LIVE_PROCESSES), {"threshold": alive_threshold}).fetchall()
    workers: list[tuple[str, ...]] = []
    for kind, hostname, metadata, running in rows:
        key = (str(kind), str(hostname))
        found.processes[key] = found.processes.get(key, 0) + 1
        if kind == "worker":
            meta = metadata or {}
            found.threads[hostname] = found.threads.get(hostname, 0) + int(meta.get("threads", 0))
            found.busy[hostname] = found.busy.get(hostname, 0) + int(running)
            workers.append(tuple(meta.get("queues", ("*",))))
    for stat in stats:
        serving = sum(1 for patterns in workers if matches(stat.name, patterns))
        found.queues.append((stat.name, stat.size.value, stat.latency(now), stat.paused, serving))
    return found


class DatabaseCollector(Collector):
    """The database gauges, queried at most once per ``refresh`` seconds (scrapes in between
    get the last values).  ``pgjobs_database_up`` is 0 when the last query failed; the other
    gauges are then left out rather than shown stale."""

    def __init__(self, database: Database, *, refresh: float = 5.0, alive_threshold: float = 300.0):
        self.database = database
        self.refresh = refresh
        self.alive_threshold = alive_threshold
        self._lock = threading.Lock()
        self._taken = float("-inf")
        self._last = Snapshot(up=False)

    def describe(self) -> Iterable[Metric]:
        return ()  # registering must not query the database

    def current(self) -> Snapshot:
        with self._lock:  # concurrent scrapes share one query
            if time.monotonic() - self._taken >= self.refresh:
                try:
                    self._last = snapshot(self.database, alive_threshold=self.alive_threshold)
                except Exception as exc:
                    log.warning("metrics: the database gauges could not be read: %s", exc)
                    self._last = Snapshot(up=False)
                self._taken = time.monotonic()
            return self._last

    def collect(self) -> Iterator[Metric]:
        found = self.current()
        yield GaugeMetricFamily(
            "pgjobs_database_up",
            "1 if the last refresh of the database gauges reached the database, else 0",
            value=1 if found.up else 0,
        )
        if not found.up:
            return
        jobs = GaugeMetricFamily(
            "pgjobs_jobs",
            "Unfinished jobs per state (exact up to 10,000 per state, the planner's estimate "
            "beyond)",
            labels=["state"],
        )
        for state, count in found.jobs.items():
            jobs.add_metric([state], count)
        yield jobs
        ready = GaugeMetricFamily(
            "pgjobs_queue_ready_jobs",
            "Ready jobs per queue (exact up to 10,000, the planner's estimate beyond)",
            labels=["queue"],
        )
        latency = GaugeMetricFamily(
            "pgjobs_queue_latency_seconds",
            "Age of the queue's oldest ready job (among the next 1,000 in claim order)",
            labels=["queue"],
        )
        paused = GaugeMetricFamily(
            "pgjobs_queue_paused", "1 if the queue is paused", labels=["queue"]
        )
        serving = GaugeMetricFamily(
            "pgjobs_queue_workers",
            "Live worker processes whose queue selectors include the queue",
            labels=["queue"],
        )
        for name, size, age, is_paused, workers in found.queues:
            ready.add_metric([name], size)
            latency.add_metric([name], age)
            paused.add_metric([name], 1 if is_paused else 0)
            serving.add_metric([name], workers)
        yield from (ready, latency, paused, serving)
        processes = GaugeMetricFamily(
            "pgjobs_processes",
            "Live pgjobs processes (heartbeat within process_alive_threshold)",
            labels=["kind", "hostname"],
        )
        for (kind, hostname), count in sorted(found.processes.items()):
            processes.add_metric([kind, hostname], count)
        yield processes
        threads = GaugeMetricFamily(
            "pgjobs_worker_threads", "Job threads of the live workers", labels=["hostname"]
        )
        busy = GaugeMetricFamily(
            "pgjobs_worker_busy_threads",
            "Jobs the live workers are running (claimed)",
            labels=["hostname"],
        )
        for hostname in sorted(found.threads):
            threads.add_metric([hostname], found.threads[hostname])
            busy.add_metric([hostname], found.busy.get(hostname, 0))
        yield threads
        yield busy


def database_registry(database: Database, *, refresh: float = 5.0) -> CollectorRegistry:
    """A registry holding only the database gauges (the dashboard's ``/metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(database, refresh=refresh))
    return registry


# -- the host's endpoint under pgjobs start -------------------------------------------------------


class HostExporter:
    """``pgjobs start``'s metrics: a multiprocess directory for the supervisor and its children,
    and ``/metrics`` serving their sum plus the database gauges.

    ``directory`` comes from :func:`pgjobs.observability.multiproc.multiprocess_directory`,
    called before this module (and so prometheus_client) is first imported.
    """

    def __init__(
        self, host: str, port: int, directory: str, *, refresh: float, alive_threshold: float
    ) -> None:
        self.host, self.port = host, port
        self.directory = directory
        self.refresh = refresh
        self.alive_threshold = alive_threshold
        self._server: Any = None
        self._database: Database | None = None

    def start(self, database: Database) -> None:
        """Serve ``/metrics`` (raises ConfigurationError naming the address if it is taken)."""
        self._database = Database(
            database.url,
            schema=database.schema,
            pool_size=1,
            application_name="pgjobs-metrics",
        )
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        registry.register(
            DatabaseCollector(
                self._database, refresh=self.refresh, alive_threshold=self.alive_threshold
            )
        )
        try:
            self._server, _ = _start_http_server(self.port, addr=self.host, registry=registry)
        except OSError as exc:
            self.close()
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc} "
                "(choose another with --metrics-port or metrics.port in queue.yml)"
            ) from exc
        log.info("metrics: serving http://%s:%s/metrics", self.host, self.port)

    def process_exited(self, pid: int) -> None:
        """A child exited: its counters stay (they are the host's history), its live gauges go."""
        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._database is not None:
            self._database.close()
            self._database = None
        shutil.rmtree(self.directory, ignore_errors=True)
        if os.environ.get(MULTIPROC_ENV) == self.directory:
            del os.environ[MULTIPROC_ENV]
