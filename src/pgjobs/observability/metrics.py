"""Prometheus metrics: ``pip install "pgjobs[metrics]"`` (prometheus_client).

Two kinds of metric, from two places:

* **Counters and histograms** — jobs enqueued, finished per outcome, perform and wait times —
  are counted by the process where it happens.  :func:`instrument` starts a :class:`Recorder`
  there: it subscribes to the rare events (enqueues, recoveries, prunes), and a worker hands it
  the outcomes it collected in each pass (:data:`pgjobs.observability.outcomes.observe`), added
  up in plain Python: about 1 us per job.  Under ``pgjobs start --metrics-port`` every
  supervised process records, and its recorder's thread writes the totals (a small JSON file,
  replaced atomically, once a second and when it stops) to a directory the supervisor owns; the
  supervisor's ``/metrics`` adds the files up (:class:`HostCollector`).  An application
  process that enqueues (a web server) calls ``instrument()`` itself: its counts are served
  from memory by the registry it gives.
* **Database gauges** — ready jobs and latency per queue, jobs per state, live processes and
  busy threads — describe the shared database, not a process: :class:`DatabaseCollector`
  queries them at scrape time, at most once per ``refresh`` seconds, with capped counts that
  never read a whole table (:mod:`pgjobs.operations.counts`).  The supervisor's ``/metrics`` and the
  dashboard's ``/metrics`` serve them.

Why not prometheus_client's metric objects in the workers: in its multiprocess mode every
increment and observation is a locked write to a memory-mapped file, ~2-4 us each; three per job
halved the drain rate of a 2-core host (``docs/performance.md``).  Its multiprocess directory is
still set up by the supervisor, so metrics the application records inside jobs are served too.

``docs/observability.md`` lists every metric with its labels, PromQL for the usual alerts, and
the Grafana dashboard built on them (``docs/grafana/pgjobs.json``).  The core of pgjobs never
imports this module: with metrics off, nothing here runs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgjobs import events
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError
from pgjobs.observability import outcomes
from pgjobs.observability.multiproc import ENV

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client import start_http_server as _start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised by a fresh install without the extra
    raise ImportError(
        'pgjobs metrics need prometheus_client: pip install "pgjobs[metrics]"'
    ) from exc

if TYPE_CHECKING:
    from pgjobs.processes.executor import Outcome

log = logging.getLogger("pgjobs")

MULTIPROC_ENV = ENV  # prometheus_client's switch to multiprocess mode

# Jobs run from milliseconds to hours; waits from milliseconds (LISTEN/NOTIFY) to a backlog's
# hours.  Seconds, as Prometheus wants.
BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip

#: name -> (type, help, label names), in the order /metrics lists them.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "pgjobs_jobs_enqueued": (
        "counter",
        "Jobs written to the queue (delayed ones included), by this host's processes",
        ("queue", "job_class"),
    ),
    "pgjobs_jobs_enqueue_skipped": (
        "counter",
        "Enqueues that wrote no runnable job: a unique key held (duplicate) or no concurrency "
        "slot with on_conflict=discard (discarded)",
        ("queue", "job_class", "reason"),
    ),
    "pgjobs_jobs_finished": (
        "counter",
        "Executions that ended, by outcome: succeeded, failed, retried, discarded, interrupted "
        "(the process running it died), cancelled, snoozed, released (a stepped job stopped at "
        "a checkpoint by its worker's shutdown)",
        ("queue", "job_class", "outcome"),
    ),
    "pgjobs_job_duration_seconds": (
        "histogram",
        "Time spent performing a job (every execution, whatever its outcome)",
        ("queue", "job_class"),
    ),
    "pgjobs_job_wait_seconds": (
        "histogram",
        "A first attempt's wait from when it was due (enqueued, or its scheduled time) to its "
        "start",
        ("queue",),
    ),
    "pgjobs_processes_pruned": (
        "counter",
        "Processes found dead (heartbeat older than process_alive_threshold) and pruned",
        (),
    ),
}

#: An outcome's kind -> the ``outcome`` label.
OUTCOMES = {
    "finished": "succeeded",
    "retry": "retried",
    "discard": "discarded",
    "fail": "failed",
    "cancel": "cancelled",
    "snooze": "snoozed",
    "interrupt": "released",
}

Key = tuple[str, tuple[str, ...]]  # (metric name, label values)


class Counts:
    """Counters and histograms in plain Python: one process's, or the sum of several.

    A histogram is a list: the count in each bucket of :data:`BUCKETS` (not cumulative), the
    count above the last, then the sum of the observed values.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[Key, float] = {}
        self.histograms: dict[Key, list[float]] = {}

    def inc(self, name: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        with self.lock:
            self._inc(name, labels, amount)

    def _inc(self, name: str, labels: tuple[str, ...], amount: float) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0.0) + amount

    def _observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        key = (name, labels)
        histogram = self.histograms.get(key)
        if histogram is None:
            histogram = self.histograms[key] = [0.0] * (len(BUCKETS) + 2)
        histogram[bisect_left(BUCKETS, value)] += 1
        histogram[-1] += value

    def dump(self) -> dict[str, Any]:
        """The totals as JSON-able data (what a process writes for its supervisor)."""
        with self.lock:
            return {
                "counters": [[n, list(labels), v] for (n, labels), v in self.counters.items()],
                "histograms": [[n, list(labels), h] for (n, labels), h in self.histograms.items()],
            }

    def merge(self, data: Mapping[str, Any]) -> None:
        """Add the totals of :meth:`dump` (another process's) to these."""
        with self.lock:
            for name, labels, value in data.get("counters", ()):
                self._inc(name, tuple(labels), float(value))
            for name, labels, values in data.get("histograms", ()):
                key = (name, tuple(labels))
                mine = self.histograms.get(key)
                if mine is None:
                    self.histograms[key] = [float(v) for v in values]
                else:
                    for i, v in enumerate(values):
                        mine[i] += v

    def families(self) -> Iterator[Metric]:
        """The totals as Prometheus metric families (every family, even with no samples)."""
        with self.lock:
            counters = sorted(self.counters.items())
            histograms = sorted((k, list(v)) for k, v in self.histograms.items())
        for name, (kind, text, labels) in FAMILIES.items():
            if kind == "counter":
                counter = CounterMetricFamily(name, text, labels=labels)
                for (found, values), value in counters:
                    if found == name:
                        counter.add_metric(values, value)
                yield counter
                continue
            histogram = HistogramMetricFamily(name, text, labels=labels)
            for (found, values), counts in histograms:
                if found == name:
                    buckets, running = [], 0.0
                    for bound, count in zip((*BUCKETS, float("inf")), counts, strict=False):
                        running += count
                        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
                    histogram.add_metric(values, buckets, sum_value=counts[-1])
            yield histogram


class CountsCollector(Collector):
    """Serves one process's counts from memory (an application's registry)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        return self.recorder.snapshot().families()


class Recorder:
    """Counts what happens in this process: its events, and its worker's outcomes.

    ``path``: write the totals there once a second and at :meth:`close` (under ``pgjobs start``,
    for the supervisor's ``/metrics``); ``None``: in memory only.
    """

    INTERVAL = 1.0

    def __init__(self, path: str | None = None) -> None:
        self.counts = Counts()  # from the events
        self.path = path
        # A worker's executions, kept in the cheapest form for its main thread: per (queue,
        # class, kind) a list [count, one count per duration bucket (+Inf last), duration sum];
        # per queue the same for first attempts' waits, without the leading count.
        self._jobs: dict[tuple[str, str, str], list[float]] = {}
        self._waits: dict[str, list[float]] = {}
        self._jobs_lock = threading.Lock()
        self._stop = threading.Event()
        self._handlers = {
            "enqueue": self._on_enqueue,
            "enqueue_skipped": self._on_skipped,
            "recover": self._on_recover,
            "recover_orphans": self._on_recover,
            "prune_processes": self._on_pruned,
        }
        for name, handler in self._handlers.items():
            events.subscribe(name, handler)
        outcomes.observe = self.observe
        self._thread = threading.Thread(target=self._run, name="pgjobs-metrics", daemon=True)
        if path is not None:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            try:
                self.flush()
            except Exception as exc:
                events.thread_error(exc, "pgjobs-metrics")

    def observe(self, done: list[Outcome]) -> None:
        """Count the executions a worker collected in one pass (its main thread: keep it cheap,
        about 1 us per job)."""
        jobs, waits, size = self._jobs, self._waits, len(BUCKETS) + 3
        with self._jobs_lock:
            for outcome in done:
                claimed = outcome.claimed
                key = (claimed.queue_name, claimed.class_name, outcome.kind)
                counted = jobs.get(key)
                if counted is None:
                    counted = jobs[key] = [0.0] * size
                duration = outcome.duration
                counted[0] += 1
                counted[1 + bisect_left(BUCKETS, duration)] += 1
                counted[-1] += duration
                if outcome.started_at and not claimed.executions and not claimed.interruptions:
                    due = (claimed.scheduled_at or claimed.created_at).timestamp()
                    wait = outcome.started_at - due
                    wait = wait if wait > 0.0 else 0.0
                    waited = waits.get(claimed.queue_name)
                    if waited is None:
                        waited = waits[claimed.queue_name] = [0.0] * (size - 1)
                    waited[bisect_left(BUCKETS, wait)] += 1
                    waited[-1] += wait

    def snapshot(self) -> Counts:
        """Everything counted so far, as one :class:`Counts`."""
        with self._jobs_lock:
            jobs = [(key, list(values)) for key, values in self._jobs.items()]
            waits = [(queue, list(values)) for queue, values in self._waits.items()]
        total = Counts()
        total.merge(self.counts.dump())
        for (queue, job_class, kind), values in jobs:
            total.merge(
                {
                    "counters": [["pgjobs_jobs_finished", [queue, job_class, OUTCOMES[kind]],
                                  values[0]]],
                    "histograms": [["pgjobs_job_duration_seconds", [queue, job_class],
                                    values[1:]]],
                }
            )  # fmt: skip
        for queue, values in waits:
            total.merge({"histograms": [["pgjobs_job_wait_seconds", [queue], values]]})
        return total

    def flush(self) -> None:
        """Write the totals to ``path`` (if there is one)."""
        if self.path is not None:
            write_json(self.path, self.snapshot().dump())

    def close(self) -> None:
        """Stop the thread, unsubscribe, and write the last totals."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for name, handler in self._handlers.items():
            events.unsubscribe(name, handler)
        if outcomes.observe == self.observe:
            outcomes.observe = None
        self.flush()

    # -- events (rare: counted in the emitting thread) -------------------------------------------

    def _on_enqueue(self, event: events.Event) -> None:
        fields = event.fields
        self.counts.inc("pgjobs_jobs_enqueued", (fields["queue"], fields["class"]))

    def _on_skipped(self, event: events.Event) -> None:
        fields = event.fields
        labels = (fields["queue"], fields["class"], fields["reason"])
        self.counts.inc("pgjobs_jobs_enqueue_skipped", labels)

    def _on_recover(self, event: events.Event) -> None:
        for queue, job_class, count in event.fields.get("interrupted") or ():
            self.counts.inc("pgjobs_jobs_finished", (queue, job_class, "interrupted"), count)

    def _on_pruned(self, event: events.Event) -> None:
        self.counts.inc("pgjobs_processes_pruned", (), len(event.fields["process_ids"]))


def write_json(path: str, data: Any) -> None:
    """Replace ``path`` with ``data`` atomically: a reader sees the old totals or the new."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        json.dump(data, out)
    os.replace(temporary, path)


_installed: Recorder | None = None
_served: tuple[CollectorRegistry, CountsCollector] | None = None
_install_lock = threading.Lock()


def instrument(
    registry: CollectorRegistry | None = REGISTRY, *, directory: str | None = None
) -> Recorder:
    """Count this process's jobs; idempotent.  In an application process the counts are served
    from memory by ``registry`` (prometheus_client's default).  ``directory``: write them there
    for a supervisor to add up instead (``pgjobs start --metrics-port`` does this)."""
    global _installed, _served
    with _install_lock:
        if _installed is None:
            path = os.path.join(directory, f"pgjobs_{os.getpid()}.json") if directory else None
            _installed = Recorder(path)
            if path is None and registry is not None:
                collector = CountsCollector(_installed)
                registry.register(collector)
                _served = (registry, collector)
        return _installed


def uninstrument() -> None:
    """Stop counting (and leave the registry :func:`instrument` served from); writes the last
    totals."""
    global _installed, _served
    with _install_lock:
        if _installed is not None:
            _installed.close()
            _installed = None
        if _served is not None:
            registry, collector = _served
            registry.unregister(collector)
            _served = None


def host_counts(directory: str) -> Counts:
    """The sum of every process's totals written in ``directory``."""
    total = Counts()
    for path in glob.glob(os.path.join(directory, "pgjobs_*.json")):
        try:
            with open(path) as data:
                total.merge(json.load(data))
        except (OSError, ValueError):
            continue  # gone since the glob (merged into the exited totals)
    return total


EXITED = "pgjobs_exited.json"  # the totals of the processes that exited, merged


class HostCollector(Collector):
    """The counters and histograms of every process of the host (their files, added up).

    An exited process's file is merged into :data:`EXITED` (so the files do not pile up under a
    crash loop), under the lock every scrape takes: a scrape never counts it twice, or not at
    all, which Prometheus would take for a counter reset.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            found = host_counts(self.directory)
        return found.families()

    def exited(self, pid: int) -> None:
        mine = os.path.join(self.directory, f"pgjobs_{pid}.json")
        if not os.path.exists(mine):
            return
        with self.lock:
            merged = Counts()
            for path in (os.path.join(self.directory, EXITED), mine):
                with contextlib.suppress(OSError, ValueError), open(path) as data:
                    merged.merge(json.load(data))
            write_json(os.path.join(self.directory, EXITED), merged.dump())
            os.remove(mine)


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
    from pgjobs.operations import counts
    from pgjobs.processes.poller import matches

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
            threads = int(meta.get("threads", 0))
            found.threads[hostname] = found.threads.get(hostname, 0) + threads
            # Its claimed jobs, of which those beyond its threads wait for one (claimed ahead).
            busy = min(int(running), threads) if threads else int(running)
            found.busy[hostname] = found.busy.get(hostname, 0) + busy
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
    called before prometheus_client is first imported (its multiprocess mode, for the
    application's own metrics, is chosen then).
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
        self.processes = HostCollector(directory)

    def start(self, database: Database) -> None:
        """Serve ``/metrics`` (raises ConfigurationError naming the address if it is taken)."""
        self._database = database.renamed("pgjobs-metrics", pool_size=1)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.processes)
        # the application's own prometheus_client metrics, recorded inside jobs
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
        """A child exited: its counts stay (they are the host's history), merged with the other
        exited processes'; the application's live gauges of it go."""
        self.processes.exited(pid)
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
