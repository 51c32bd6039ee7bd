"""Batches and workflows (pgjobs.workflows; the triggers of migration 0007), in a rolled-back
transaction: jobs are ended here with the row changes a worker's statements make (the end to
end tests with real workers are in test_workflows_e2e.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs.db.database import Database
from pgjobs.testing import work_off
from pgjobs.workflows.info import read
from tests.workflow_helpers import SUCCEEDED, _id, fail, retry, state, succeed
from tests.workflow_jobs import Callback, Part, ReadsDependencies


def info(conn: psycopg.Connection, batch: pgjobs.Batch) -> pgjobs.BatchInfo:
    return read(conn, None, batch.batch_id)


def callbacks_written(conn: psycopg.Connection) -> list[tuple[str, Any]]:
    """The callback jobs written so far: (tag, their arguments), oldest first."""
    rows = conn.execute(
        "SELECT arguments FROM pgjobs_jobs WHERE class_name = %s ORDER BY id",
        (Callback.job_name,),
    ).fetchall()
    return [(row[0]["args"][1] if len(row[0]["args"]) > 1 else None, row[0]) for row in rows]


def test_a_batch_and_its_jobs_are_written_together_with_exact_counts(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.batch(
        on_finish=Callback.build("finish"),
        on_success=Callback.build("success"),
        description="import",
        properties={"file": "a.csv"},
        connection=conn,
    ) as batch:
        batch.add(Part.build("a"), [Part.build("b"), Part.build("c")])
    assert [r.enqueued for r in batch.enqueued] == [True, True, True]
    found = info(conn, batch)
    assert (found.kind, found.description, found.properties) == (
        "batch",
        "import",
        {"file": "a.csv"},
    )
    assert (found.total, found.pending, found.state, found.fraction) == (3, 3, "running", 0.0)
    assert set(found.callbacks) == {"finish", "success"}
    a, b, c = batch._jobs
    succeed(conn, a)
    succeed(conn, b)
    assert callbacks_written(conn) == []
    succeed(conn, c)
    found = info(conn, batch)
    assert (found.pending, found.succeeded, found.state, found.fraction) == (0, 3, "succeeded", 1.0)
    written = callbacks_written(conn)
    assert [tag for tag, _ in written] == ["finish", "success"]
    # The callback's first argument is the batch, read afresh when it runs.
    first = written[0][1]["args"][0]
    assert first == {"__pgjobs__": "record", "kind": "pgjobs_batch", "v": str(batch.batch_id)}
    ids = conn.execute(
        "SELECT j.job_id FROM pgjobs_jobs j JOIN pgjobs_ready_executions r ON r.job_id = j.id"
        " WHERE class_name = %s ORDER BY j.id",
        (Callback.job_name,),
    ).fetchall()
    assert [row[0] for row in ids] == [found.callbacks["finish"], found.callbacks["success"]]


def test_a_failure_runs_on_discard_then_on_finish_and_a_successful_retry_on_success(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.batch(
        on_finish=Callback.build("finish"),
        on_success=Callback.build("success"),
        on_discard=Callback.build("discard"),
        connection=conn,
    ) as batch:
        batch.add(Part.build("a"), Part.build("b"))
    a, b = batch._jobs
    fail(conn, a)
    assert [tag for tag, _ in callbacks_written(conn)] == ["discard"]
    succeed(conn, b)
    found = info(conn, batch)
    assert (found.pending, found.succeeded, found.failed, found.state) == (0, 1, 1, "failed")
    assert [tag for tag, _ in callbacks_written(conn)] == ["discard", "finish"]
    retry(conn, a)  # an operator retries it: pending again, on_finish is not written again
    assert (info(conn, batch).pending, info(conn, batch).failed) == (1, 0)
    succeed(conn, a)
    found = info(conn, batch)
    assert (found.pending, found.succeeded, found.failed, found.state) == (0, 2, 0, "succeeded")
    assert [tag for tag, _ in callbacks_written(conn)] == ["discard", "finish", "success"]


def test_discarding_or_deleting_a_failed_job_counts_it_discarded(conn: psycopg.Connection) -> None:
    with pgjobs.batch(on_finish=Callback.build("finish"), connection=conn) as batch:
        batch.add(Part.build("a"), Part.build("b"), Part.build("c"))
    a, b, c = batch._jobs
    fail(conn, a)
    fail(conn, b)
    # pgjobs' discard of failed jobs deletes the job and its failed row in one statement.
    conn.execute(
        "WITH gone AS (DELETE FROM pgjobs_failed_executions WHERE job_id = %(id)s"
        " RETURNING job_id) DELETE FROM pgjobs_jobs WHERE id IN (SELECT job_id FROM gone)",
        {"id": _id(conn, a)},
    )
    id_b = _id(conn, b)  # or stamps it discarded
    conn.execute("DELETE FROM pgjobs_failed_executions WHERE job_id = %s", (id_b,))
    conn.execute(
        "UPDATE pgjobs_jobs SET finished_at = now(), discarded_at = now() WHERE id = %s", (id_b,)
    )
    found = info(conn, batch)
    assert (found.pending, found.failed, found.discarded) == (1, 0, 2)
    conn.execute(
        "UPDATE pgjobs_jobs SET finished_at = now(), cancelled_at = now() WHERE id = %s",
        (_id(conn, c),),
    )
    found = info(conn, batch)
    assert (found.pending, found.discarded, found.cancelled, found.state) == (0, 2, 1, "failed")
    assert [tag for tag, _ in callbacks_written(conn)] == ["finish"]


def test_an_empty_batch_runs_its_callbacks_at_once(conn: psycopg.Connection) -> None:
    batch = pgjobs.Batch.of(
        [], on_finish=Callback.build("finish"), on_success=Callback, connection=conn
    )
    assert info(conn, batch).state == "succeeded"
    assert [tag for tag, _ in callbacks_written(conn)] == ["finish", None]


def test_rolling_back_the_enqueuing_transaction_leaves_no_trace(conn: psycopg.Connection) -> None:
    before = conn.execute("SELECT count(*) FROM pgjobs_jobs").fetchone()
    with pytest.raises(RuntimeError), conn.transaction():
        with pgjobs.workflow(on_finish=Callback, connection=conn) as wf:
            first = wf.add(Part.build("a"))
            wf.add(Part.build("b"), after=[first])
        assert conn.execute("SELECT count(*) FROM pgjobs_batches").fetchone() == (1,)
        raise RuntimeError("the application's transaction fails")
    for table in ("batches", "held_executions", "job_dependencies"):
        assert conn.execute(f"SELECT count(*) FROM pgjobs_{table}").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pgjobs_jobs").fetchone() == before
    # An error inside the with block writes nothing at all.
    with pytest.raises(ValueError), pgjobs.batch(connection=conn) as batch:
        batch.add(Part.build("a"))
        raise ValueError("oops")
    assert conn.execute("SELECT count(*) FROM pgjobs_batches").fetchone() == (0,)


def test_a_workflow_releases_each_job_when_all_it_runs_after_have_succeeded(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.workflow(on_success=Callback.build("done"), connection=conn) as wf:
        fetch_a = wf.add(Part.build("a"))
        fetch_b = wf.add(Part.build("b"))
        merge = wf.add(Part.build("merge"), after=[fetch_a, fetch_b])
        report = wf.add(Part.build("report"), after=[merge])
    assert [state(conn, j) for j in (fetch_a, fetch_b, merge, report)] == [
        "ready", "ready", "held", "held"
    ]  # fmt: skip
    succeed(conn, fetch_a)
    assert state(conn, merge) == "held"
    succeed(conn, fetch_b)
    assert (state(conn, merge), state(conn, report)) == ("ready", "held")
    succeed(conn, merge)
    assert state(conn, report) == "ready"
    succeed(conn, report)
    assert info(conn, wf).state == "succeeded"
    assert [tag for tag, _ in callbacks_written(conn)] == ["done"]


def test_a_chain_runs_one_after_the_other(conn: psycopg.Connection) -> None:
    a, b, c = Part.build("a"), Part.build("b"), Part.build("c")
    wf = pgjobs.chain(a, b, c, connection=conn)
    assert info(conn, wf).kind == "workflow"
    assert [state(conn, j) for j in (a, b, c)] == ["ready", "held", "held"]
    succeed(conn, a)
    assert [state(conn, j) for j in (b, c)] == ["ready", "held"]
    succeed(conn, b)
    assert state(conn, c) == "ready"


def test_on_failure_cancel_cancels_everything_downstream(conn: psycopg.Connection) -> None:
    with pgjobs.workflow(on_finish=Callback.build("finish"), connection=conn) as wf:
        a = wf.add(Part.build("a"))
        side = wf.add(Part.build("side"))
        b = wf.add(Part.build("b"), after=[a])
        c = wf.add(Part.build("c"), after=[b, side])
        d = wf.add(Part.build("d"), after=[c])
    fail(conn, a)
    assert [state(conn, j) for j in (b, c, d)] == ["cancelled"] * 3
    assert state(conn, side) == "ready"
    found = info(conn, wf)
    assert (found.pending, found.failed, found.cancelled) == (1, 1, 3)
    succeed(conn, side)  # c was cancelled already: nothing released
    assert [state(conn, j) for j in (b, c, d)] == ["cancelled"] * 3
    assert info(conn, wf).state == "failed"
    assert [tag for tag, _ in callbacks_written(conn)] == ["finish"]


def test_on_failure_run_runs_dependents_anyway(conn: psycopg.Connection) -> None:
    with pgjobs.workflow(on_failure="run", connection=conn) as wf:
        a = wf.add(Part.build("a"))
        b = wf.add(Part.build("b"), after=[a])
    fail(conn, a)
    assert state(conn, b) == "ready"
    retry(conn, a)  # its dependency was resolved once: a later success changes nothing
    succeed(conn, a)
    assert state(conn, b) == "ready"


def test_on_failure_wait_holds_dependents_until_the_failed_job_is_retried_or_discarded(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.workflow(on_failure="wait", connection=conn) as wf:
        a = wf.add(Part.build("a"))
        b = wf.add(Part.build("b"), after=[a])
        x = wf.add(Part.build("x"))
        y = wf.add(Part.build("y"), after=[x])
    fail(conn, a)
    fail(conn, x)
    assert (state(conn, b), state(conn, y)) == ("held", "held")
    retry(conn, a)
    succeed(conn, a)
    assert state(conn, b) == "ready"
    id_x = _id(conn, x)
    conn.execute("DELETE FROM pgjobs_failed_executions WHERE job_id = %s", (id_x,))
    conn.execute(
        "UPDATE pgjobs_jobs SET finished_at = now(), discarded_at = now() WHERE id = %s", (id_x,)
    )
    assert state(conn, y) == "cancelled"


def test_a_released_job_with_a_concurrency_limit_takes_its_slot_through_the_dispatcher(
    conn: psycopg.Connection,
) -> None:
    class Limited(pgjobs.Job):
        job_name = "tests.workflows.Limited"
        limits_concurrency = pgjobs.limit(to=1, key=lambda: "one")

        def perform(self) -> None:
            pass

    with pgjobs.workflow(connection=conn) as wf:
        a = wf.add(Part.build("a"))
        limited = wf.add(Limited.build(), after=[a])
        free = wf.add(Limited.build())
    # Not held: due now, in scheduled with its key (the dispatcher gives it its slot).
    row = conn.execute(
        "SELECT concurrency_key, scheduled_at <= clock_timestamp() FROM pgjobs_scheduled_executions"
        " WHERE job_id = %s",
        (_id(conn, free),),
    ).fetchone()
    assert row is not None and row[1] is True and row[0].endswith("one")
    succeed(conn, a)
    assert state(conn, limited) == "scheduled"


def test_a_nested_batch_counts_as_one_job_of_its_parent(conn: psycopg.Connection) -> None:
    with pgjobs.batch(on_finish=Callback.build("parent"), connection=conn) as parent:
        parent.add(Part.build("p"))
        with parent.batch(on_finish=Callback.build("child")) as child:
            child.add(Part.build("c1"), Part.build("c2"))
    assert (info(conn, parent).total, info(conn, child).total) == (2, 2)
    assert info(conn, child).parent_id == parent.batch_id
    p = parent._jobs[0]
    c1, c2 = child._jobs
    succeed(conn, p)
    succeed(conn, c1)
    fail(conn, c2)
    assert [tag for tag, _ in callbacks_written(conn)] == ["child", "parent"]
    found = info(conn, parent)
    assert (found.succeeded, found.failed, found.state) == (1, 1, "failed")
    retry(conn, c2)
    succeed(conn, c2)  # the child succeeds after all: so does the parent
    found = info(conn, parent)
    assert (found.succeeded, found.failed, found.state) == (2, 0, "succeeded")


def test_jobs_can_be_added_only_to_a_batch_that_has_not_finished(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.batch(on_finish=Callback.build("finish"), connection=conn) as batch:
        batch.add(Part.build("a"))
    from pgjobs.workflows.write import add_to_batch

    added = add_to_batch(batch.batch_id, [Part.build("b")], connection=conn)
    assert added[0].enqueued and info(conn, batch).total == 2
    succeed(conn, batch._jobs[0])
    succeed(conn, added[0].job_id)
    with pytest.raises(pgjobs.BatchFinished, match="has finished"):
        add_to_batch(batch.batch_id, [Part.build("c")], connection=conn)
    assert [tag for tag, _ in callbacks_written(conn)] == ["finish"]


def test_a_unique_job_joins_its_batch_unless_it_was_a_duplicate(conn: psycopg.Connection) -> None:
    class Once(pgjobs.Job):
        job_name = "tests.workflows.Once"
        unique = pgjobs.unique(key=lambda: "k")

        def perform(self) -> None:
            pass

    with pgjobs.batch(connection=conn) as batch:
        batch.add(Once.build(), Once.build(), Part.build("a"))
    assert [r.state for r in batch.enqueued] == ["ready", "duplicate", "ready"]
    assert info(conn, batch).total == 2


def test_bad_input_is_refused_with_a_clear_error(conn: psycopg.Connection) -> None:
    with pytest.raises(pgjobs.ConfigurationError, match="on_failure='skip': choose one of"):
        pgjobs.workflow(on_failure="skip")  # type: ignore[arg-type]
    with pytest.raises(pgjobs.ConfigurationError, match="on_finish: give a job class"):
        pgjobs.batch(on_finish=print)  # type: ignore[arg-type]
    with pytest.raises(pgjobs.ConfigurationError, match="properties must be JSON"):
        pgjobs.batch(properties={"when": object()})
    with pytest.raises(pgjobs.ConfigurationError, match="add\\(\\) takes built jobs"):
        pgjobs.batch().add(Part)  # type: ignore[arg-type]
    stranger = Part.build("x")
    not_added = "after= names a job that was not added"
    with pytest.raises(pgjobs.ConfigurationError, match=not_added), pgjobs.workflow() as wf:
        wf.add(Part.build("a"), after=[stranger])
    with pytest.raises(pgjobs.SerializationError, match="on_finish of a batch"):
        pgjobs.batch(on_finish=Callback.build(object()))
    with pytest.raises(pgjobs.BatchNotFound):
        pgjobs.get_batch(uuid.uuid4())
    with pytest.raises(pgjobs.BatchNotFound, match="not a batch id"):
        pgjobs.get_batch("nope")


def test_a_job_in_no_batch_fires_nothing(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "INSERT INTO pgjobs_jobs (job_id, queue_name, class_name) VALUES (%s, 'default', 'x')"
        " RETURNING id",
        (uuid.uuid4(),),
    ).fetchone()
    assert row is not None
    conn.execute(SUCCEEDED, (row[0],))
    assert conn.execute("SELECT count(*) FROM pgjobs_batches").fetchone() == (0,)


# -- committed: pgjobs' own connections, work_off ---------------------------------------------


@pytest.mark.committed
def test_cancelling_a_held_job_cancels_it_and_what_waits_on_it(db: Database) -> None:
    with pgjobs.workflow(on_finish=Callback.build("finish")) as wf:
        a = wf.add(Part.build("a"))
        b = wf.add(Part.build("b"), after=[a])
        c = wf.add(Part.build("c"), after=[b])
    assert pgjobs.get_job(b.job_id).state == "held"
    assert pgjobs.cancel(b.job_id) == "cancelled"
    assert [pgjobs.get_job(j.job_id).state for j in (a, b, c)] == [
        "ready",
        "cancelled",
        "cancelled",
    ]
    work_off()
    found = wf.wait(timeout=5)
    assert (found.succeeded, found.cancelled, found.state) == (1, 2, "failed")
    assert pgjobs.get_job(found.callbacks["finish"]).state == "finished"


@pytest.mark.committed
def test_work_off_runs_workflows_to_their_end_and_wait_batch_times_out_while_pending(
    db: Database,
) -> None:
    with pgjobs.workflow() as wf:
        first = wf.add(Part.build("a"))
        reader = wf.add(ReadsDependencies.build("r"), after=[first])
    with pytest.raises(TimeoutError, match="2 of 2 jobs pending"):
        pgjobs.wait_batch(wf.batch_id, timeout=0.1)
    work_off()
    assert pgjobs.wait_batch(wf.batch_id, timeout=1).state == "succeeded"
    assert pgjobs.get_job(reader.job_id).result == ["a"]


@pytest.mark.committed
def test_a_batch_is_written_on_an_async_connection_in_its_transaction(db: Database) -> None:
    async def write(rollback: bool) -> pgjobs.Batch:
        async with await psycopg.AsyncConnection.connect(db.url) as aconn:
            async with pgjobs.batch(on_finish=Callback, connection=aconn) as batch:
                batch.add(Part.build("async"))
            if rollback:
                await aconn.rollback()
            else:
                await aconn.commit()
        return batch

    gone = asyncio.run(write(rollback=True))
    with pytest.raises(pgjobs.BatchNotFound):
        pgjobs.get_batch(gone.batch_id)
    kept = asyncio.run(write(rollback=False))
    work_off()
    assert kept.wait(timeout=5).state == "succeeded"


@pytest.mark.committed
def test_a_worker_finishes_the_jobs_of_each_batch_in_a_statement_of_its_own(
    db: Database, make_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgjobs.store.finished import FINISH_BATCH
    from tests.engine_helpers import run_once

    first, second = pgjobs.batch(), pgjobs.batch()
    for n in range(3):  # interleaved, so one claim takes jobs of both
        first.add(Part.build(f"a{n}"))
        second.add(Part.build(f"b{n}"))
    first.enqueue()
    second.enqueue()
    pgjobs.perform_all_later([Part.build("plain")])
    worker = make_worker()
    statements: list[list[int]] = []
    execute = worker.execute

    def spy(template: str, params: Any = None) -> Any:
        if template in (worker._finish_keyed_sql, FINISH_BATCH):
            statements.append(sorted(params["finished"]))
        return execute(template, params)

    monkeypatch.setattr(worker, "execute", spy)
    assert len(run_once(worker, limit=10)) == 7
    worker._finish_keyed()
    assert len(statements) == 2  # the plain job was finished by the claim statement's kind
    assert worker.to_finish_keyed == [] and worker._batch_of == {}
    for batch in (first, second):
        assert (batch.info().succeeded, batch.info().state) == (3, "succeeded")


# -- what a hostile review found (each failed before its fix) ----------------------------------


class UniqueRaise(pgjobs.Job):
    job_name = "tests.workflows.UniqueRaise"
    unique = pgjobs.unique(key=lambda: "one", on_conflict="raise")

    def perform(self) -> None:
        pass


class UniqueReplace(pgjobs.Job):
    job_name = "tests.workflows.UniqueReplace"
    unique = pgjobs.unique(key=lambda: "same", on_conflict="replace")

    def perform(self) -> None:
        pass


def test_a_batch_that_fails_half_way_leaves_nothing_in_the_callers_transaction(
    conn: psycopg.Connection,
) -> None:
    with pytest.raises(pgjobs.DuplicateJobError), pgjobs.batch(connection=conn) as batch:
        batch.add(Part.build("a"), UniqueRaise.build(), UniqueRaise.build())
    # The application goes on with its transaction (and commits it): no trace of the batch.
    assert conn.execute("SELECT count(*) FROM pgjobs_batches").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pgjobs_jobs").fetchone() == (0,)


def test_a_unique_job_replaced_by_another_of_the_batch_is_not_counted(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.batch(on_finish=Callback.build("finish"), connection=conn) as batch:
        batch.add(UniqueReplace.build(), UniqueReplace.build())
    found = info(conn, batch)
    assert (found.total, found.pending, found.state) == (1, 1, "running")
    assert callbacks_written(conn) == []


def test_dependencies_keep_their_places_when_one_is_gone(conn: psycopg.Connection) -> None:
    with pgjobs.workflow(connection=conn) as wf:
        a, b = wf.add(Part.build("a")), wf.add(Part.build("b"))
        c = wf.add(Part.build("c"), after=[a, b])
    succeed(conn, a)
    conn.execute("DELETE FROM pgjobs_jobs WHERE id = %s", (_id(conn, a),))  # cleared somehow
    from pgjobs.db.names import sql
    from pgjobs.store import batches as batches_store

    rows = conn.execute(sql(batches_store.DEPENDENCIES, None), {"job_id": c.job_id}).fetchall()
    assert [(row[0], row[1]) for row in rows] == [(None, "cleared"), (b.job_id, "pending")]


def test_one_built_callback_serves_several_batches(conn: psycopg.Connection) -> None:
    notify = Callback.build("shared")
    batches = [
        pgjobs.Batch.of([Part.build(str(n))], on_finish=notify, connection=conn) for n in (1, 2)
    ]
    for batch in batches:
        succeed(conn, batch._jobs[0])
    assert [tag for tag, _ in callbacks_written(conn)] == ["shared", "shared"]


def test_a_job_retried_after_its_batch_finished_can_still_add_to_it(
    conn: psycopg.Connection,
) -> None:
    from pgjobs.workflows.write import add_to_batch

    with pgjobs.batch(connection=conn) as batch:
        batch.add(Part.build("fans out"))
    (job,) = batch._jobs
    fail(conn, job)
    assert info(conn, batch).state == "failed"
    retry(conn, job)  # pending again: it runs again and adds its jobs
    assert add_to_batch(batch.batch_id, [Part.build("child")], connection=conn)[0].enqueued
    assert info(conn, batch).total == 2


def test_more_bad_input_is_refused(conn: psycopg.Connection) -> None:
    a = Part.build("a")
    with pytest.raises(pgjobs.ConfigurationError, match="added twice"), pgjobs.batch() as twice:
        twice.add(a, a)
    same_twice = "names the same job twice"
    with pytest.raises(pgjobs.ConfigurationError, match=same_twice), pgjobs.workflow() as wf:
        first = wf.add(Part.build("x"))
        wf.add(Part.build("y"), after=[first, first])
    batch = pgjobs.Batch.of([Part.build("b")], connection=conn)
    with pytest.raises(pgjobs.ConfigurationError, match="written already"):
        batch.enqueue()
    with pytest.raises(pgjobs.ConfigurationError, match="written already"):
        batch.add(Part.build("late"))
    with pytest.raises(pgjobs.ConfigurationError, match="enqueued already"):
        pgjobs.Batch.of(batch._jobs, connection=conn)


def test_a_chain_step_may_be_several_jobs(conn: psycopg.Connection) -> None:
    fetch, small, large, publish = (Part.build(t) for t in ("f", "s", "l", "p"))
    pgjobs.chain(fetch, [small, large], publish, connection=conn)
    assert [state(conn, j) for j in (fetch, small, large, publish)] == [
        "ready", "held", "held", "held"
    ]  # fmt: skip
    succeed(conn, fetch)
    assert [state(conn, j) for j in (small, large, publish)] == ["ready", "ready", "held"]
    succeed(conn, small)
    succeed(conn, large)
    assert state(conn, publish) == "ready"


@pytest.mark.committed
def test_clear_finished_keeps_what_dependents_read_then_clears_jobs_dependencies_and_batches(
    db: Database,
) -> None:
    with pgjobs.workflow() as wf:
        a = wf.add(Part.build("a"))
        wf.add(Part.build("b", 5.0), after=[a])  # held: runs later
    with psycopg.connect(db.url, autocommit=True) as c:
        succeed(c, a)
    assert pgjobs.clear_finished(older_than=0) == 0  # b has not finished: a stays
    work_off()
    assert pgjobs.clear_finished(older_than=0) == 2
    with psycopg.connect(db.url) as c:
        for table in ("pgjobs_job_dependencies", "pgjobs_batches"):
            assert c.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


@pytest.mark.committed
def test_a_callback_reads_its_batch_again_after_a_lost_connection(db: Database) -> None:
    """The chaos suite's find: a pooled connection used within the last second is handed out
    untested; dead after a restart, it failed the callback for good while its arguments were
    decoded (before it ran)."""
    from pgjobs.serialization import deserialize_arguments

    batch = pgjobs.Batch.of([Part.build("a")], on_finish=Callback.build("finish"))
    with psycopg.connect(db.url) as c:
        row = c.execute(
            "SELECT callbacks -> 'finish' -> 'arguments' FROM pgjobs_batches"
        ).fetchone()
        assert row is not None
    arguments = json.dumps(row[0])  # what the callback job will be written with
    pgjobs.get_batch(batch.batch_id)  # the pool's connection, used just now
    with psycopg.connect(db.url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND datname = current_database()"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    args, _ = deserialize_arguments(arguments)
    assert isinstance(args[0], pgjobs.BatchInfo) and args[0].batch_id == batch.batch_id
