"""Entry point of a supervised process: ``python -m pgjobs.processes.child``.

The supervisor passes what to run in ``$PGJOBS_CHILD`` (JSON: kind, index into the
configuration, supervisor id, database, configuration file and environment, application module).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
from typing import Any

import psycopg

from pgjobs import runtime
from pgjobs.config.queue import load_config
from pgjobs.db.database import Database
from pgjobs.errors import DatabaseUnreachable
from pgjobs.observability import logs
from pgjobs.processes.base import Process


def build(spec: dict[str, Any]) -> Process:
    from pgjobs.processes.dispatcher import Dispatcher
    from pgjobs.processes.worker import Worker

    config = load_config(spec["config"] and str(spec["config"]), env=str(spec["env"]))
    database = Database(
        str(spec["database_url"]),
        schema=spec["schema"] and str(spec["schema"]),
        application_name=f"pgjobs-{spec['kind']}",
        direct_url=spec.get("direct_database_url"),
        transaction_pooling=bool(spec.get("transaction_pooling")),
    )
    runtime.use(database)  # jobs that enqueue jobs write to the same database and schema
    supervisor_id = int(str(spec["supervisor_id"])) if spec["supervisor_id"] else None
    index = int(str(spec["index"]))
    if spec["kind"] == "worker":
        return Worker(database, config, config.workers[index], supervisor_id=supervisor_id)
    if spec["kind"] == "dispatcher":
        return Dispatcher(database, config, config.dispatchers[index], supervisor_id=supervisor_id)
    if spec["kind"] == "scheduler":
        from pgjobs.config.recurring import load_recurring
        from pgjobs.processes.scheduler import Scheduler

        tasks = load_recurring(spec.get("recurring_schedule"), env=str(spec["env"]))
        return Scheduler(database, config, tasks, supervisor_id=supervisor_id)
    raise SystemExit(f"pgjobs: unknown process kind {spec['kind']!r}")


def main() -> None:
    # Until our handlers are installed (after the application is imported), a terminal's Ctrl-C
    # would be a KeyboardInterrupt traceback; the supervisor's SIGTERM stops us all the same.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(os.environ["PGJOBS_CHILD"])
    logs.setup(
        os.environ.get("PGJOBS_LOG_LEVEL", "INFO"), os.environ.get("PGJOBS_LOG_FORMAT", "text")
    )
    recorder = None
    if spec.get("metrics"):  # our counts go to the supervisor's directory, which it adds up
        from pgjobs.observability import metrics

        recorder = metrics.instrument(directory=os.environ[metrics.MULTIPROC_ENV])
    if spec.get("app"):
        importlib.import_module(str(spec["app"]))
    logs.capture_application_logs()  # after the import: logging the application set up wins
    process = build(spec)
    if spec.get("relay_fd") is not None:  # the supervisor's listener wakes us (listener.Relay)
        process.relay_fd = int(spec["relay_fd"])  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what a forked job inherits
    process.install_signal_handlers()
    try:
        process.run()  # type: ignore[attr-defined]
    except (
        psycopg.Error,
        DatabaseUnreachable,
    ) as exc:  # the database stayed away while we were stopping
        logging.getLogger("pgjobs").error("%s exiting without the database: %s", spec["kind"], exc)
        sys.stderr.flush()
        os._exit(1)
    if recorder is not None:
        recorder.close()  # the last counts, before an exit that runs no atexit handler
    sys.stderr.flush()
    # Job threads still running past shutdown_timeout were released; do not wait for them.
    os._exit(0)


if __name__ == "__main__":
    main()
