"""The benchmarked systems, one module each, imported only when selected."""

from __future__ import annotations

import importlib

from benchmarks.common import System

SYSTEMS = {
    "pgjobs": ("benchmarks.systems.pgjobs_", "PgJobs"),
    "procrastinate": ("benchmarks.systems.procrastinate_", "Procrastinate"),
    "pgqueuer": ("benchmarks.systems.pgqueuer_", "PgQueuerSystem"),
    # Redis-backed: they need a redis-server binary (benchmarks/redis_server.py).
    "celery": ("benchmarks.systems.celery_", "CelerySystem"),
    "dramatiq": ("benchmarks.systems.dramatiq_", "DramatiqSystem"),
    "rq": ("benchmarks.systems.rq_", "RQSystem"),
}


def load(name: str) -> System:
    """The system called ``name``; a clear error when its package is not installed."""
    module_name, class_name = SYSTEMS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(
            f"benchmarks: cannot load {name} ({exc}); install the bench extra: "
            "pip install -e '.[bench]'"
        ) from exc
    system: System = getattr(module, class_name)()
    return system
