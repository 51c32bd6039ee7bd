"""The chaos cluster: one dedicated PostgreSQL and three "hosts", each a ``pgjobs start``.

The server is pgjobs' embedded one (pgserver: on every machine the project installs on), in a
directory of its own so the run can stop and start it.  It listens on a Unix socket only; each
host reaches it through its own :class:`~tests.chaos.proxy.Proxy` on 127.0.0.1, so one host can
be partitioned from it.  Each host's supervisor runs in its own process group (a whole host can
be SIGKILLed at once) with ``PGJOBS_HOSTNAME`` set to the host's name.

Processes are found through ``/proc`` (Linux): a child's kind is in its process title
(``pgjobs-worker: ...``), or before it sets one, in its ``PGJOBS_CHILD`` environment variable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from pgjobs.db import embedded
from tests.chaos import ledger
from tests.chaos.proxy import Proxy

ROOT = Path(__file__).resolve().parent.parent.parent
HEARTBEAT_INTERVAL = 1.0
ALIVE_THRESHOLD = 4.0
SHUTDOWN_TIMEOUT = 3.0
MAX_INTERRUPTIONS = 3
MAINTENANCE_INTERVAL = 2.0
WORKER_PROCESSES = 2
THREADS = 3

CONFIG = f"""
heartbeat_interval: {HEARTBEAT_INTERVAL}
process_alive_threshold: {ALIVE_THRESHOLD}
shutdown_timeout: {SHUTDOWN_TIMEOUT}
max_interruptions: {MAX_INTERRUPTIONS}
dispatchers:
  - polling_interval: 0.2
    batch_size: 100
    concurrency_maintenance_interval: {MAINTENANCE_INTERVAL}
workers:
  - queues: "*"
    threads: {THREADS}
    processes: {WORKER_PROCESSES}
    polling_interval: 0.2
"""


class Server:
    """The embedded PostgreSQL the run faults, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""
        self.socket = ""

    def start(self) -> str:
        self.url = embedded.start(self.directory)
        info = conninfo_to_dict(self.url)
        self.socket = f"{info['host']}/.s.PGSQL.{info.get('port') or 5432}"
        return self.url

    def stop(self) -> None:
        embedded.stop(self.directory)

    @property
    def running(self) -> bool:
        return embedded.running_pid(self.directory) is not None

    def proxied_url(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{embedded.DATABASE}"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Running or stopped; a zombie (dead, not yet reaped) is not alive."""
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    if not stat:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat").decode(errors="replace")
            if stat:
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                    found.append(int(entry))
    return found


def child_kind(pid: int) -> str | None:
    title = _read(f"/proc/{pid}/cmdline")  # its process title, once set (it may clobber environ)
    for kind in ("worker", "dispatcher", "supervisor"):
        if title.startswith(f"pgjobs-{kind}".encode()):
            return kind
    for item in _read(f"/proc/{pid}/environ").split(b"\0"):
        if item.startswith(b"PGJOBS_CHILD="):
            with contextlib.suppress(ValueError):
                return str(json.loads(item.split(b"=", 1)[1])["kind"])
    return None


@dataclass
class Host:
    """One host: a proxy and the current ``pgjobs start`` behind it."""

    name: str
    proxy: Proxy
    url: str
    config: Path
    log: Path
    ledger_url: str
    popen: subprocess.Popen[bytes] | None = None
    generations: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        env = {
            **os.environ,
            "PGJOBS_HOSTNAME": self.name,
            ledger.ENV: self.ledger_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        with self.log.open("ab") as out:
            out.write(f"=== {self.name} generation {len(self.generations)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "pgjobs", "start", "--app", "tests.chaos.workload",
                 "--database-url", self.url, "--config", str(self.config), "--skip-recurring"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.generations.append(self.popen)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def pids(self) -> list[int]:
        return group_pids(self.pid) if self.popen is not None else []

    def workers(self) -> list[int]:
        return [pid for pid in self.pids() if child_kind(pid) == "worker"]

    def kill(self) -> list[int]:
        """SIGKILL the whole host (supervisor and children); returns the pids it had."""
        pids = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        assert self.popen is not None
        self.popen.wait(timeout=10)
        return pids

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM the supervisor; its exit code, or None if it did not exit in time."""
        assert self.popen is not None
        if self.popen.poll() is not None:
            return self.popen.returncode
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> None:
        """Leave nothing running: SIGCONT then SIGKILL every group this host ever had."""
        for popen in self.generations:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)


def write_config(directory: Path) -> Path:
    path = directory / "queue.yml"
    path.write_text(textwrap.dedent(CONFIG))
    return path


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
