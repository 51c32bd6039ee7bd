"""``pgjobs batches list|show``: batches and workflows, newest first, and one with its counts,
callbacks, nested batches and jobs (:mod:`pgjobs.operations.batches`).  Added to ``pgjobs`` by
:func:`pgjobs.cli.main.build_parser`.

::

    pgjobs batches list [--kind batch|workflow] [--state running|finished|succeeded|failed]
                        [--limit N] [--before ID] [--json]
    pgjobs batches show BATCH_ID [--state S] [--limit N] [--after ID] [--json]

A BATCH_ID that is not a UUID is a usage error (exit status 2, naming the argument); one that
names no batch exits 1, like ``pgjobs jobs show``.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from pgjobs.cli.common import _database_options, _open, _positive, _short, command
from pgjobs.db.database import Database
from pgjobs.operations import batches as ops
from pgjobs.workflows.info import BatchInfo


def batch_id(value: str) -> uuid.UUID:
    """An argparse type: a batch's public id."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a batch id (a UUID)") from None


def _row_id(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be a row id (an integer >= 0), got {value!r}")
    return number


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``batches`` and its actions to the ``pgjobs`` sub-commands."""
    batches = sub.add_parser("batches", help="list batches and workflows, show one with its jobs")
    actions = batches.add_subparsers(dest="batches_command", required=True, metavar="ACTION")

    p = actions.add_parser("list", help="batches and workflows, newest first")
    _database_options(p)
    p.add_argument("--kind", choices=ops.KINDS, help="batches or workflows only")
    p.add_argument(
        "--state",
        choices=ops.LIST_STATES,
        help="running (jobs pending), finished, succeeded (every job) or failed (finished, not "
        "every job succeeded)",
    )
    p.add_argument("--limit", type=_positive, default=50, help="at most N (default 50)")
    p.add_argument(
        "--before", type=_positive, metavar="ID", help="the next page (printed after a page)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = actions.add_parser(
        "show", help="one batch or workflow: counts, callbacks, nested batches, jobs"
    )
    _database_options(p)
    p.add_argument("batch_id", type=batch_id, metavar="BATCH_ID")
    p.add_argument("--state", choices=ops.JOB_STATES, help="only its jobs in this state")
    p.add_argument("--limit", type=_positive, default=100, help="jobs per page (default 100)")
    p.add_argument(
        "--after", type=_row_id, metavar="ID", help="the next page of jobs (printed after a page)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")


@command("batches")
def _batches(args: argparse.Namespace) -> int:
    database = _open(args)
    try:
        if args.batches_command == "list":
            return _list(database, args)
        return _show(database, args)
    finally:
        database.close()


def _list(database: Database, args: argparse.Namespace) -> int:
    with database.connection() as conn:
        page = ops.list_batches(
            conn,
            database.schema,
            kind=args.kind,
            state=args.state,
            before=args.before,
            limit=args.limit,
        )
    if args.json:
        print(json.dumps([ops.as_dict(info) for info in page.batches], indent=2))
        return 0
    print(
        f"{'ID':>8}  {'BATCH ID':<36}  {'KIND':<8}  {'STATE':<9}  {'CREATED AT':<19}  DESCRIPTION"
    )
    for info in page.batches:
        created = info.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{info.id:>8}  {info.batch_id!s:<36}  {info.kind:<8}  {info.state:<9}  {created:<19}  "
            f"{_short(info.description or '', 60)}\n"
            f"{'':>8}  {ops.progress_line(info)}"
        )
    if not page.batches:
        print("(no batches)")
    if page.next is not None:
        print(f"next page: --before {page.next}")
    return 0


def _show(database: Database, args: argparse.Namespace) -> int:
    with database.connection() as conn:
        info = ops.find(conn, database.schema, args.batch_id)
        if info is None:
            print(
                f"pgjobs: error: BATCH_ID: no batch or workflow {args.batch_id} "
                "(never written, or cleared)",
                file=sys.stderr,
            )
            return 1
        found = ops.detail(conn, database.schema, info)
        page = ops.jobs(
            conn, database.schema, info, state=args.state, after=args.after, limit=args.limit
        )
    if args.json:
        data = {
            **ops.as_dict(info),
            "callbacks": _callbacks(info, found.written),
            "jobs_by_state": {s: c.value for s, c in found.counts.items() if c.value},
            "nested": [ops.as_dict(child) for child in found.nested],
            "jobs": [job.as_dict() for job in page.jobs],
            "next_after": page.next,
        }
        print(json.dumps(data, indent=2))
        return 0
    _print_batch(info, found)
    _print_jobs(page, args.state)
    return 0


def _callbacks(info: BatchInfo, written: frozenset[uuid.UUID]) -> dict[str, Any]:
    return {
        what: {"job_id": str(job), "written": job in written}
        for what, job in info.callbacks.items()
    }


def _print_batch(info: BatchInfo, found: ops.BatchDetail) -> None:
    kind = info.kind + (f" (on failure: {info.on_failure})" if info.on_failure else "")
    lines = [
        ("batch", f"{info.batch_id} (id {info.id})"),
        ("kind", kind),
        ("state", info.state),
        ("description", info.description),
        ("progress", ops.progress_line(info)),
        ("created at", info.created_at.isoformat()),
        ("finished at", info.finished_at and info.finished_at.isoformat()),
        ("succeeded at", info.succeeded_at and info.succeeded_at.isoformat()),
        ("first failure", info.discarded_at and info.discarded_at.isoformat()),
        ("parent", info.parent_id and str(info.parent_id)),
        ("properties", json.dumps(info.properties) if info.properties else None),
    ]
    for key, value in lines:
        if value:
            print(f"{key:<15}{value}")
    for what, job in info.callbacks.items():
        written = "written" if job in found.written else "not written yet"
        print(f"{'on_' + what:<15}{job} ({written})")
    counted = [
        f"{c.value}{'+' * (c.kind != 'exact')} {s}" for s, c in found.counts.items() if c.value
    ]
    if counted:
        print(f"{'jobs':<15}{', '.join(counted)}")
    if found.nested:
        print(f"\nnested batches ({len(found.nested)}{'+' if found.more_nested else ''}):")
        for child in found.nested:
            print(
                f"  {child.batch_id}  {child.kind:<8}  {child.state:<9}  {ops.progress_line(child)}"
            )


def _print_jobs(page: ops.JobsPage, state: str | None) -> None:
    print(f"\n{'ID':>8}  {'JOB ID':<36}  {'STATE':<9}  {'QUEUE':<12}  CLASS")
    for job in page.jobs:
        print(
            f"{job.id:>8}  {job.job_id!s:<36}  {job.state:<9}  {_short(job.queue_name, 12):<12}  "
            f"{job.class_name}"
        )
        if job.depends_on:
            print(f"{'':>8}  after {', '.join(map(str, job.depends_on))}")
    if not page.jobs:
        print(f"(no {state} jobs)" if state else "(no jobs)")
    if page.next is not None:
        if not page.exhausted:
            print(f"looked at {page.searched} jobs without filling the page")
        print(f"next page: --after {page.next}")
