"""batches and workflows (pgjobs_batches, pgjobs_held_executions, pgjobs_job_dependencies,
batch_id on pgjobs_jobs and pgjobs_failed_executions, and the triggers that keep them)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 10:00:00

A batch's counts and a workflow's dependencies change in the statement that ends each of their
jobs, whichever statement that is (a worker's finish, a failure, a retry or discard by an
operator, a cancellation, a recovery): row triggers on ``pgjobs_jobs`` and
``pgjobs_failed_executions`` (whose rows carry the job's ``batch_id``) do it, so no way of
ending a job can forget it, and the change commits or rolls back with the job's own (a
SIGKILLed worker's finish never counts).  Each
trigger has a ``WHEN`` on ``batch_id``: a job in no batch fires nothing (the condition is
evaluated per finished row, no function is called).

Counters and callbacks are exactly once by row locks: every job's end updates its batch's row
(``UPDATE ... RETURNING``), so two jobs ending at the same moment on two workers are counted one
after the other, and only the update that brings ``pending`` to 0 finds ``finished_at`` unset and
writes the callback job.  A dependent's ``pending`` in ``pgjobs_held_executions`` works the same
way.  The functions' statements name the tables with the migration's schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# {p}: the schema prefix ("pgjobs". or nothing); {channel}: the workers' NOTIFY channel.
_FUNCTIONS = r"""
-- A callback's moment came: write its job (prepared when the batch was created) and its ready
-- row, and wake the workers.  ON CONFLICT: its job_id was given at creation; never written twice.
CREATE FUNCTION {p}pgjobs_batch_fire(b {p}pgjobs_batches, what text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    cb jsonb := b.callbacks -> what;
    new_id bigint;
BEGIN
    IF cb IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO {p}pgjobs_jobs (job_id, queue_name, class_name, arguments, priority)
    VALUES ((cb ->> 'job_id')::uuid, cb ->> 'queue_name', cb ->> 'class_name', cb -> 'arguments',
            (cb ->> 'priority')::smallint)
    ON CONFLICT (job_id) DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NOT NULL THEN
        INSERT INTO {p}pgjobs_ready_executions (job_id, queue_name, priority)
        VALUES (new_id, cb ->> 'queue_name', (cb ->> 'priority')::smallint);
        PERFORM pg_notify('{channel}',
                          (cb ->> 'queue_name') || E'\t' || (cb ->> 'priority') || E'\t' || new_id);
    END IF;
END
$fn$;

-- Count one end (delta 1) or its undoing (delta -1: a failed job retried) of a job of a batch,
-- and write the callbacks whose moment came: discard at the first job that did not succeed,
-- finish when none is pending, success when all succeeded (later, if a failed job is retried
-- and succeeds).  A nested batch counts as one job of its parent: succeeded if all its jobs did,
-- else failed (turned to succeeded if it succeeds later).
CREATE FUNCTION {p}pgjobs_batch_note(batch bigint, outcome text, delta integer) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    b {p}pgjobs_batches;
    fire_discard boolean;
    fire_finish boolean;
    fire_success boolean;
BEGIN
    UPDATE {p}pgjobs_batches SET
        pending = pending - delta,
        succeeded = succeeded + CASE WHEN outcome = 'succeeded' THEN delta ELSE 0 END,
        failed = failed + CASE WHEN outcome = 'failed' THEN delta ELSE 0 END,
        discarded = discarded + CASE WHEN outcome = 'discarded' THEN delta ELSE 0 END,
        cancelled = cancelled + CASE WHEN outcome = 'cancelled' THEN delta ELSE 0 END
    WHERE id = batch
    RETURNING * INTO b;
    IF NOT FOUND THEN
        RETURN;  -- the batch was cleared
    END IF;
    fire_discard := delta > 0 AND outcome <> 'succeeded' AND b.discarded_at IS NULL;
    fire_finish := b.pending <= 0 AND b.finished_at IS NULL;
    fire_success := b.succeeded >= b.total AND b.pending <= 0 AND b.succeeded_at IS NULL;
    IF NOT (fire_discard OR fire_finish OR fire_success) THEN
        RETURN;
    END IF;
    UPDATE {p}pgjobs_batches SET
        discarded_at = CASE WHEN fire_discard THEN now() ELSE discarded_at END,
        finished_at = CASE WHEN fire_finish THEN now() ELSE finished_at END,
        succeeded_at = CASE WHEN fire_success THEN now() ELSE succeeded_at END
    WHERE id = batch;
    IF fire_discard THEN
        PERFORM {p}pgjobs_batch_fire(b, 'discard');
    END IF;
    IF fire_finish THEN
        PERFORM {p}pgjobs_batch_fire(b, 'finish');
    END IF;
    IF fire_success THEN
        PERFORM {p}pgjobs_batch_fire(b, 'success');
    END IF;
    IF b.parent_id IS NOT NULL THEN
        IF fire_finish THEN
            PERFORM {p}pgjobs_batch_note(
                b.parent_id, CASE WHEN fire_success THEN 'succeeded' ELSE 'failed' END, 1);
        ELSIF fire_success THEN  -- finished with failures before: its parent counted it failed
            PERFORM {p}pgjobs_batch_note(b.parent_id, 'failed', -1);
            PERFORM {p}pgjobs_batch_note(b.parent_id, 'succeeded', 1);
        END IF;
    END IF;
END
$fn$;

-- Move held jobs whose dependencies are all resolved on: to ready, or to scheduled when they
-- are due later or must take a concurrency slot (the dispatcher sends those through blocked).
CREATE FUNCTION {p}pgjobs_release_held(ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    woken bigint;
BEGIN
    WITH gone AS (
        DELETE FROM {p}pgjobs_held_executions WHERE job_id = ANY (ids) AND pending <= 0
        RETURNING job_id, queue_name, priority
    ), j AS (
        SELECT g.job_id, g.queue_name, g.priority, x.scheduled_at, x.concurrency_key,
               x.concurrency_key IS NULL AND coalesce(x.scheduled_at <= now(), true) AS due
        FROM gone g JOIN {p}pgjobs_jobs x ON x.id = g.job_id
    ), to_ready AS (
        INSERT INTO {p}pgjobs_ready_executions (job_id, queue_name, priority)
        SELECT job_id, queue_name, priority FROM j WHERE due
        RETURNING job_id, queue_name, priority
    ), to_scheduled AS (
        INSERT INTO {p}pgjobs_scheduled_executions
            (job_id, queue_name, priority, scheduled_at, concurrency_key)
        SELECT job_id, queue_name, priority, greatest(coalesce(scheduled_at, now()), now()),
               concurrency_key
        FROM j WHERE NOT due
    )
    SELECT count(pg_notify('{channel}', queue_name || E'\t' || priority || E'\t' || job_id))
    INTO woken FROM to_ready;
END
$fn$;

-- A job of a workflow ended (outcome: succeeded, failed, discarded, cancelled): pass it on to
-- its dependents.  A success resolves their dependency on it (those left with none are
-- released); a failure, by the workflow's on_failure, cancels every job that waits on it
-- directly or through others ('cancel'; 'wait' does so only once the job is discarded or
-- cancelled, a failed job may still be retried) or resolves the dependency as if it had
-- succeeded ('run').
CREATE FUNCTION {p}pgjobs_dependency_ended(dep bigint, batch bigint, outcome text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    policy text;
    released bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {p}pgjobs_job_dependencies
                   WHERE depends_on = dep AND NOT resolved) THEN
        RETURN;  -- no dependents (every job of a plain batch): one index probe
    END IF;
    SELECT on_failure INTO policy FROM {p}pgjobs_batches WHERE id = batch;
    IF outcome = 'succeeded' OR policy = 'run' THEN
        WITH resolved AS (
            UPDATE {p}pgjobs_job_dependencies SET resolved = true
            WHERE depends_on = dep AND NOT resolved
            RETURNING job_id
        ), counted AS (
            UPDATE {p}pgjobs_held_executions h SET pending = h.pending - 1
            FROM resolved r WHERE h.job_id = r.job_id
            RETURNING h.job_id, h.pending
        )
        SELECT array_agg(job_id) INTO released FROM counted WHERE pending <= 0;
        IF released IS NOT NULL THEN
            PERFORM {p}pgjobs_release_held(released);
        END IF;
    ELSIF outcome = 'failed' AND policy = 'wait' THEN
        RETURN;
    ELSE
        -- Everything downstream at once (one level of trigger recursion, however deep the
        -- graph): cancelling each job fires this function for it, which finds nothing left.
        WITH RECURSIVE down(job_id) AS (
            SELECT d.job_id FROM {p}pgjobs_job_dependencies d
            WHERE d.depends_on = dep AND NOT d.resolved
            UNION
            SELECT d.job_id FROM {p}pgjobs_job_dependencies d
            JOIN down ON d.depends_on = down.job_id
            WHERE NOT d.resolved
        ), marked AS (
            UPDATE {p}pgjobs_job_dependencies SET resolved = true
            WHERE NOT resolved AND (depends_on = dep OR depends_on IN (SELECT job_id FROM down))
        ), gone AS (
            DELETE FROM {p}pgjobs_held_executions WHERE job_id IN (SELECT job_id FROM down)
            RETURNING job_id
        )
        UPDATE {p}pgjobs_jobs SET finished_at = now(), cancelled_at = now(),
            cancel_requested_at = coalesce(cancel_requested_at, now()),
            unique_key = CASE WHEN left(unique_key, 2) = 'p|' THEN unique_key END
        WHERE id IN (SELECT job_id FROM gone);
    END IF;
END
$fn$;

-- A worker's finish of jobs of batches that it counts itself, once per statement (store
-- finished.FINISH_BATCH, which sets pgjobs.counted so that the row trigger leaves them alone):
-- the jobs ``ids`` of ``batches`` succeeded.  Each batch's row is updated once with the count
-- (batches in id order), then each dependent's held row once with the number of its
-- dependencies among them.  Returns how many jobs were counted.
CREATE FUNCTION {p}pgjobs_jobs_succeeded(ids bigint[], batches bigint[]) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    b record;
    released bigint[];
BEGIN
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    FOR b IN SELECT x.batch, count(*)::integer AS n FROM unnest(batches) AS x(batch)
             WHERE x.batch IS NOT NULL GROUP BY x.batch ORDER BY x.batch LOOP
        PERFORM {p}pgjobs_batch_note(b.batch, 'succeeded', b.n);
    END LOOP;
    WITH resolved AS (
        UPDATE {p}pgjobs_job_dependencies SET resolved = true
        WHERE depends_on = ANY (ids) AND NOT resolved
        RETURNING job_id
    ), counted AS (
        UPDATE {p}pgjobs_held_executions h SET pending = h.pending - r.n
        FROM (SELECT job_id, count(*)::integer AS n FROM resolved GROUP BY job_id) r
        WHERE h.job_id = r.job_id
        RETURNING h.job_id, h.pending
    )
    SELECT array_agg(job_id) INTO released FROM counted WHERE pending <= 0;
    IF released IS NOT NULL THEN
        PERFORM {p}pgjobs_release_held(released);
    END IF;
    RETURN array_length(ids, 1);
END
$fn$;

-- pgjobs_jobs: a job of a batch ended (finished_at set), or was deleted before it ended.
CREATE FUNCTION {p}pgjobs_job_ended() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    outcome text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM {p}pgjobs_batch_note(OLD.batch_id, 'discarded', 1);
        PERFORM {p}pgjobs_dependency_ended(OLD.id, OLD.batch_id, 'discarded');
        RETURN NULL;
    END IF;
    outcome := CASE WHEN NEW.cancelled_at IS NOT NULL THEN 'cancelled'
                    WHEN NEW.discarded_at IS NOT NULL THEN 'discarded'
                    ELSE 'succeeded' END;
    PERFORM {p}pgjobs_batch_note(NEW.batch_id, outcome, 1);
    PERFORM {p}pgjobs_dependency_ended(NEW.id, NEW.batch_id, outcome);
    RETURN NULL;
END
$fn$;

-- pgjobs_failed_executions: a job of a batch failed for good (the statements that write a
-- failure copy the job's batch_id onto it).
CREATE FUNCTION {p}pgjobs_job_failed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM {p}pgjobs_batch_note(NEW.batch_id, 'failed', 1);
    PERFORM {p}pgjobs_dependency_ended(NEW.job_id, NEW.batch_id, 'failed');
    RETURN NULL;
END
$fn$;

-- pgjobs_failed_executions: a failure of a job of a batch ended (retried: pending again;
-- discarded: the job's own end is counted by pgjobs_job_ended).
CREATE FUNCTION {p}pgjobs_failure_ended() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM {p}pgjobs_batch_note(OLD.batch_id, 'failed', -1);
    RETURN NULL;
END
$fn$;

-- (pgjobs.counted 'on': the statement counts its jobs itself, pgjobs_jobs_succeeded; the WHEN is
-- evaluated as each row is updated, after that statement set it.)
CREATE TRIGGER pgjobs_job_ended AFTER UPDATE OF finished_at ON {p}pgjobs_jobs
FOR EACH ROW
WHEN (NEW.batch_id IS NOT NULL AND OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL
      AND current_setting('pgjobs.counted', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION {p}pgjobs_job_ended();

CREATE TRIGGER pgjobs_job_deleted AFTER DELETE ON {p}pgjobs_jobs
FOR EACH ROW WHEN (OLD.batch_id IS NOT NULL AND OLD.finished_at IS NULL)
EXECUTE FUNCTION {p}pgjobs_job_ended();

CREATE TRIGGER pgjobs_job_failed AFTER INSERT ON {p}pgjobs_failed_executions
FOR EACH ROW WHEN (NEW.batch_id IS NOT NULL)
EXECUTE FUNCTION {p}pgjobs_job_failed();

CREATE TRIGGER pgjobs_failure_ended AFTER DELETE ON {p}pgjobs_failed_executions
FOR EACH ROW WHEN (OLD.batch_id IS NOT NULL)
EXECUTE FUNCTION {p}pgjobs_failure_ended();
"""

_DROP = """
DROP TRIGGER pgjobs_failure_ended ON {p}pgjobs_failed_executions;
DROP TRIGGER pgjobs_job_failed ON {p}pgjobs_failed_executions;
DROP TRIGGER pgjobs_job_deleted ON {p}pgjobs_jobs;
DROP TRIGGER pgjobs_job_ended ON {p}pgjobs_jobs;
DROP FUNCTION {p}pgjobs_failure_ended();
DROP FUNCTION {p}pgjobs_job_failed();
DROP FUNCTION {p}pgjobs_job_ended();
DROP FUNCTION {p}pgjobs_jobs_succeeded(bigint[], bigint[]);
DROP FUNCTION {p}pgjobs_dependency_ended(bigint, bigint, text);
DROP FUNCTION {p}pgjobs_release_held(bigint[]);
DROP FUNCTION {p}pgjobs_batch_note(bigint, text, integer);
DROP FUNCTION {p}pgjobs_batch_fire({p}pgjobs_batches, text);
"""


def _schema() -> str | None:
    """pgjobs' schema as migrations/env.py reads it (``pgjobs migrate --schema``,
    ``pgjobs.migrate(schema=...)``, ``-x schema=``); none when pgjobs' migrations run in an
    application's own alembic (its tables are in the search_path, whatever schema that alembic
    keeps its version table in)."""
    config = op.get_context().config
    schema = config.attributes.get("schema") if config is not None else None
    if not schema:
        try:
            schema = context.get_x_argument(as_dictionary=True).get("schema")
        except Exception:  # no environment context: not run by alembic's command
            schema = None
    return str(schema) if schema else None


def _names() -> dict[str, str]:
    schema = _schema()
    if not schema:
        return {"p": "", "channel": "pgjobs_ready"}
    return {"p": '"' + schema.replace('"', '""') + '".', "channel": f"pgjobs_ready_{schema}"}


def upgrade() -> None:
    op.add_column("pgjobs_jobs", sa.Column("batch_id", sa.BigInteger(), nullable=True))
    op.create_index(
        op.f("ix_pgjobs_jobs_batch_id_id"),
        "pgjobs_jobs",
        ["batch_id", "id"],
        unique=False,
        postgresql_where=sa.text("batch_id IS NOT NULL"),
    )
    op.add_column("pgjobs_failed_executions", sa.Column("batch_id", sa.BigInteger(), nullable=True))
    op.create_table(
        "pgjobs_batches",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("batch_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), server_default=sa.text("'batch'"), nullable=False),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "properties",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("on_failure", sa.Text(), nullable=True),
        sa.Column(
            "callbacks",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("succeeded", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("discarded", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cancelled", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("succeeded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pgjobs_batches")),
    )
    op.create_index(op.f("ix_pgjobs_batches_batch_id"), "pgjobs_batches", ["batch_id"], unique=True)
    op.create_index(
        op.f("ix_pgjobs_batches_parent_id"),
        "pgjobs_batches",
        ["parent_id"],
        unique=False,
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.create_table(
        "pgjobs_held_executions",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("queue_name", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_pgjobs_held_executions")),
    )
    op.create_table(
        "pgjobs_job_dependencies",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("depends_on", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("resolved", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("depends_on", "job_id", name=op.f("pk_pgjobs_job_dependencies")),
    )
    op.create_index(
        op.f("ix_pgjobs_job_dependencies_job_id_position"),
        "pgjobs_job_dependencies",
        ["job_id", "position"],
        unique=False,
    )
    op.execute(_FUNCTIONS.format(**_names()))


def downgrade() -> None:
    op.execute(_DROP.format(**_names()))
    op.drop_index(
        op.f("ix_pgjobs_job_dependencies_job_id_position"), table_name="pgjobs_job_dependencies"
    )
    op.drop_table("pgjobs_job_dependencies")
    op.drop_table("pgjobs_held_executions")
    op.drop_index(
        op.f("ix_pgjobs_batches_parent_id"),
        table_name="pgjobs_batches",
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.drop_index(op.f("ix_pgjobs_batches_batch_id"), table_name="pgjobs_batches")
    op.drop_table("pgjobs_batches")
    op.drop_column("pgjobs_failed_executions", "batch_id")
    op.drop_index(
        op.f("ix_pgjobs_jobs_batch_id_id"),
        table_name="pgjobs_jobs",
        postgresql_where=sa.text("batch_id IS NOT NULL"),
    )
    op.drop_column("pgjobs_jobs", "batch_id")
