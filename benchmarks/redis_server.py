"""The benchmark's own Redis server, and what the Redis-backed peers (celery, dramatiq, rq) share.

The PostgreSQL systems get a fresh database per measurement; the Redis peers get the same
``redis-server`` throughout, started by the benchmark the first time a Redis peer needs it (the
binary run directly, on a free port, its files in a temporary directory; never the system's
service) and flushed (``FLUSHALL``) before and after every measurement, so each starts empty.

Configuration: Debian's ``/etc/redis/redis.conf`` when it is readable ("persistence as shipped":
RDB snapshots at redis' built-in save points ``3600 1 300 100 60 10000``, ``appendonly no``),
with ``port``, ``bind``, ``dir``, ``daemonize``, ``supervised``, ``pidfile`` and ``logfile``
overridden on the command line; otherwise redis' compiled-in defaults, which persist the same
way.  The report records the effective ``save``/``appendonly``/``appendfsync``.

``BENCH_REDIS_SERVER`` names the binary (default: ``redis-server`` on the ``PATH``).  Without it
a Redis peer named in ``--against`` stops the command before anything is measured, saying what
to install: a peer asked for explicitly is never skipped silently.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import redis

from benchmarks.common import Databases, Monitor, System

BINARY_ENV = "BENCH_REDIS_SERVER"
DEBIAN_CONFIG = Path("/etc/redis/redis.conf")
INSTALL_HINT = (
    "install it (Debian/Ubuntu: apt-get update && apt-get install -y redis-server; the "
    "benchmark runs the binary itself, the service need not run) or set "
    f"{BINARY_ENV}=/path/to/redis-server"
)


def binary() -> str | None:
    """The ``redis-server`` the benchmark runs, or None when there is none."""
    return shutil.which(os.environ.get(BINARY_ENV, "redis-server"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RedisServer:
    """One ``redis-server`` process, started and stopped by the benchmark."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.config = str(DEBIAN_CONFIG) if os.access(DEBIAN_CONFIG, os.R_OK) else None
        args = [path, *([self.config] if self.config else [])]
        args += [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--supervised",
            "no",
            "--pidfile",
            str(self.dir / "redis.pid"),
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.dir / "redis.log"
                    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"redis-server did not start: {args}\n{text}") from None
                time.sleep(0.05)

    def flush(self) -> None:
        """Empty the server (every database), as a fresh PostgreSQL database is empty."""
        self.client.flushall()

    def describe(self) -> dict[str, Any]:
        info = self.client.info("server")
        config: dict[str, Any] = {}
        for key in ("save", "appendonly", "appendfsync", "maxmemory", "io-threads"):
            config.update(self.client.config_get(key))
        return {
            "version": info.get("redis_version"),
            "binary": self.path,
            "config_file": self.config or "none (compiled-in defaults)",
            "settings": {str(k): str(v) for k, v in config.items()},
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis saves a snapshot when save points are set
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_server: RedisServer | None = None


def ensure() -> RedisServer:
    """The benchmark's Redis server, started on first use."""
    global _server
    if _server is None:
        path = binary()
        if path is None:
            raise SystemExit(f"benchmarks: redis-server not found: {INSTALL_HINT}")
        _server = RedisServer(path)
        atexit.register(shutdown)
    return _server


def describe() -> dict[str, Any] | None:
    """The running server's version and persistence settings (None if none was started)."""
    return _server.describe() if _server is not None else None


def shutdown() -> None:
    global _server
    if _server is not None:
        server, _server = _server, None
        server.stop()


# -- what the Redis peers share -------------------------------------------------------------


class RedisMonitor(Monitor):
    """The drain's probes for a Redis peer: its own keys, read with one pipeline per poll."""

    def __init__(self, system: RedisSystem, url: str, total: int) -> None:
        self.system = system
        self.total = total
        self.client = redis.Redis.from_url(url)
        self.own_id = int(self.client.client_id())

    def started(self) -> bool:
        return self.system.taken(self.client, self.total) > 0

    def done(self) -> bool:
        return self.system.completed(self.client, self.total) >= self.total

    def finished(self) -> int:
        return self.system.succeeded(self.client, self.total)

    def connections(self) -> Sequence[tuple[str, int]]:
        counts: dict[str, int] = {}
        for client in self.client.client_list():
            if int(client["id"]) == self.own_id:
                continue
            name = client.get("name") or "(unnamed)"
            counts[name] = counts.get(name, 0) + 1
        return list(counts.items())

    def close(self) -> None:
        self.client.close()


class RedisSystem(System):
    """A peer that keeps its jobs in Redis: the benchmark's own server, flushed per measurement.

    What each measurement is handed as its URL is the server's ``redis://`` URL; the workers
    get it in ``BENCH_DATABASE_URL`` like the PostgreSQL systems' workers get theirs.  The drain
    monitor asks the system three questions about its own keys (:meth:`taken`,
    :meth:`completed`, :meth:`succeeded`) instead of the SQL probes.
    """

    store = "redis"
    started_sql = ""
    done_sql = ""
    finished_sql = ""

    def __init__(self) -> None:
        if binary() is None:
            raise SystemExit(f"benchmarks: {self.name} needs redis-server: {INSTALL_HINT}")

    def install(self, url: str) -> None:
        """Nothing to install: a Redis peer creates its keys as it goes."""

    def prepare(self, dbs: Databases) -> str:
        return ensure().url

    def discard(self, dbs: Databases, template: str) -> None:
        """The server outlives the scenarios; ``python -m benchmarks`` stops it at the end."""

    @contextmanager
    def fresh(self, dbs: Databases, template: str) -> Iterator[str]:
        server = ensure()
        server.flush()
        try:
            yield template
        finally:
            server.flush()

    def monitor(self, url: str, total: int) -> Monitor:
        return RedisMonitor(self, url, total)

    # What the monitor asks: each takes the monitor's client and the jobs enqueued.
    queue_keys: ClassVar[tuple[str, ...]] = ()

    def waiting(self, client: redis.Redis) -> int:
        """Jobs no worker has taken yet (the lengths of :attr:`queue_keys`)."""
        pipe = client.pipeline(transaction=False)
        for key in self.queue_keys:
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())

    def taken(self, client: redis.Redis, total: int) -> int:
        """Jobs a worker has taken from the queue (the drain clock starts at the first)."""
        return total - self.waiting(client)

    def completed(self, client: redis.Redis, total: int) -> int:
        """Jobs done, successfully or not (the drain clock stops when all are)."""
        raise NotImplementedError

    def succeeded(self, client: redis.Redis, total: int) -> int:
        """Jobs that ran successfully (the sanity check after a drain)."""
        return self.completed(client, total)
