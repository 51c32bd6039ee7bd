"""``pgjobs cancel`` and how the CLI shows a job's control state (``pgjobs jobs show``, ``pgjobs
jobs cancel``): through :func:`pgjobs.get_job` and :func:`pgjobs.cancel`.  Added to ``pgjobs``
by :func:`pgjobs.cli.main.build_parser`.

::

    pgjobs cancel JOB_ID [JOB_ID ...] [--json]

One line per job: ``<id>: cancelled`` (it was waiting: it never runs), ``<id>: cancelling
(running; asked to stop)``, ``<id>: already cancelled``, ``<id>: finished: not cancelled``.  Exit
status 0 when every job was cancelled or is cancelling, 1 when some job had already ended (or was
cancelled already: like discarding a discarded job), 2 when some id names no job (an id that is
not a UUID is refused before anything is done, like any bad argument).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import uuid
from datetime import datetime
from typing import Any

from pgjobs.cli.common import _database_options, _open, _short, command
from pgjobs.db.database import Database
from pgjobs.errors import JobNotFound
from pgjobs.operations.results import JobInfo, Progress, cancel, get_job

REPR_WIDTH = 500  # characters of a result or cursor shown (the rest is cut, with "…")
NOT_FOUND = 2  # exit status when an id names no job: bad input, like argparse's usage errors

# What a cancel did, as ``--json`` says it (outcome) and the text line shows it.
OUTCOMES = {
    "cancelled": "cancelled",
    "cancelling": "cancelling (running; asked to stop)",
    "already_cancelled": "already cancelled",
    "finished": "finished: not cancelled",
    "failed": "failed: not cancelled",
    "discarded": "discarded: not cancelled",
    "not_found": "no such job",
}


def job_id(value: str) -> uuid.UUID:
    """An argparse type: a job's public id."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a job id (a UUID)") from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cancel`` to the ``pgjobs`` sub-commands."""
    p = sub.add_parser(
        "cancel", help="cancel jobs: waiting ones never run, running ones are asked to stop"
    )
    _database_options(p)
    p.add_argument("job_ids", nargs="+", type=job_id, metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="print JSON")


def cancel_one(database: Database, public: uuid.UUID) -> str:
    """Cancel one job; returns its key in :data:`OUTCOMES`.  The job is read first, so that a
    job cancelled earlier is told apart (``pgjobs.cancel`` returns "cancelled" for it too)."""
    try:
        if get_job(public, database=database).state == "cancelled":
            return "already_cancelled"
        return cancel(public, database=database)
    except JobNotFound:
        return "not_found"


def status_of(outcomes: list[str]) -> int:
    """The exit status of cancelling jobs with these outcomes."""
    if "not_found" in outcomes:
        return NOT_FOUND
    return 0 if set(outcomes) <= {"cancelled", "cancelling"} else 1


def print_outcomes(results: list[tuple[uuid.UUID, str]], as_json: bool) -> int:
    """One line (or JSON object) per job; returns the exit status."""
    if as_json:
        print(json.dumps([{"job_id": str(j), "outcome": o} for j, o in results], indent=2))
    else:
        for public, outcome in results:
            print(f"{public}: {OUTCOMES.get(outcome, f'{outcome}: not cancelled')}")
    for public, outcome in results:
        if outcome == "not_found":
            print(f"pgjobs: error: no job {public} (never enqueued, or cleared)", file=sys.stderr)
    return status_of([outcome for _, outcome in results])


@command("cancel")
def _cancel(args: argparse.Namespace) -> int:
    database = _open(args)
    try:
        results = [(public, cancel_one(database, public)) for public in args.job_ids]
    finally:
        database.close()
    return print_outcomes(results, args.json)


# -- showing a job (pgjobs jobs show) ---------------------------------------------------------


def shown(value: Any, width: int = REPR_WIDTH) -> str:
    """``repr(value)``, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _decoded(info: JobInfo, name: str) -> str | None:
    """The job's result or cursor as shown, None when there is none.  A value this process
    cannot decode (a record whose integration is not imported here) says why instead."""
    try:
        value = getattr(info, name)
    except Exception as exc:  # DeserializationError, or a record loader's own error
        return f"<cannot be decoded here: {exc}>"
    return None if value is None else shown(value)


def _parsed(arguments: Any) -> Any:
    """The stored arguments as JSON data (``JobInfo.arguments`` is the stored JSON text)."""
    return json.loads(arguments) if isinstance(arguments, str) else arguments


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def progress_data(progress: Progress | None) -> dict[str, Any] | None:
    """A progress report as JSON: done, total, percent (None without a total), message, at.
    None without one, or when its count is not a finite number (a job may report
    ``progress(None)``); a total that is not one is left out."""
    if progress is None or not _number(progress.done):
        return None
    total = progress.total if _number(progress.total) else None
    fraction = max(0.0, min(1.0, progress.done / total)) if total else None
    return {
        "done": progress.done,
        "total": total,
        "percent": None if fraction is None else round(fraction * 100, 1),
        "message": progress.message,
        "updated_at": progress.updated_at,
    }


def job_data(info: JobInfo) -> dict[str, Any]:
    """Everything ``jobs show`` prints about a job, in order."""
    return {
        "id": info.id,
        "job_id": str(info.job_id),
        "state": info.state,
        "class_name": info.class_name,
        "queue_name": info.queue_name,
        "priority": info.priority,
        "arguments": _parsed(info.arguments),
        "attempts": info.attempts,
        "interruptions": info.interruptions,
        "enqueued_at": info.enqueued_at,
        "scheduled_at": info.scheduled_at,
        "finished_at": info.finished_at,
        "cancel_requested_at": info.cancel_requested_at,
        "cancelled_at": info.cancelled_at,
        "result": _decoded(info, "result"),
        "progress": progress_data(info.progress),
        "steps_completed": list(info.steps_completed),
        "step": info.step,
        "cursor": _decoded(info, "cursor"),
        "error_class": info.error_class,
        "error_message": info.error_message,
        "errors": [
            {"attempt": e.attempt, "exception_class": e.exception_class, "message": e.message,
             "hostname": e.hostname, "pid": e.pid, "created_at": e.created_at}
            for e in info.errors
        ],
    }  # fmt: skip


def progress_line(data: Any, *, at: bool = True) -> str:
    """A :func:`progress_data` as text: ``40/100 (40%) item 40, updated <time>``."""
    total = "" if data["total"] is None else f"/{data['total']:g}"
    percent = "" if data["percent"] is None else f" ({data['percent']:g}%)"
    message = f" {data['message']}" if data["message"] else ""
    when = data["updated_at"]
    updated = f", updated {when.isoformat()}" if at and isinstance(when, datetime) else ""
    return f"{data['done']:g}{total}{percent}{message}{updated}"


def _text(key: str, value: Any) -> str:
    """One value of :func:`job_data` as ``jobs show`` prints it."""
    if key == "arguments":
        return json.dumps(value)
    if key == "progress":
        return progress_line(value)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(json_default(value)) if isinstance(value, datetime) else str(value)


def print_job(
    data: dict[str, Any], backtrace: str | None, waiting_for: dict[str, Any] | None = None
) -> None:
    """``data`` (:func:`job_data`) as ``key  value`` lines (empty parts left out), what the job
    waits for, its last error's traceback and its error history."""
    for key, value in data.items():
        if key != "errors" and (value not in (None, [], 0) or key in ("attempts", "priority")):
            print(f"{key.replace('_', ' '):<21}{_text(key, value)}")
    if waiting_for:
        print("waiting for")
        for key, value in waiting_for.items():
            print(f"  {key.replace('_', ' '):<19}{_text(key, value)}")
    if backtrace and data["state"] in ("failed", "discarded"):
        print("\n" + backtrace.rstrip())
    if data["errors"]:
        print(f"\nerror history ({len(data['errors'])}):")
        for e in data["errors"]:
            error = _short(f"{e['exception_class']}: {e['message']}", 100)
            print(f"  attempt {e['attempt']:>3}  {e['created_at'].isoformat()}  {error}")


def json_default(value: Any) -> Any:
    """``json.dumps``' ``default``: times as ISO 8601, anything else (ids) as text."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def show(database: Database, public: uuid.UUID) -> tuple[dict[str, Any], str | None] | None:
    """The job's :func:`job_data` and backtrace, None when there is no such job."""
    try:
        info = get_job(public, database=database)
    except JobNotFound:
        return None
    return job_data(info), info.backtrace
