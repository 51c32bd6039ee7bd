"""Writing a batch or a workflow: every row in one transaction (the caller's, if given).

The statements are written once, as a generator (:func:`steps`) that yields what to run —
``("run", statement, params)`` answered with the rows, ``("copy", statement, records)`` — and
:func:`run` / :func:`run_async` execute it on a psycopg connection, so the sync and async APIs
share every decision.  The order:

1. the batch rows, outermost first (a nested batch names its parent);
2. one id reservation for every job COPYed, then the jobs with their ``batch_id``, their ready or
   scheduled rows, the held rows of the jobs that wait for others and the dependencies;
3. jobs with a concurrency limit or a unique key one by one (:mod:`pgjobs.enqueue.keyed`), each
   joining its batch if it was written (a duplicate is not part of it);
4. the counts, outermost first, then the batches written empty are settled innermost first (their
   callbacks are due at once, and a nested one counts in its parent) — so a parent's counts
   always include a child before the child reports to it;
5. one notification per queue that got ready jobs.

Nothing here is visible to workers before the transaction commits, so no job of the batch can
end (and fire a trigger) before its batch is complete.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus

from pgjobs import clock
from pgjobs.db.names import sql
from pgjobs.enqueue import core
from pgjobs.enqueue import keyed as enqueue_keyed
from pgjobs.enqueue.handle import EnqueuedJob
from pgjobs.errors import BatchFinished, ConfigurationError
from pgjobs.store import batches as store
from pgjobs.store import jobs as jobs_store

if TYPE_CHECKING:
    from pgjobs.jobs.base import Job

Op = tuple[str, str, Any]
IDLE = TransactionStatus.IDLE
Rows = list[tuple[Any, ...]]


@dataclass(eq=False)
class Node:
    """A job of a batch or workflow, and the jobs (of the same workflow) it runs after."""

    job: Job
    after: list[Job] = field(default_factory=list)


@dataclass(eq=False)
class Group:
    """A batch or workflow to write (``into``: the row id of an existing one to add to)."""

    batch_id: Any
    kind: str
    description: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    on_failure: str | None = None
    callbacks: dict[str, Any] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    children: list[Group] = field(default_factory=list)
    into: int | None = None  # add to this existing batch (row id)
    into_public: Any = None  # ... or to the one with this public id


def _groups(top: Group) -> list[Group]:
    """Outermost first."""
    found, todo = [], [top]
    while todo:
        group = todo.pop(0)
        found.append(group)
        todo.extend(group.children)
    return found


def steps(top: Group, schema: str | None) -> Generator[Op, Rows, list[EnqueuedJob]]:
    now = clock.now()
    channel = jobs_store.notify_channel(schema)
    groups = _groups(top)
    ids: dict[int, int] = {}  # id(group) -> its batch row id
    parents: dict[int, Group] = {id(c): g for g in groups for c in g.children}
    # -- the jobs ---------------------------------------------------------------------------------
    members = [(group, node) for group in groups for node in group.nodes]
    built = [(group, node, core._row(node.job, now, channel)) for group, node in members]
    # COPYed: every job but one with a unique key (whose insert must be able to conflict).  A
    # job with a concurrency limit goes to scheduled, due now, with its key: the dispatcher
    # gives it a slot (or blocks it) as it does for any limited job that becomes due.
    copied = [(g, n, r) for g, n, r in built if r.keys.unique_key is None]
    keyed = [(g, n, r) for g, n, r in built if r.keys.unique_key is not None]
    depended = {id(d) for _g, n, _r in built for d in n.after}
    for _group, node, _row in keyed:
        if node.after or id(node.job) in depended:
            raise ConfigurationError(
                f"{type(node.job).job_name} has a unique key: a job of a workflow that others "
                "run after, or that runs after others, cannot be unique (its insert could be "
                "refused as a duplicate after the workflow was planned)"
            )
    added: set[int] = set()
    for _group, node in members:
        name = type(node.job).job_name
        if id(node.job) in added:
            raise ConfigurationError(f"{name} {node.job.job_id} was added twice")
        if node.job.enqueued_at is not None:
            raise ConfigurationError(f"{name} {node.job.job_id} was enqueued already")
        if len(node.after) != len({id(d) for d in node.after}):
            raise ConfigurationError(f"{name}: after= names the same job twice")
        for dependency in node.after:
            if id(dependency) not in added:
                raise ConfigurationError(
                    f"{name}: after= names a job that was not added to this workflow before it "
                    f"({type(dependency).job_name} {dependency.job_id})"
                )
        added.add(id(node.job))

    # -- the batch rows ---------------------------------------------------------------------------
    for group in groups:
        if group is top and (group.into is not None or group.into_public is not None):
            rows = yield ("run", store.OPEN, {"batch_id": group.into_public, "id": group.into})
            if not rows:
                raise BatchFinished(
                    f"batch {group.into_public or group.into} has finished (or does not "
                    "exist): jobs can be added to a batch only while it has pending jobs"
                )
            ids[id(group)] = rows[0][0]
            continue
        parent = parents.get(id(group))
        params = {
            "batch_id": group.batch_id,
            "kind": group.kind,
            "parent_id": ids[id(parent)] if parent is not None else None,
            "description": group.description,
            "properties": json.dumps(group.properties),
            "on_failure": group.on_failure,
            "callbacks": json.dumps(group.callbacks),
        }
        rows = yield ("run", store.INSERT, params)
        ids[id(group)] = rows[0][0]

    reserved: list[int] = []
    if copied:
        rows = yield ("run", *core._reserve(schema, len(copied)))
        reserved = [r[0] for r in rows]
    by_job: dict[int, int] = {}
    jobs, ready, scheduled, held, dependencies = [], [], [], [], []
    first: dict[str, tuple[int, int]] = {}
    for (group, node, row), row_id in zip(copied, reserved, strict=True):
        p, k = row.params, row.keys
        by_job[id(node.job)] = row_id
        jobs.append((row_id, p["job_id"], p["queue_name"], p["class_name"], p["arguments"],
                     p["priority"], k.concurrency_key, k.concurrency_limit,
                     k.concurrency_duration, k.concurrency_on_conflict, row.scheduled_at,
                     k.rate_key, k.rate_limit, k.rate_period, ids[id(group)]))  # fmt: skip
        if node.after:
            held.append((row_id, p["queue_name"], p["priority"], len(node.after)))
        elif row.scheduled_at is not None or k.concurrency_key is not None:
            scheduled.append((row_id, p["queue_name"], p["priority"],
                              row.scheduled_at or now, k.concurrency_key))  # fmt: skip
        else:
            ready.append((row_id, p["queue_name"], p["priority"]))
            key = (p["priority"], row_id)
            if p["queue_name"] not in first or key < first[p["queue_name"]]:
                first[p["queue_name"]] = key
    for _group, node, _row in copied:
        for position, dependency in enumerate(node.after):
            dependencies.append((by_job[id(node.job)], by_job[id(dependency)], position))
    for statement, records in (
        (store.COPY_JOBS, jobs),
        (jobs_store.COPY_READY, ready),
        (store.COPY_SCHEDULED, scheduled),
        (store.COPY_HELD, held),
        (store.COPY_DEPENDENCIES, dependencies),
    ):
        if records:
            yield ("copy", statement, records)
    results: dict[int, EnqueuedJob] = {}
    counts = {id(g): len(g.children) for g in groups}
    for (group, node, row), row_id in zip(copied, reserved, strict=True):
        results[id(node)] = core._result(row, row_id, None)
        counts[id(group)] += 1
    # Jobs with a unique key: written one by one, then — all of them written — those still
    # waiting join their batch.  Not before: a later one may replace (discard) an earlier one of
    # the same key, which must not end as a job of a batch whose counts are not written yet.
    joining: dict[int, list[int]] = {}
    for group, node, row in keyed:
        written = yield from _keyed(row)
        results[id(node)] = core._result(row, written.id, written.created_at, written)
        if written.id is not None and written.state in ("ready", "scheduled", "blocked"):
            joining.setdefault(id(group), []).append(written.id)
    for group in groups:
        if joining.get(id(group)):
            rows = yield ("run", store.JOIN, {"batch": ids[id(group)], "ids": joining[id(group)]})
            counts[id(group)] += len(rows)

    # -- counts, then the empty ones settled, innermost first -------------------------------------
    for group in groups:
        if counts[id(group)]:
            yield ("run", store.ADD_COUNTS, {"id": ids[id(group)], "n": counts[id(group)]})
    for group in reversed(groups):
        fresh = group.into is None and group.into_public is None
        if fresh and not counts[id(group)]:
            yield ("run", store.SETTLE, {"id": ids[id(group)]})
    if first:
        payloads = [f"{q}\t{priority}\t{i}" for q, (priority, i) in sorted(first.items())]
        yield ("run", jobs_store.NOTIFY_QUEUES, {"channel": channel, "payloads": payloads})
    for _group, node in members:  # written (COPYed jobs get no created_at back): not again
        if node.job.enqueued_at is None:
            node.job.enqueued_at = now
    return [results[id(node)] for _group, node in members]


def _keyed(row: core._Row) -> Generator[Op, Rows, enqueue_keyed.Written]:
    """A job with keys, written as perform_later writes it (inside this transaction)."""
    inner = core._keyed_steps(row)
    try:
        statement, params = next(inner)
        while True:
            rows = yield ("run", statement, params)
            statement, params = inner.send(rows)
    except StopIteration as done:
        written: enqueue_keyed.Written = done.value
        return written


def _execute(cur: psycopg.Cursor[Any], schema: str | None, op: Op) -> Rows:
    kind, statement, params = op
    if kind == "copy":
        with cur.copy(sql(statement, schema)) as copy:
            for record in params:
                copy.write_row(record)
        return []
    cur.execute(sql(statement, schema), params)
    return cur.fetchall() if cur.description is not None else []


async def _execute_async(cur: psycopg.AsyncCursor[Any], schema: str | None, op: Op) -> Rows:
    kind, statement, params = op
    if kind == "copy":
        async with cur.copy(sql(statement, schema)) as copy:
            for record in params:
                await copy.write_row(record)
        return []
    await cur.execute(sql(statement, schema), params)
    return await cur.fetchall() if cur.description is not None else []


def run(conn: psycopg.Connection[Any], schema: str | None, top: Group) -> list[EnqueuedJob]:
    """Execute :func:`steps` on ``conn``, inside the transaction the caller opened."""
    gen = steps(top, schema)
    with conn.cursor() as cur:
        try:
            op = next(gen)
            while True:
                op = gen.send(_execute(cur, schema, op))
        except StopIteration as done:
            result: list[EnqueuedJob] = done.value
            return result


async def run_async(
    conn: psycopg.AsyncConnection[Any], schema: str | None, top: Group
) -> list[EnqueuedJob]:
    """:func:`run` on an async connection."""
    gen = steps(top, schema)
    async with conn.cursor() as cur:
        try:
            op = next(gen)
            while True:
                op = gen.send(await _execute_async(cur, schema, op))
        except StopIteration as done:
            result: list[EnqueuedJob] = done.value
            return result


def write_group(group: Group, connection: Any) -> list[EnqueuedJob]:
    """Write ``group`` in the caller's transaction on ``connection`` (one of its own if the
    connection is in autocommit), or in a transaction of pgjobs' own."""
    if connection is None and core._provider is not None:
        connection = core._provider()
    if connection is not None:
        schema = core.current_schema()
        driver = core.sync_driver(connection)
        if not driver.autocommit and driver.info.transaction_status == IDLE:
            driver.execute("SELECT 1")  # begin the caller's transaction: ours is a savepoint
        # Inside the caller's transaction, a savepoint: an error half-way (a unique job's
        # DuplicateJobError, say) takes back every row of the batch, whatever the caller does.
        with driver.transaction():
            return run(driver, schema, group)
    database = core._database()
    with database.connection() as conn, conn.transaction():
        return run(conn, database.schema, group)


async def write_group_async(group: Group, connection: Any) -> list[EnqueuedJob]:
    if connection is not None:
        schema = core.current_schema()
        driver = await core.async_driver(connection)
        if not driver.autocommit and driver.info.transaction_status == IDLE:
            await driver.execute("SELECT 1")
        async with driver.transaction():
            return await run_async(driver, schema, group)
    database = core._database()
    async with database.async_connection() as conn, conn.transaction():
        return await run_async(conn, database.schema, group)


def add_to_batch(
    batch: int | uuid.UUID | str, jobs: Iterable[Job], connection: Any = None
) -> list[EnqueuedJob]:
    """Add jobs to a batch that has not finished: by its public id, or by its row id (what a
    running job knows: ``Job.add_to_batch``)."""
    group = Group(None, "batch", nodes=[Node(job) for job in jobs])
    if isinstance(batch, int):
        group.into = batch
    else:
        group.into_public = batch if isinstance(batch, uuid.UUID) else uuid.UUID(str(batch))
    return write_group(group, connection)
