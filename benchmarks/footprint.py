"""What a system's processes use while they work: memory, connections, CPU time.

:class:`Footprint` samples the RSS of every process of the system and its connections in
``pg_stat_activity`` (the drain scenario); :func:`cpu_seconds` reads the CPU time used so far by
the system's processes and their PostgreSQL backends, by kind (the backlog and soak scenarios).
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
import psycopg

from benchmarks.common import Monitor, System, pg_connections


def _task_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far: ``/proc/<pid>/task/*/schedstat`` (ns)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[0])
    return total / 1e9


def cpu_seconds(
    system: System, procs: Sequence[subprocess.Popen[bytes]], mon: psycopg.Connection[Any]
) -> dict[str, float]:
    """CPU time used so far by the system's processes and their PostgreSQL backends, by kind.

    The processes are ``procs`` and their descendants, by :meth:`System.process_kind` (``other``
    when it does not say); the backends are every connection to the monitor's database but the
    monitor's own, as ``db:<application_name>``.  Thread times come from the scheduler's
    nanosecond counters (Linux), so two samples a second apart are precise.
    """
    kinds: dict[int, str] = {}
    for popen in procs:
        with suppress(psutil.Error):
            root = psutil.Process(popen.pid)
            for proc in [root, *root.children(recursive=True)]:
                with suppress(psutil.Error):
                    kinds[proc.pid] = system.process_kind(proc.cmdline()) or "other"
    rows = mon.execute(
        "SELECT pid, coalesce(nullif(application_name, ''), '(unnamed)') FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    kinds.update({int(pid): f"db:{name}" for pid, name in rows})
    out: dict[str, float] = {}
    for pid, kind in kinds.items():
        out[kind] = out.get(kind, 0.0) + _task_seconds(pid)
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per kind between two :func:`cpu_seconds` samples (kinds that started count
    from zero; a process that exited meanwhile is not counted)."""
    return {k: max(0.0, v - before.get(k, 0.0)) for k, v in after.items()}


class Footprint:
    """Samples the RSS of the system's processes and its connections while it works.

    ``mon`` is a connection to the run's PostgreSQL database, or the drain's :class:`Monitor`
    (whose store may be Redis: then the connections are Redis clients).
    """

    def __init__(
        self,
        system: System,
        procs: Sequence[subprocess.Popen[bytes]],
        mon: psycopg.Connection[Any] | Monitor,
    ) -> None:
        self.system = system
        self.procs = procs
        self.mon = mon
        self.rss: dict[str, int] = defaultdict(int)  # kind -> max RSS of one process
        self.count: dict[str, int] = defaultdict(int)  # kind -> processes
        self.conns: dict[str, int] = defaultdict(int)  # application_name -> max connections
        self.total_conns = 0

    def sample(self) -> None:
        counts: dict[str, int] = defaultdict(int)
        for popen in self.procs:
            with suppress(psutil.Error):
                root = psutil.Process(popen.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with suppress(psutil.Error):
                        kind = self.system.process_kind(proc.cmdline())
                        if not kind:
                            continue
                        counts[kind] += 1
                        self.rss[kind] = max(self.rss[kind], proc.memory_info().rss)
        for kind, n in counts.items():
            self.count[kind] = max(self.count[kind], n)
        rows = self.mon.connections() if isinstance(self.mon, Monitor) else pg_connections(self.mon)
        for name, n in rows:
            self.conns[str(name)] = max(self.conns[str(name)], int(n))
        self.total_conns = max(self.total_conns, sum(int(n) for _, n in rows))

    def summary(self) -> dict[str, Any]:
        kinds = {}
        for kind, n in sorted(self.count.items()):
            conns = self.conns.get(f"pgjobs-{kind}")
            kinds[kind] = {
                "processes": n,
                "rss_mb": round(self.rss[kind] / 2**20, 1),
                "connections": conns,
                "connections_per_process": None if conns is None else round(conns / n, 2),
            }
        return {
            "kinds": kinds,
            "connections": dict(self.conns),
            "total_connections": self.total_conns,
        }
