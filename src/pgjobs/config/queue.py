"""``config/queue.yml``: the workers and dispatchers ``pgjobs start`` runs, and global settings.

The format and defaults are Solid Queue's; ``docs/configuration.md`` describes every key.
:func:`load_config` finds, reads and validates the file, reporting every problem at once in a
:class:`~pgjobs.errors.ConfigurationError`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from pgjobs.config.yamlfile import (
    Problems,
    YamlMap,
    describe,
    join,
    line_of,
    load_settings,
    resolve_env,
)
from pgjobs.errors import ConfigurationError

DEFAULT_PATH = Path("config/queue.yml")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]+\*?")
DEFAULT_PREFETCH = 200  # a worker's claimed jobs that may wait for a thread (see WorkerConfig)
_QUEUE_RULE = 'use letters, digits, "_", ".", ":", "-" and an optional trailing "*"'
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[\s.]*[a-z]+\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)[\s.]*([a-z]+)")
_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800),
}


@dataclass(frozen=True)
class WorkerConfig:
    """``processes`` worker processes, each running jobs from ``queues`` in ``threads`` threads.

    ``weights``: with ``queues`` given as a mapping (``{critical: 6, default: 3, low: 1}``), each
    queue's weight, in the order of ``queues``: queues are picked in proportion to their weights
    instead of in strict order (``None``: strict order).

    ``prefetch``: how many claimed jobs may wait in a process for a thread, beyond one per idle
    thread (bounded further by time: :mod:`pgjobs.processes.prefetch`); 0 claims for idle threads
    only."""

    queues: tuple[str, ...] = ("*",)
    threads: int = 3
    processes: int = 1
    polling_interval: float = 0.1
    weights: tuple[int, ...] | None = None
    prefetch: int = DEFAULT_PREFETCH


@dataclass(frozen=True)
class DispatcherConfig:
    """A dispatcher: makes due scheduled jobs ready and maintains concurrency limits."""

    polling_interval: float = 1.0
    batch_size: int = 500
    concurrency_maintenance: bool = True
    concurrency_maintenance_interval: float = 60.0


@dataclass(frozen=True)
class WebConfig:
    """The ``web:`` section: the dashboard's basic-auth credentials and read-only mode."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    read_only: bool = False


@dataclass(frozen=True)
class MetricsConfig:
    """The ``metrics:`` section: where ``pgjobs start`` serves Prometheus ``/metrics``.

    ``port`` unset: no endpoint (``pgjobs start --metrics-port`` sets it too).  ``refresh``: the
    database gauges are queried at most once per this many seconds, however often it is scraped.
    """

    host: str = "127.0.0.1"
    port: int | None = None
    refresh: float = 5.0


@dataclass(frozen=True)
class Config:
    """The whole ``queue.yml`` for one environment; times are in seconds."""

    workers: tuple[WorkerConfig, ...] = (WorkerConfig(),)
    dispatchers: tuple[DispatcherConfig, ...] = (DispatcherConfig(),)
    database_url: str | None = None
    schema: str | None = None
    direct_database_url: str | None = None
    transaction_pooling: bool = False
    app: str | None = None
    heartbeat_interval: float = 60.0
    process_alive_threshold: float = 300.0
    shutdown_timeout: float = 5.0
    preserve_finished_jobs: bool = True
    clear_finished_jobs_after: float = 86400.0
    listen_notify: bool = True
    durable_claims: bool = True
    max_interruptions: int = 3
    retry: dict[str, Any] | None = None
    job_timeout: float | None = None
    timeout_grace: float = 2.0
    web: WebConfig = WebConfig()
    metrics: MetricsConfig = MetricsConfig()
    mode: str = "fork"
    path: Path | None = None
    env: str = "development"


MODES = ("fork", "async")


def process_mode(value: Any) -> str:
    if value not in MODES:
        raise ValueError(
            f"must be fork (workers as child processes) or async (everything as threads of one "
            f"process), got {value!r}"
        )
    return str(value)


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"must be a positive integer, got {describe(value)}")
    return value


def prefetch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            "must be a non-negative integer: how many claimed jobs may wait for a thread "
            f"(0: claim only for idle threads), got {describe(value)}"
        )
    return value


def positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"must be a positive number, got {describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {describe(value)}")
    return float(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {describe(value)}")
    return value


def non_empty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {describe(value)}")
    return value


def port_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"must be a TCP port number (1-65535), got {describe(value)}")
    return value


def schema_name(value: Any) -> str:
    if not isinstance(value, str) or not _SCHEMA_NAME.fullmatch(value):
        raise ValueError(f"must be a PostgreSQL schema name like 'pgjobs', got {describe(value)}")
    return value


RETRY_KEYS = ("attempts", "wait", "jitter")


def retry_policy(value: Any) -> dict[str, Any]:
    """The default retry policy: a mapping of ``attempts``, ``wait`` and ``jitter``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of {', '.join(RETRY_KEYS)}, got {describe(value)}")
    unknown = sorted(set(value) - set(RETRY_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(RETRY_KEYS)}")
    policy = dict(value)
    if isinstance(policy.get("wait"), str) and policy["wait"] not in (
        "polynomially_longer",
        "exponentially_longer",
    ):
        policy["wait"] = parse_duration(policy["wait"])
    from pgjobs.jobs.rules import retry_on

    try:
        retry_on(Exception, **policy)
    except Exception as exc:  # ConfigurationError: say what is wrong, without the prefix
        raise ValueError(str(exc).split(": ", 1)[-1]) from exc
    return policy


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"45s"``, ``"30m"``, ``"12h"``, ``"1 day"``."""
    seconds = value
    if isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION_PART.findall(text) if _DURATION.fullmatch(text) else []
        if parts and all(unit in _UNITS for _, unit in parts):
            seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
        elif re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
    try:
        return positive_number(seconds)
    except ValueError:
        example = 'seconds or a duration like "45s", "30m", "12h", "1 day"'
        raise ValueError(f"must be a positive number of {example}, got {describe(value)}") from None


_WORKER = {
    "threads": positive_int,
    "processes": positive_int,
    "polling_interval": positive_number,
    "prefetch": prefetch_size,
}
_DISPATCHER = {
    "polling_interval": positive_number,
    "batch_size": positive_int,
    "concurrency_maintenance": boolean,
    "concurrency_maintenance_interval": positive_number,
}
_GLOBAL: dict[str, Callable[[Any], Any]] = {
    "database_url": non_empty_string,
    "schema": schema_name,
    "direct_database_url": non_empty_string,
    "transaction_pooling": boolean,
    "app": non_empty_string,
    "heartbeat_interval": positive_number,
    "process_alive_threshold": positive_number,
    "shutdown_timeout": positive_number,
    "preserve_finished_jobs": boolean,
    "clear_finished_jobs_after": parse_duration,
    "listen_notify": boolean,
    "durable_claims": boolean,
    "max_interruptions": positive_int,
    "retry": retry_policy,
    "job_timeout": parse_duration,
    "timeout_grace": positive_number,
    "mode": process_mode,
}
_WEB = {"username": non_empty_string, "password": non_empty_string, "read_only": boolean}
_METRICS = {"host": non_empty_string, "port": port_number, "refresh": positive_number}
KEYS = frozenset(f.name for f in fields(Config)) - {"path", "env"}
C = TypeVar("C", WorkerConfig, DispatcherConfig, WebConfig, MetricsConfig, Config)


def _build(
    cls: type[C],
    settings: Mapping[str, Any],
    converters: Mapping[str, Callable[[Any], Any]],
    where: str,
    problems: Problems,
    **given: Any,
) -> C:
    """``cls(**given, **settings)``, with missing and invalid settings at their default."""
    allowed = {f.name for f in fields(cls)} - {"path", "env", "weights"}  # weights: in queues
    problems.check_keys(settings, allowed, where)
    values = {
        key: problems.take(settings, key, convert, getattr(cls, key), where)
        for key, convert in converters.items()
    }
    return cls(**values, **given)


def _weighted(value: Mapping[Any, Any], line: int | None, where: str, problems: Problems) -> Any:
    """``queues: {critical: 6, default: 3, low: 1}``: named queues and their positive weights."""
    queues: list[str] = []
    weights: list[int] = []
    for name, weight in value.items():
        name_where = join(where, str(name))
        if isinstance(name, str) and "*" in name:
            message = f"weighted queues are named queues: {name!r} is a pattern"
            problems.add(message, line=line_of(value, name) or line, where=name_where)
        elif not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
            message = f"invalid queue name {describe(name)} in weighted queues: {_QUEUE_RULE}"
            problems.add(message, line=line_of(value, name) or line, where=name_where)
        elif isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            message = f"a queue's weight must be a positive integer, got {describe(weight)}"
            problems.add(message, line=line_of(value, name) or line, where=name_where)
        else:
            queues.append(name)
            weights.append(weight)
    if not value:
        problems.add("must name at least one queue", line=line, where=where)
    if not queues:
        return WorkerConfig.queues, None
    return tuple(queues), tuple(weights)


def _queues(
    worker: Mapping[str, Any], where: str, problems: Problems
) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    """The worker's queues, and their weights when they are given as a mapping."""
    value, line, where = worker.get("queues"), line_of(worker, "queues"), join(where, "queues")
    if value is None:
        return WorkerConfig.queues, None
    if isinstance(value, Mapping):
        return _weighted(value, line, where, problems)  # type: ignore[no-any-return]
    return _listed(value, line, where, problems), None


def _listed(value: Any, line: int | None, where: str, problems: Problems) -> tuple[str, ...]:
    if isinstance(value, str):
        names = [(name.strip(), line, where) for name in value.split(",")]
    elif isinstance(value, list | tuple):
        names = [(name, line_of(value, i), join(where, i)) for i, name in enumerate(value)]
    else:
        message = (
            "must be a queue name, a list of them (strict order), or a mapping of queue names "
            f"to weights, got {describe(value)}"
        )
        problems.add(message, line=line, where=where)
        return WorkerConfig.queues
    if not names:
        problems.add('must name at least one queue ("*" for all)', line=line, where=where)
    queues: list[str] = []
    for name, name_line, name_where in names:
        if not isinstance(name, str) or not (name == "*" or _QUEUE_NAME.fullmatch(name)):
            message = f"invalid queue name {describe(name)}: {_QUEUE_RULE}"
            problems.add(message, line=name_line, where=name_where)
        elif name in queues:
            problems.add(f"queue {name!r} is listed twice", line=name_line, where=name_where)
        else:
            queues.append(name)
    if "*" in queues and len(queues) > 1:
        message = '"*" means all queues and cannot be combined with other queue names'
        problems.add(message, line=line, where=where)
    return tuple(queues) or WorkerConfig.queues


def _web(settings: Mapping[str, Any], problems: Problems) -> WebConfig:
    """The ``web:`` mapping (dashboard credentials): both or neither of username and password."""
    value = settings["web"]
    if not isinstance(value, Mapping):
        message = f"must be a mapping of username, password and read_only, got {describe(value)}"
        problems.add(message, line=line_of(settings, "web"), where="web")
        return WebConfig()
    web = _build(WebConfig, value, _WEB, "web", problems)
    if (web.username is None) != (web.password is None):
        message = "give both username and password (the dashboard's HTTP basic auth), or neither"
        problems.add(message, line=line_of(settings, "web"), where="web")
        return WebConfig(read_only=web.read_only)
    return web


def _metrics(settings: Mapping[str, Any], problems: Problems) -> MetricsConfig:
    """The ``metrics:`` mapping (host, port, refresh)."""
    value = settings["metrics"]
    if not isinstance(value, Mapping):
        message = f"must be a mapping of host, port and refresh, got {describe(value)}"
        problems.add(message, line=line_of(settings, "metrics"), where="metrics")
        return MetricsConfig()
    return _build(MetricsConfig, value, _METRICS, "metrics", problems)


def _entries(settings: Mapping[str, Any], key: str, problems: Problems) -> list[tuple[Any, str]]:
    """The ``(mapping, where)`` of each entry of the ``workers`` / ``dispatchers`` list."""
    value, kind = settings[key], key.removesuffix("s")
    if not isinstance(value, list | tuple):
        message = f"must be a list of {kind} settings (each starting with '- ')"
        problems.add(message, line=line_of(settings, key), where=key)
        return []
    entries = []
    for index, entry in enumerate(value):
        if entry is not None and not isinstance(entry, Mapping):
            message = f"must be a mapping of {kind} settings, got {describe(entry)}"
            problems.add(message, line=line_of(value, index), where=join(key, index))
        else:
            entries.append((entry or YamlMap(line_of(value, index)), join(key, index)))
    return entries


def parse_config(
    settings: Mapping[str, Any],
    *,
    problems: Problems | None = None,
    path: Path | None = None,
    env: str = "development",
) -> Config:
    """A :class:`Config` from a ``queue.yml`` section (e.g. a dict); a missing or null key takes its
    default. Problems go to ``problems``, or are raised here if it is not given."""
    collected = Problems(path) if problems is None else problems
    given: dict[str, Any] = {"path": path, "env": env}
    if settings.get("workers") is not None:
        workers = []
        for entry, where in _entries(settings, "workers", collected):
            queues, weights = _queues(entry, where, collected)
            workers.append(
                _build(
                    WorkerConfig, entry, _WORKER, where, collected, queues=queues, weights=weights
                )
            )
        given["workers"] = tuple(workers)
    if settings.get("dispatchers") is not None:
        given["dispatchers"] = tuple(
            _build(DispatcherConfig, entry, _DISPATCHER, where, collected)
            for entry, where in _entries(settings, "dispatchers", collected)
        )
    if settings.get("web") is not None:
        given["web"] = _web(settings, collected)
    if settings.get("metrics") is not None:
        given["metrics"] = _metrics(settings, collected)
    config = _build(Config, settings, _GLOBAL, "", collected, **given)
    if config.process_alive_threshold <= config.heartbeat_interval:
        key = "process_alive_threshold"
        message = f"must be longer than heartbeat_interval ({config.heartbeat_interval:g})"
        collected.add(message, line=line_of(settings, key), where=key)
    if problems is None:
        collected.raise_if_any()
    return config


def load_config(
    path: str | Path | None = None,
    *,
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate ``queue.yml`` for ``env`` (default: ``PGJOBS_ENV``, else "development").

    The file is ``path``, else ``$PGJOBS_CONFIG``, else ``config/queue.yml`` if it exists; with no
    file every setting has its default. Raises ConfigurationError listing every problem found.
    """
    environ = os.environ if environ is None else environ
    env = resolve_env(env, environ)
    origin = ""
    if path is None and environ.get("PGJOBS_CONFIG"):
        path, origin = environ["PGJOBS_CONFIG"], " (set by PGJOBS_CONFIG)"
    if path is None:
        if not DEFAULT_PATH.is_file():
            return Config(env=env)
        path = DEFAULT_PATH
    elif not Path(path).is_file():
        why = "is not a file" if Path(path).exists() else "does not exist"
        raise ConfigurationError(problems=[f"{path}: the configuration file {why}{origin}"])
    problems = Problems(path)
    settings = load_settings(path, known_keys=KEYS, problems=problems, env=env, environ=environ)
    config = parse_config(settings, problems=problems, path=Path(path), env=env)
    problems.raise_if_any()
    return config
