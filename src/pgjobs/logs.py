"""Logging setup for pgjobs' processes: standard ``logging`` to stderr.

Under systemd (``$JOURNAL_STREAM`` set) lines carry no timestamp (journald adds one) and start
with the syslog priority prefix (``<3>`` for errors …) so ``journalctl -p err`` works.  With
``--log-format json`` each line is one JSON object, for log shippers.
"""

from __future__ import annotations

import json
import logging
import os
import sys

_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


class JournalFormatter(logging.Formatter):
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
        data.update(getattr(record, "pgjobs", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("pgjobs[%(process)d] %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s pgjobs[%(process)d] %(message)s")
        )
    logger = logging.getLogger("pgjobs")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    from pgjobs import events

    events.log_events()
