"""``pgjobs jobs list|show|discard|dispatch|cancel``: every job as the dashboard lists it, and
acting on waiting ones (:class:`pgjobs.operations.waiting.WaitingJobs`) or running ones
(cancel).  Added to ``pgjobs`` by :func:`pgjobs.cli.jobs.add_parsers`.

::

    pgjobs jobs list [--state S] [--queue Q] [--class X] [--text T] [--error E] [--process ID]
                     [--limit N] [--after CURSOR]
    pgjobs jobs show JOB_ID [--json]
    pgjobs jobs discard (JOB_ID... | --all --state ready|scheduled|blocked [filters])
    pgjobs jobs dispatch (JOB_ID... | --all [filters])
    pgjobs jobs cancel (JOB_ID... | --all --state ready|scheduled|blocked|running [filters])

``jobs show`` and ``jobs cancel JOB_ID`` are :mod:`pgjobs.cli.control`'s (``pgjobs cancel``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, cast

from pgjobs.cli import control as cli_control
from pgjobs.cli.common import _database_options, _open, _positive, _short, command
from pgjobs.cli.progress import Progress
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from pgjobs.operations.waiting import Filters as WaitingFilters
    from pgjobs.operations.waiting import State, WaitingJobs

LIST_STATES = ("ready", "scheduled", "in_progress", "blocked", "held", "failed", "finished")
# The states a bulk action (--all) takes, which it requires.
_BULK_STATES = {
    "discard": ("ready", "scheduled", "blocked"),
    "cancel": ("ready", "scheduled", "blocked", "running"),
}


def _waiting_filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", help="queue name")
    parser.add_argument("--class", dest="job_class", metavar="CLASS", help="job class name")
    parser.add_argument("--text", help="a substring of the arguments' JSON (case-insensitive)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``jobs`` and its actions to the ``pgjobs`` sub-commands."""
    jobs = sub.add_parser(
        "jobs",
        help="list and inspect jobs; discard, dispatch or cancel waiting ones, stop running ones",
    )
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    p = actions.add_parser("list", help="jobs in one state, newest first (the dashboard's lists)")
    _database_options(p)
    p.add_argument("--state", choices=LIST_STATES, default="ready", help="default: ready")
    _waiting_filter_options(p)
    p.add_argument(
        "--error",
        help="with --state failed: the exception class, with or without its module "
        "(GatewayError or shop.payments.GatewayError)",
    )
    p.add_argument(
        "--process", type=_positive, metavar="ID", help="with --state in_progress: the process"
    )
    p.add_argument("--limit", type=_positive, default=50, help="at most N jobs (default 50)")
    p.add_argument(
        "--after", default=None, metavar="CURSOR", help="the next page (printed after a page)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = actions.add_parser(
        "show", help="one job: its state, what it waits for, its result, progress and errors"
    )
    _database_options(p)
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="print JSON")

    for name, text in (
        ("discard", "finish ready, scheduled or blocked jobs as discarded"),
        ("dispatch", "run scheduled jobs now (to ready, or blocked for a limited class)"),
        ("cancel", "cancel waiting jobs (they never run), or ask running ones to stop"),
    ):
        p = actions.add_parser(name, help=text)
        _database_options(p)
        ids = cli_control.job_id if name == "cancel" else str  # cancel: checked before acting
        p.add_argument("job_ids", nargs="*", type=ids, metavar="JOB_ID")
        p.add_argument("--all", action="store_true", help="every job matching the filters")
        if name in _BULK_STATES:
            p.add_argument("--state", choices=_BULK_STATES[name], help="with --all: required")
        _waiting_filter_options(p)
        p.add_argument("--batch-size", type=_positive, default=1000, help="jobs per transaction")
        if name == "cancel":
            p.add_argument("--json", action="store_true", help="print JSON (with JOB_IDs)")


@command("jobs")
def _jobs(args: argparse.Namespace) -> int:
    database = _open(args)
    try:
        action = args.jobs_command
        if action == "list":
            return _jobs_list(database, args)
        if action == "show":
            return _jobs_show(database, args)
        return _jobs_act(database, action, args)
    finally:
        database.close()


def _jobs_list(database: Database, args: argparse.Namespace) -> int:
    from pgjobs.operations import lists

    if args.error is not None and args.state != "failed":
        raise ConfigurationError("jobs list: --error goes with --state failed")
    if args.process is not None and args.state != "in_progress":
        raise ConfigurationError("jobs list: --process goes with --state in_progress")
    filters = lists.Filters(
        queue=args.queue,
        class_name=args.job_class,
        text=args.text,
        error=args.error,
        process=args.process,
    )
    cursor = lists.Cursor.decode(args.after) if args.after else None
    if args.after and (cursor is None or cursor.id < 1):
        raise ConfigurationError(f"jobs list: --after {args.after!r} is not a page cursor")
    with database.connection() as conn:
        page = lists.page(conn, database.schema, args.state, filters, cursor, limit=args.limit)
    if args.json:
        found = [{**vars(row), "progress": cli_control.progress_data(row.progress)}
                 for row in page.rows]  # fmt: skip
        print(json.dumps(found, indent=2, default=cli_control.json_default))
        return 0
    print(f"{'ID':>8}  {'JOB ID':<36}  {'SINCE / AT':<19}  {'QUEUE':<12}  CLASS")
    for row in page.rows:
        at = row.at.strftime("%Y-%m-%d %H:%M:%S") if row.at else ""
        line = f"{row.id:>8}  {row.job_id!s:<36}  {at:<19}  {_short(row.queue_name, 12):<12}  "
        line += row.class_name + (f"  ({_short(row.detail, 60)})" if row.detail else "")
        if row.progress is not None:  # a running job's
            shown = cli_control.progress_line(cli_control.progress_data(row.progress), at=False)
            line += f"  [{_short(shown, 60)}]"
        print(line + ("  stopping" if row.cancel_requested_at else ""))
    if not page.rows:
        print(f"(no {args.state.replace('_', ' ')} jobs)")
    if page.next is not None:
        print(f"next page: --after {page.next.encode()}")
    return 0


def _jobs_show(database: Database, args: argparse.Namespace) -> int:
    from pgjobs.operations.failed import _uuid
    from pgjobs.operations.waiting import WaitingJobs

    found = cli_control.show(database, _uuid(args.job_id))
    if found is None:
        print(f"pgjobs: error: no job {args.job_id}", file=sys.stderr)
        return 1
    data, backtrace = found
    waiting = None
    if data["state"] in ("ready", "scheduled", "blocked"):
        waiting = WaitingJobs(database).waiting_for(args.job_id)
    waiting_for = _waiting_for(waiting) if waiting is not None else {}
    if args.json:
        shown = {**data, "waiting_for": waiting_for}
        print(json.dumps(shown, indent=2, default=cli_control.json_default))
        return 0
    cli_control.print_job(data, backtrace, waiting_for)
    return 0


def _waiting_for(found: Any) -> dict[str, Any]:
    """What a job waits for, the parts that apply (pgjobs.operations.waiting.WaitingFor)."""
    shown = {k: v for k, v in vars(found).items() if k != "state" and v not in (None, ())}
    if "holders" in shown:
        shown["holders"] = list(shown["holders"])
    if "rate" in shown:  # waiting in a rate limit's line
        rate = shown.pop("rate")
        shown["rate_limit_key"] = rate.key
        shown["rate_limit"] = f"{rate.limit} per {rate.period.total_seconds():g}s"
        shown["rate_started_in_window"] = rate.started
        shown["rate_waiting_in_line"] = rate.waiting
        shown["rate_line_moves_at"] = rate.free_at
    return shown


def _jobs_act(database: Database, action: str, args: argparse.Namespace) -> int:
    from pgjobs.operations.waiting import WaitingJobs

    filters: WaitingFilters = {}
    if args.job_class:
        filters["job_class"] = args.job_class
    if args.queue:
        filters["queue"] = args.queue
    if args.text:
        filters["text"] = args.text
    state: str | None = getattr(args, "state", None)  # "running": cancel only
    if args.all == bool(args.job_ids):
        raise ConfigurationError(f"jobs {action}: give JOB_IDs or --all (with filters), not both")
    if (filters or state) and not args.all:
        raise ConfigurationError(f"jobs {action}: --state and filters go with --all")
    if args.all and action in _BULK_STATES and state is None:
        *others, last = _BULK_STATES[action]
        raise ConfigurationError(f"jobs {action} --all: give --state {', '.join(others)} or {last}")
    waiting = WaitingJobs(database, batch_size=args.batch_size)
    if action == "cancel":
        return _jobs_cancel(database, waiting, state, filters, args)
    past = "discarded" if action == "discard" else "dispatched"
    if args.all:
        with Progress(past) as progress:
            if state is not None:
                count = waiting.discard_all(cast("State", state), progress, **filters)
            else:
                count = waiting.dispatch_all(progress, **filters)
        what = f"{state} job" if action == "discard" else "scheduled job"
        print(f"{past} {count} {what}{'s' * (count != 1)}")
        return 0
    status = 0
    for job_id in args.job_ids:
        outcome = waiting.discard(job_id) if action == "discard" else waiting.dispatch(job_id)
        if outcome.done:
            print(f"{past} {job_id}" + (f" ({outcome.state})" if action == "dispatch" else ""))
            continue
        wanted = "ready, scheduled or blocked" if action == "discard" else "scheduled"
        why = "no such job" if outcome.state is None else f"it is {outcome.state}"
        print(f"pgjobs: error: job {job_id} is not {wanted} ({why})", file=sys.stderr)
        status = 1
    return status


def _jobs_cancel(
    database: Database,
    waiting: WaitingJobs,
    state: str | None,
    filters: WaitingFilters,
    args: argparse.Namespace,
) -> int:
    """``jobs cancel``: JOB_IDs as ``pgjobs cancel`` does, or every job of ``--state``."""
    if not args.all:
        results = [(public, cli_control.cancel_one(database, public)) for public in args.job_ids]
        return cli_control.print_outcomes(results, args.json)
    if state == "running":
        with Progress("asked") as progress:
            count = waiting.cancel_running(progress, **filters)
        print(f"asked {count} running job{'s' * (count != 1)} to stop")
        return 0
    with Progress("cancelled") as progress:
        count = waiting.cancel_all(cast("State", state), progress, **filters)
    print(f"cancelled {count} {state} job{'s' * (count != 1)}")
    return 0
