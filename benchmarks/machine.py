"""The machine, PostgreSQL and package versions a run was made with."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
import psycopg

PG_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "wal_sync_method",
    "commit_delay",
    "shared_buffers",
    "max_connections",
    "max_wal_size",
    "checkpoint_timeout",
    "work_mem",
    "autovacuum",
    "jit",
)
PACKAGES = (
    "pgjobs",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "procrastinate",
    "pgqueuer",
    "asyncpg",
    "uvloop",
    "psutil",
    "celery",
    "kombu",
    "dramatiq",
    "rq",
    "redis",
)


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def disk_of(path: str) -> str:
    usage = psutil.disk_usage(path)
    return f"{usage.total / 2**30:.0f} GiB"


def pgjobs_source() -> str | None:
    """Where ``pgjobs`` is imported from (None when it is not installed)."""
    try:
        import pgjobs
    except ImportError:
        return None
    return str(Path(pgjobs.__file__).resolve().parent)


def revision() -> str:
    """The pgjobs source measured: the commit, and whether ``src/`` has uncommitted changes.

    When pgjobs is imported from outside this checkout (``PYTHONPATH`` pointing at an export of
    a commit, to measure it while the checkout changes), ``BENCH_PGJOBS_REVISION`` names it.
    """
    root = Path(__file__).resolve().parent.parent
    source = pgjobs_source()
    if source and not Path(source).is_relative_to(root):
        label = os.environ.get("BENCH_PGJOBS_REVISION", "unknown revision")
        return f"{label}, imported from {source} (not this checkout's src/)"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "src", "migrations"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes in src/ or migrations/" if dirty else "")  # fmt: skip


def describe(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in PG_SETTINGS
        }
        data_dir = None
        try:
            row = conn.execute("SHOW data_directory").fetchone()
            data_dir = row[0] if row else None
        except psycopg.Error:
            pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "postgresql": version[0] if version else "unknown",
        "postgresql_settings": settings,
        "postgresql_data_directory_disk": disk_of(data_dir)
        if data_dir and Path(data_dir).exists()
        else None,
        "packages": versions,
        "pgjobs_revision": revision(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
