"""Where metrics receive the outcomes a worker collects (no prometheus import).

:func:`pgjobs.observability.metrics.instrument` sets :data:`observe` in a process that runs a
worker; the worker calls it with the executions it collected in one pass (its main thread, once
per pass).  ``None`` (the default): metrics are off, and the worker pays one ``is None`` check per
job it collects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgjobs.processes.executor import Outcome

observe: Callable[[list[Outcome]], None] | None = None
