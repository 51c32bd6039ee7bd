"""The directory ``pgjobs start --metrics-port`` shares with its children (no prometheus import).

prometheus_client chooses multiprocess mode once, when it is first imported, from
``$PROMETHEUS_MULTIPROC_DIR``: the supervisor sets it before it imports the application or
:mod:`pgjobs.observability.metrics`, and its children inherit it.  Metrics the application itself
records inside jobs land there too, and ``/metrics`` serves them with pgjobs'.
"""

from __future__ import annotations

import os
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_directory() -> str:
    """A fresh directory for this supervisor's metric files, exported as ``$ENV``."""
    directory = tempfile.mkdtemp(prefix="pgjobs-metrics-")
    os.environ[ENV] = directory
    return directory
