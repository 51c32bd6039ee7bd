"""Logging setup for pgjobs' processes: standard ``logging`` to stderr.

Under systemd (``$JOURNAL_STREAM`` set) lines carry no timestamp (journald adds one) and start
with the syslog priority prefix (``<3>`` for errors …) so ``journalctl -p err`` works.  With
``--log-format json`` each line is one JSON object, for log shippers.

Lines emitted while a job runs carry its identity (:mod:`pgjobs.observability.logging_context`):
the JSON objects get ``job_id``, ``job_class``, ``queue`` and ``attempt``, text lines a
``[job <id>]`` before the message.  Once the application is imported,
:func:`capture_application_logs` does the same for the application's own loggers.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from pgjobs.observability.logging_context import FIELDS, JobContextFilter

_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class TextFormatter(logging.Formatter):
    """A record emitted during a job gets ``[job <id>]`` before its message."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._in_job = logging.Formatter(fmt.replace("%(message)s", "[job %(job_id)s] %(message)s"))

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        if "job_id" in record.__dict__:
            return self._in_job.formatMessage(record)
        return super().formatMessage(record)


class JournalFormatter(TextFormatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"<{_PRIORITY.get(record.levelname, 6)}>{text}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if "job_id" in record.__dict__:  # emitted during a job (JobContextFilter)
            data.update((key, record.__dict__.get(key)) for key in FIELDS)
        data.update(getattr(record, "pgjobs", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


_settings: tuple[str, str] | None = None  # setup()'s level and format


def _handler(fmt: str, name: str) -> logging.Handler:
    """A stderr handler in ``fmt``; text lines name the process ``name[pid]``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter(f"{name}[%(process)d] %(message)s"))
    else:
        handler.setFormatter(
            TextFormatter(f"%(asctime)s %(levelname)s {name}[%(process)d] %(message)s")
        )
    handler.addFilter(JobContextFilter())
    return handler


def setup(level: str = "INFO", fmt: str = "text") -> None:
    global _settings
    _settings = (level, fmt)
    handler = _handler(fmt, "pgjobs")
    logger = logging.getLogger("pgjobs")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    from pgjobs import events

    events.log_events()


def capture_application_logs() -> None:
    """Give the application's loggers (the root logger's records) the job context.

    Called once the application is imported, so that logging it configured itself wins: if the
    root logger has handlers, each gets the filter; if it has none, pgjobs' own handler (in
    ``setup``'s format, the logger's name in text lines) is installed at ``setup``'s level.
    """
    if _settings is None:
        return
    level, fmt = _settings
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_handler(fmt, "%(name)s"))
        root.setLevel(level.upper())
        return
    for handler in root.handlers:
        if not any(isinstance(f, JobContextFilter) for f in handler.filters):
            handler.addFilter(JobContextFilter())
