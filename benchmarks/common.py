"""What every benchmarked system provides, and the helpers the scenarios share.

A system (``benchmarks/systems/*.py``) is a :class:`System`: it installs its schema into an
empty database, enqueues jobs one by one or in batches, starts its worker processes with a
given :class:`WorkerSetup`, and names the SQL that tells the drain monitor whether work has
started and whether the queue is empty.  Everything else — fresh databases, timing, process
supervision, footprint sampling — lives here and in :mod:`benchmarks.runner`, identical for all.

A system that keeps its jobs elsewhere (the Redis peers, :mod:`benchmarks.redis_server`)
overrides where a measurement's fresh state comes from (:meth:`System.prepare`,
:meth:`System.fresh`) and what the drain monitor asks (:meth:`System.monitor`).
"""

from __future__ import annotations

import abc
import asyncio
import math
import os
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_PREFIX = "bench_"
#: Jobs each enqueue call sequence sends first, untimed (opens pools, prepares statements).
WARMUP = 10


# -- configurations -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSetup:
    """How a system's workers run: ``processes`` OS processes with system-specific settings."""

    processes: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.settings.items()]
        return " ".join([*parts, f"processes={self.processes}"])

    @classmethod
    def parse(cls, spec: str) -> WorkerSetup:
        """A setup from its label's form, ``"threads=10 processes=2"`` (spaces or commas between
        the settings; ``processes`` defaults to 1; values stay text, as a queue.yml takes them)."""
        settings: dict[str, Any] = {}
        processes = 1
        for part in spec.replace(",", " ").split():
            key, sep, value = part.partition("=")
            if not sep or not key or not value:
                raise ValueError(f"expected key=value, got {part!r} in {spec!r}")
            if key == "processes":
                processes = int(value)
            else:
                settings[key] = value
        return cls(processes, settings)


# -- timed loops ----------------------------------------------------------------------------

CHECK_EVERY = 64  # single-enqueue loops look at the clock every this many jobs


@dataclass(frozen=True)
class Timed:
    """How many jobs a timed loop enqueued, and in how many seconds."""

    jobs: int
    seconds: float


class Stopwatch:
    """Times an enqueue loop that stops early once ``limit`` seconds have passed."""

    def __init__(self, limit: float) -> None:
        self.started = time.perf_counter()
        self.stop_at = self.started + limit

    def expired(self) -> bool:
        return time.perf_counter() >= self.stop_at

    def result(self, jobs: int) -> Timed:
        return Timed(jobs, time.perf_counter() - self.started)


# -- the interface --------------------------------------------------------------------------


class Monitor(abc.ABC):
    """What the drain scenario polls while a system's workers run (one connection per run)."""

    @abc.abstractmethod
    def started(self) -> bool:
        """True once a worker has claimed (taken) a job."""

    @abc.abstractmethod
    def done(self) -> bool:
        """True when no job is waiting or running."""

    @abc.abstractmethod
    def finished(self) -> int:
        """How many jobs finished successfully."""

    @abc.abstractmethod
    def connections(self) -> Sequence[tuple[str, int]]:
        """The system's connections to its store, ``(client name, count)``, the monitor's own
        excluded."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the monitor's connection."""


def pg_connections(conn: psycopg.Connection[Any]) -> Sequence[tuple[str, int]]:
    """Connections to ``conn``'s database by ``application_name``, ``conn``'s own excluded."""
    rows = conn.execute(
        "SELECT coalesce(nullif(application_name, ''), '(unnamed)'), count(*)"
        " FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() GROUP BY 1"
    ).fetchall()
    return [(str(name), int(n)) for name, n in rows]


class SqlMonitor(Monitor):
    """The PostgreSQL systems' monitor: their ``started_sql``, ``done_sql``, ``finished_sql``."""

    def __init__(self, system: System, url: str) -> None:
        self.system = system
        self.conn = psycopg.connect(url, autocommit=True, application_name="bench-monitor")

    def _value(self, query: str) -> Any:
        row = self.conn.execute(query).fetchone()
        return row[0] if row else None

    def started(self) -> bool:
        return bool(self._value(self.system.started_sql))

    def done(self) -> bool:
        return bool(self._value(self.system.done_sql))

    def finished(self) -> int:
        return int(self._value(self.system.finished_sql) or 0)

    def connections(self) -> Sequence[tuple[str, int]]:
        return pg_connections(self.conn)

    def close(self) -> None:
        self.conn.close()


class System(abc.ABC):
    """One job queue under test."""

    name: ClassVar[str]
    #: Where the jobs live: ``postgresql`` (a fresh database per measurement) or ``redis`` (the
    #: benchmark's own redis-server, flushed before each measurement).
    store: ClassVar[str] = "postgresql"
    #: Distributions whose versions the report lists.
    packages: ClassVar[tuple[str, ...]]
    #: True once a worker has claimed something (checked every few ms before the drain clock).
    started_sql: ClassVar[str]
    #: True when no job is waiting or running (checked every few ms while draining).
    done_sql: ClassVar[str]
    #: How many jobs finished successfully (a sanity check after each drain).
    finished_sql: ClassVar[str]
    #: True when every job with an id up to ``{upto}`` is done (backlog scenario).
    done_upto_sql: ClassVar[str] = ""
    #: How many jobs wait to be claimed (soak scenario, sampled every few seconds).
    waiting_sql: ClassVar[str] = ""
    #: The system's tables, whose dead tuples and sizes the soak samples; the long transaction
    #: of the soak reads the first one.
    tables: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def install(self, url: str) -> None:
        """Create the system's schema in the empty database at ``url``, its recommended way."""

    @abc.abstractmethod
    def enqueue_single(self, url: str, n: int, limit: float = math.inf) -> Timed:
        """Enqueue jobs ``0..n-1``, one transaction each (stop early after ``limit`` s)."""

    @abc.abstractmethod
    def enqueue_bulk(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        """Enqueue jobs ``0..n-1`` in batches of ``batch`` (stop early after ``limit`` s)."""

    def has_bulk_fast(self) -> bool:
        """Whether the system has a documented fast path for many jobs of one kind besides its
        bulk API (pgjobs: ``perform_all_later_args``): the bulk scenario then measures it too
        (:meth:`enqueue_bulk_fast`), reported as ``bulk_fast``."""
        return False

    def enqueue_bulk_fast(self, url: str, n: int, batch: int, limit: float = math.inf) -> Timed:
        """Like :meth:`enqueue_bulk`, through the fast path of :meth:`has_bulk_fast`."""
        raise NotImplementedError(f"{self.name} has no fast path for many jobs of one kind")

    @abc.abstractmethod
    def enqueue_paced(self, url: str, ids: Sequence[int], rate: float) -> list[tuple[float, float]]:
        """Enqueue one job per ``1/rate`` s with its ``time.time()`` as an argument.

        Returns, per job, ``(sent_at, returned_at)``: the timestamp passed to the job (taken
        just before the enqueue call) and the time the call returned (the job was committed).
        """

    @abc.abstractmethod
    def drain_setups(self) -> list[WorkerSetup]:
        """The worker configurations the drain scenario sweeps (the first is the default)."""

    @abc.abstractmethod
    def latency_setup(self) -> WorkerSetup:
        """The configuration of the idle worker for the latency scenario."""

    @abc.abstractmethod
    def start(
        self, url: str, setup: WorkerSetup, workdir: Path, env: dict[str, str]
    ) -> list[subprocess.Popen[bytes]]:
        """Start the workers (their output goes to files in ``workdir``)."""

    def soak_setup(self) -> WorkerSetup:
        """The worker configuration of the soak (default: the latency scenario's)."""
        return self.latency_setup()

    def quick_drain_setups(self) -> list[WorkerSetup]:
        """The drain configurations run with ``--no-sweep`` (default: the last one)."""
        return self.drain_setups()[-1:]

    def prepare(self, dbs: Databases) -> str:
        """Make what every measurement starts from, once per run; what :meth:`fresh` is given.

        Default: a template database holding the system's schema (:meth:`install`).
        """
        template = dbs.create(f"{self.name}_tpl")
        self.install(with_database(dbs.url, template))
        return template

    def discard(self, dbs: Databases, template: str) -> None:
        """Undo :meth:`prepare` at the end of the run (default: drop the template database)."""
        dbs.drop(template)

    def fresh(self, dbs: Databases, template: str) -> AbstractContextManager[str]:
        """Fresh state for one measurement; its URL (default: a copy of the template database,
        dropped afterwards)."""
        return dbs.fresh(self.name, template)

    def monitor(self, url: str, total: int) -> Monitor:
        """The drain's monitor of ``total`` enqueued jobs (default: the system's SQL probes)."""
        return SqlMonitor(self, url)

    def load_backlog(self, url: str, ready: int, finished: int) -> int:
        """Write ``finished`` finished jobs, then ``ready`` ready jobs, straight into the tables.

        The rows are those the system's own enqueue and worker write, ids consecutive; the
        tables are then vacuumed and analysed.  Returns the id of the first ready job.
        """
        raise NotImplementedError

    def claim_plan(self, url: str, limit: int, insert: int = 0) -> str | None:
        """``EXPLAIN (ANALYZE, BUFFERS)`` of the system's claim of ``limit`` jobs.

        Run in a transaction that is rolled back, after inserting ``insert`` ready jobs in it;
        ``None`` when the system does not provide it.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """Settings common to every run of this system, for the report."""
        return {}

    def process_kind(self, cmdline: Sequence[str]) -> str:
        """What a process of this system is, from its command line (for the footprint).

        An empty string leaves the process out of the footprint.
        """
        return "worker"


# -- databases ------------------------------------------------------------------------------


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def admin_connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, application_name="pgjobs-bench")


class Databases:
    """Creates the benchmark's databases (each name starts ``bench_``) and drops them all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.created: list[str] = []

    def create(self, label: str, *, template: str | None = None) -> str:
        name = f"{DB_PREFIX}{label}_{uuid.uuid4().hex[:8]}"
        with admin_connect(self.url) as conn:
            if template is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        with admin_connect(self.url) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(reversed(self.created)):
            with suppress(psycopg.Error):
                self.drop(name)

    @contextmanager
    def fresh(self, label: str, template: str | None = None) -> Iterator[str]:
        """A new database (a copy of ``template`` if given) for one measurement; its URL."""
        name = self.create(label, template=template)
        try:
            yield with_database(self.url, name)
        finally:
            self.drop(name)


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


# -- processes ------------------------------------------------------------------------------


def subprocess_env(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker process: this one, the repo on PYTHONPATH, the URL."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
        "BENCH_DATABASE_URL": url,
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


def spawn(
    args: Sequence[str], workdir: Path, log_name: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session (so its whole tree can be stopped), output to a file."""
    log = open(workdir / log_name, "ab")  # noqa: SIM115 - closed when the process is stopped
    try:
        return subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()  # the child holds its own copy of the descriptor


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM each process, wait for it; SIGKILL its process group if it outlives ``timeout``."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Stragglers in the process's own session (children that outlived it).
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def check_alive(procs: Sequence[subprocess.Popen[bytes]], workdir: Path) -> None:
    for proc in procs:
        code = proc.poll()
        if code is not None:
            raise RuntimeError(
                f"worker {proc.args!r} exited with {code}; its log:\n{tail(workdir)}"
            )


def tail(workdir: Path, lines: int = 30) -> str:
    out = []
    for log in sorted(workdir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)


# -- pacing and statistics ------------------------------------------------------------------


def paced(
    ids: Sequence[int], rate: float, enqueue: Callable[[int, float], object]
) -> list[tuple[float, float]]:
    """Call ``enqueue(i, sent_at)`` on a fixed schedule of ``rate`` per second."""
    out: list[tuple[float, float]] = []
    start = time.perf_counter() + 0.01
    for k, i in enumerate(ids):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.time()
        enqueue(i, sent)
        out.append((sent, time.time()))
    return out


async def paced_async(
    ids: Sequence[int], rate: float, enqueue: Callable[[int, float], Awaitable[Any]]
) -> list[tuple[float, float]]:
    """:func:`paced` for an async enqueue."""
    out: list[tuple[float, float]] = []
    start = time.perf_counter() + 0.01
    for k, i in enumerate(ids):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.time()
        await enqueue(i, sent)
        out.append((sent, time.time()))
    return out


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        return cls(statistics.median(samples), min(samples), max(samples), tuple(samples))

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "samples": list(self.samples),
        }
