"""``pgjobs failed …``, ``pgjobs clear-finished`` and ``pgjobs jobs …``: the operators' commands
for failed, finished and waiting jobs.  :func:`add_parsers` adds them to ``pgjobs``'
sub-commands (``jobs`` from :mod:`pgjobs.cli.waiting`); their handlers are registered with
:func:`pgjobs.cli.main.command`.

::

    pgjobs failed list [--class X] [--queue Q] [--error E] [--limit N] [--after-id ID] [--json]
    pgjobs failed show JOB_ID [--json]
    pgjobs failed retry (JOB_ID... | --all [filters])
    pgjobs failed discard (JOB_ID... | --all [filters])
    pgjobs clear-finished [--older-than 1d] [--class X] [--batch-size N]
    pgjobs jobs list [--state S] [--queue Q] [--class X] [--text T] [--limit N] [--after ID]
    pgjobs jobs show JOB_ID [--json]
    pgjobs jobs discard (JOB_ID... | --all --state ready|scheduled|blocked [filters])
    pgjobs jobs dispatch (JOB_ID... | --all [filters])
    pgjobs jobs cancel (JOB_ID... | --all --state ready|scheduled|blocked|running [filters])

The long ones (``--all``, ``clear-finished``) show a running count on stderr when it is a
terminal (:mod:`pgjobs.cli.progress`), and print one result line either way.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from pgjobs.cli.common import _database_options, _open, _positive, _short, command
from pgjobs.cli.progress import Progress
from pgjobs.config.queue import parse_duration
from pgjobs.errors import ConfigurationError
from pgjobs.operations.failed import FailedJob, FailedJobs, Filters


def _timestamp(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. {value}+00:00)")
    return moment


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--class", dest="job_class", metavar="CLASS", help="job class name")
    parser.add_argument("--queue", help="queue name")
    parser.add_argument(
        "--error", help="exception class, with or without its module (GatewayError)"
    )
    parser.add_argument("--failed-before", type=_timestamp, metavar="TIME", help="ISO 8601")
    parser.add_argument("--failed-after", type=_timestamp, metavar="TIME", help="ISO 8601")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``failed`` and ``clear-finished`` to the ``pgjobs`` sub-commands."""
    failed = sub.add_parser("failed", help="list, inspect, retry or discard failed jobs")
    actions = failed.add_subparsers(dest="failed_command", required=True, metavar="ACTION")

    p = actions.add_parser("list", help="failed jobs, oldest first")
    _database_options(p)
    _filter_options(p)
    p.add_argument("--limit", type=_positive, default=50, help="at most N jobs (default 50)")
    p.add_argument("--after-id", type=int, default=None, help="the page after this internal id")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = actions.add_parser("show", help="one failed job with its error history")
    _database_options(p)
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="print JSON")

    for name, text in (
        ("retry", "put failed jobs back to ready (executions kept)"),
        ("discard", "delete failed jobs with their history"),
    ):
        p = actions.add_parser(name, help=text)
        _database_options(p)
        p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
        p.add_argument("--all", action="store_true", help="every failed job matching the filters")
        _filter_options(p)
        p.add_argument("--batch-size", type=_positive, default=1000, help="jobs per transaction")

    p = sub.add_parser("clear-finished", help="delete finished jobs older than a cutoff")
    _database_options(p)
    p.add_argument(
        "--older-than",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="e.g. 12h, 7d (default: clear_finished_jobs_after from queue.yml, 1 day)",
    )
    p.add_argument("--class", dest="job_class", metavar="CLASS", help="only this job class")
    p.add_argument("--batch-size", type=_positive, default=1000, help="ids per statement")
    from pgjobs.cli import waiting as cli_waiting  # registers the ``jobs`` handler

    cli_waiting.add_parser(sub)


def _filters(args: argparse.Namespace) -> Filters:
    filters: Filters = {}
    if args.job_class:
        filters["job_class"] = args.job_class
    if args.queue:
        filters["queue"] = args.queue
    if args.error:
        filters["error"] = args.error
    if args.failed_before:
        filters["failed_before"] = args.failed_before
    if args.failed_after:
        filters["failed_after"] = args.failed_after
    return filters


def _print_list(jobs: list[FailedJob]) -> None:
    print(f"{'ID':>8}  {'JOB ID':<36}  {'FAILED AT':<19}  {'TRY':>3}  {'QUEUE':<12}  CLASS / ERROR")
    for job in jobs:
        failed_at = job.failed_at.strftime("%Y-%m-%d %H:%M:%S")
        error = job.exception_class.rsplit(".", 1)[-1]
        print(
            f"{job.id:>8}  {job.job_id!s:<36}  {failed_at:<19}  {job.attempt:>3}  "
            f"{_short(job.queue_name, 12):<12}  {job.class_name}\n"
            f"{'':>8}  {error}: {_short(job.message, 100)}"
        )
    if not jobs:
        print("(no failed jobs)")


def _print_job(job: FailedJob) -> None:
    lines = [
        f"job          {job.job_id} (id {job.id})",
        f"class        {job.class_name}",
        f"queue        {job.queue_name} (priority {job.priority})",
        f"arguments    {json.dumps(job.arguments)}",
        f"enqueued at  {job.enqueued_at.isoformat()}",
        f"executions   {job.executions}",
        f"failed at    {job.failed_at.isoformat()} on {job.hostname or '?'} pid {job.pid or '?'}",
        f"error        {job.exception_class}: {job.message}",
    ]
    print("\n".join(lines))
    if job.backtrace:
        print("\n" + job.backtrace.rstrip())
    print(f"\nerror history ({len(job.errors)}):")
    for error in job.errors:
        print(
            f"  attempt {error.attempt:>3}  {error.created_at.isoformat()}  "
            f"{error.exception_class}: {_short(error.message, 100)}"
        )


@command("failed")
def _failed(args: argparse.Namespace) -> int:
    database = _open(args)
    try:
        failed = FailedJobs(database, batch_size=getattr(args, "batch_size", 1000))
        action = args.failed_command
        if action == "list":
            jobs = failed.list(args.limit, args.after_id, **_filters(args))
            if args.json:
                print(json.dumps([job.as_dict() for job in jobs], indent=2, default=str))
            else:
                _print_list(jobs)
            return 0
        if action == "show":
            job = failed.get(args.job_id)
            if job is None:
                return _not_failed(failed, args.job_id)
            if args.json:
                print(json.dumps(job.as_dict(), indent=2, default=str))
            else:
                _print_job(job)
            return 0
        return _act(failed, action, args)
    finally:
        database.close()


def _not_failed(failed: FailedJobs, job_id: str) -> int:
    state = failed.state(job_id)
    why = "no such job" if state is None else f"it is {state}"
    print(f"pgjobs: error: job {job_id} is not failed ({why})", file=sys.stderr)
    return 1


def _act(failed: FailedJobs, action: str, args: argparse.Namespace) -> int:
    filters = _filters(args)
    past = "retried" if action == "retry" else "discarded"
    if args.all == bool(args.job_ids):
        raise ConfigurationError(f"failed {action}: give JOB_IDs or --all (with filters), not both")
    if filters and not args.all:
        raise ConfigurationError(f"failed {action}: filters go with --all")
    if args.all:
        with Progress(past) as progress:
            if action == "retry":
                count = failed.retry_all(progress, **filters)
            else:
                count = failed.discard_all(progress, **filters)
        print(f"{past} {count} failed job{'s' * (count != 1)}")
        return 0
    status = 0
    for job_id in args.job_ids:
        done = failed.retry(job_id) if action == "retry" else failed.discard(job_id)
        if done:
            print(f"{past} {job_id}")
        else:
            status = _not_failed(failed, job_id)
    return status


@command("clear-finished")
def _clear_finished(args: argparse.Namespace) -> int:
    from pgjobs.config.queue import load_config
    from pgjobs.operations.retention import clear_finished

    older_than: Any = args.older_than
    if older_than is None:
        older_than = load_config(args.config).clear_finished_jobs_after
    database = _open(args)
    try:
        with Progress("cleared") as progress:
            count = clear_finished(
                older_than, args.job_class, args.batch_size, database=database, progress=progress
            )
    finally:
        database.close()
    print(f"cleared {count} finished job{'s' * (count != 1)}")
    return 0
