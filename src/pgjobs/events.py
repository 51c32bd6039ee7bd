"""Instrumentation: named events with structured fields, subscribers, and the log lines they make.

pgjobs emits an event at each step of a job's life and of its processes' maintenance::

    def on_failure(event: pgjobs.Event) -> None:
        metrics.increment("jobs.failed", tags={"class": event["class"]})

    pgjobs.subscribe("fail", on_failure)      # or "*" for every event

``docs/observability.md`` lists every event, where it is emitted and its fields.  Subscribers run
synchronously in the thread that emits the event (a job thread, a worker's main thread …): keep
them quick.  An exception raised by a subscriber is reported to the :func:`on_thread_error`
handlers and never disturbs pgjobs.

Emitting is nearly free when nobody listens: call sites test ``name in active`` (one dict
look-up) before building the fields, so a worker whose log level is INFO does no per-job work for
the DEBUG-level events.  :func:`log_events` is the one subscriber that turns events into log
lines (standard :mod:`logging`, logger ``"pgjobs"``; the fields go to ``record.pgjobs``, which the
JSON log format prints as keys).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger("pgjobs")

#: Every event pgjobs emits, with the level its log line has.
EVENTS: Mapping[str, int] = {
    # one per job: DEBUG, so the hot path stays quiet (and free) unless asked
    "enqueue": logging.DEBUG,
    "claim": logging.DEBUG,
    "perform_start": logging.DEBUG,
    "perform": logging.DEBUG,
    # one per batch of maintenance work
    "dispatch_scheduled": logging.DEBUG,
    "unblock": logging.DEBUG,
    "rate_limited": logging.DEBUG,  # claimed jobs over their rate limit went back in line
    "rate_release": logging.DEBUG,  # the dispatcher moved rate-limited jobs to ready
    "concurrency_maintenance": logging.INFO,
    # an enqueue that did not write a job: a unique key held, or no slot with on_conflict=discard
    "enqueue_skipped": logging.INFO,
    # a job did not simply finish
    "retry": logging.WARNING,
    "discard": logging.WARNING,
    "timeout": logging.WARNING,
    "fail": logging.ERROR,
    # job control: a job cancelled (or asked to stop), snoozed, interrupted at a checkpoint
    "cancel": logging.INFO,
    "cancel_request": logging.INFO,
    "snooze": logging.INFO,
    "result_error": logging.WARNING,  # a finished job's result could not be stored
    "interrupt": logging.INFO,
    # processes and operators
    "release_claimed": logging.WARNING,
    "prune_processes": logging.WARNING,
    "recover": logging.WARNING,
    "recover_orphans": logging.WARNING,
    "kill_silent": logging.ERROR,
    "run_alone": logging.INFO,
    "retry_failed": logging.INFO,
    "discard_failed": logging.INFO,
    "discard_waiting": logging.INFO,
    "dispatch_now": logging.INFO,
    "clear_finished": logging.INFO,
}

Subscriber = Callable[["Event"], object]
ThreadErrorHandler = Callable[[BaseException, str], object]


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its ``name``, its ``fields`` and when it happened (``time.time()``)."""

    name: str
    fields: dict[str, Any]
    time: float

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


# name -> its subscribers ("*" subscribers included).  Only names with subscribers are keys, so
# ``name in active`` is the whole cost of an event nobody listens to.  Mutated in place only.
active: dict[str, tuple[Subscriber, ...]] = {}
_by_name: dict[str, list[Subscriber]] = {}
_thread_error_handlers: list[ThreadErrorHandler] = []
_lock = threading.Lock()


def _rebuild() -> None:
    everywhere = _by_name.get("*", [])
    for name in EVENTS:
        subscribers = tuple(_by_name.get(name, [])) + tuple(everywhere)
        if subscribers:
            active[name] = subscribers
        else:
            active.pop(name, None)


def _check(name: str) -> None:
    if name != "*" and name not in EVENTS:
        known = ", ".join(sorted(EVENTS))
        raise ValueError(f"pgjobs has no event {name!r}; the events are: {known} (or '*')")


def subscribe(name: str, fn: Subscriber) -> Subscriber:
    """Call ``fn(event)`` for every event called ``name`` (``"*"``: every event); returns ``fn``."""
    _check(name)
    with _lock:
        _by_name.setdefault(name, []).append(fn)
        _rebuild()
    return fn


def unsubscribe(name: str, fn: Subscriber) -> None:
    """Undo one :func:`subscribe` of ``fn`` to ``name`` (nothing happens if it was not)."""
    _check(name)
    with _lock:
        subscribers = _by_name.get(name, [])
        if fn in subscribers:
            subscribers.remove(fn)
        _rebuild()


def emit(name: str, **fields: Any) -> None:
    """Deliver an event to its subscribers (hot paths test ``name in active`` first)."""
    subscribers = active.get(name)
    if not subscribers:
        return
    event = Event(name, fields, time.time())
    for fn in subscribers:
        try:
            fn(event)
        except Exception as exc:
            thread_error(exc, f"subscriber {getattr(fn, '__qualname__', fn)!r} of {name!r}")


def job_fields(
    job_id: object, class_name: str, queue: str, attempt: int | None = None, **more: Any
) -> dict[str, Any]:
    """The fields every job event starts with: ``job_id``, ``class``, ``queue`` (``attempt``)."""
    fields: dict[str, Any] = {"job_id": job_id, "class": class_name, "queue": queue}
    if attempt is not None:
        fields["attempt"] = attempt
    fields.update(more)
    return fields


@contextmanager
def recording(*names: str) -> Iterator[list[Event]]:
    """Collect the events called ``names`` (default: all) during the ``with`` block (tests)."""
    received: list[Event] = []
    chosen = names or ("*",)
    for name in chosen:
        subscribe(name, received.append)
    try:
        yield received
    finally:
        for name in chosen:
            unsubscribe(name, received.append)


# -- errors in pgjobs' own threads ---------------------------------------------------------------


def on_thread_error(fn: ThreadErrorHandler) -> ThreadErrorHandler:
    """Call ``fn(error, where)`` for an unexpected error inside one of pgjobs' own threads.

    ``where`` names the thread or the piece of pgjobs that caught it.  Such errors are always
    logged (ERROR, with the traceback); handlers are for error trackers.  Usable as a decorator.
    """
    with _lock:
        _thread_error_handlers.append(fn)
    return fn


def remove_thread_error_handler(fn: ThreadErrorHandler) -> None:
    with _lock:
        if fn in _thread_error_handlers:
            _thread_error_handlers.remove(fn)


def thread_error(error: BaseException, where: str | None = None) -> None:
    """Report an unexpected error caught in a pgjobs thread: log it, then tell the handlers."""
    where = where or threading.current_thread().name
    log.error("unexpected error in %s: %r", where, error, exc_info=error)
    for fn in list(_thread_error_handlers):
        try:
            fn(error, where)
        except Exception:
            log.exception("the on_thread_error handler %r failed", fn)


# -- log lines ------------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def format_fields(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs (logfmt), ``None`` values left out."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items() if value is not None)


class LogSubscriber:
    """Turns events into one log line each, at the level :data:`EVENTS` gives them."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __call__(self, event: Event) -> None:
        level = EVENTS.get(event.name, logging.INFO)
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level,
                "%s %s",
                event.name,
                format_fields(event.fields),
                extra={"pgjobs": {"event": event.name, **event.fields}},
            )


_log_subscriber: LogSubscriber | None = None


def log_events(logger: logging.Logger | None = None) -> None:
    """Log events to ``logger`` (default: ``"pgjobs"``); idempotent.

    Only the events whose level the logger is enabled for *now* are subscribed, so per-job
    DEBUG events cost nothing at INFO.  Call it again after changing the level.
    """
    global _log_subscriber
    logger = logger or log
    with _lock:
        if _log_subscriber is not None:
            for subscribers in _by_name.values():
                while _log_subscriber in subscribers:
                    subscribers.remove(_log_subscriber)
        _log_subscriber = LogSubscriber(logger)
        for name, level in EVENTS.items():
            if logger.isEnabledFor(level):
                _by_name.setdefault(name, []).append(_log_subscriber)
        _rebuild()


def stop_logging_events() -> None:
    global _log_subscriber
    with _lock:
        if _log_subscriber is not None:
            for subscribers in _by_name.values():
                while _log_subscriber in subscribers:
                    subscribers.remove(_log_subscriber)
        _log_subscriber = None
        _rebuild()


def subscribers(name: str) -> Iterator[Subscriber]:
    """The subscribers an event called ``name`` is delivered to (for tests and debugging)."""
    yield from active.get(name, ())
