"""The chaos ledger: what really ran, when, and which faults were injected.

It lives in its own database on the test server, never on the PostgreSQL the chaos run faults,
so it records runs while pgjobs cannot reach its database (an outage, a partition).  Every time
in it is ``clock_timestamp()`` of that one server: all hosts share one clock.

- ``chaos_runs``: one row per execution of a job's ``perform`` (written by the jobs, autocommit).
  ``ended_at``/``outcome`` stay NULL when the process died under it.
- ``chaos_faults``: one row per injected fault, with the pids and host it hit and its interval.
- ``chaos_deaths``: when the watcher saw a process that had a run open disappear.
- ``chaos_steps``: what the stepped jobs (:class:`tests.chaos.workload.Stepped`) did in their runs:
  a step started (with the cursor it resumed from), an item processed, a cursor proven written
  (``step.checkpoint()`` returned), a step's function returned, a step's completion proven
  written (``self.step`` returned: pgjobs waited for the checkpoint).
- ``chaos_cancels``: every ``pgjobs.cancel`` the canceller made: when it was asked, when it was
  answered and the answer (``error:<class>`` when it raised: it may or may not have taken).
- ``chaos_callbacks``: what each run of a batch callback
  (:class:`tests.chaos.workload.BatchCallback`) received: the batch (:class:`pgjobs.BatchInfo`,
  read when the run started) and its counts.
- ``chaos_dependencies``: what each run of a workflow job (:class:`tests.chaos.workload.Node`)
  read of its dependencies (``job.dependencies()``): their state as the database had it then.
- ``chaos_operations``: every retry or discard of a failed job the operator made
  (:class:`pgjobs.FailedJobs`), with its answer (``done``, ``not_failed``, ``error:<class>``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

ENV = "PGJOBS_CHAOS_LEDGER"

SCHEMA = """
CREATE TABLE IF NOT EXISTS chaos_runs (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    kind text NOT NULL,
    key text,
    host text NOT NULL,
    pid integer NOT NULL,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz,
    outcome text
);
CREATE INDEX IF NOT EXISTS chaos_runs_open ON chaos_runs (pid) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS chaos_faults (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    host text,
    pids integer[] NOT NULL DEFAULT '{}',
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz,
    detail text NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS chaos_deaths (
    pid integer PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_steps (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL,
    job_id uuid NOT NULL,
    step text NOT NULL,
    event text NOT NULL,
    value integer,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_cancels (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    kind text NOT NULL,
    asked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    answered_at timestamptz,
    answer text
);
CREATE TABLE IF NOT EXISTS chaos_callbacks (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL,
    job_id uuid NOT NULL,
    what text NOT NULL,
    batch_id uuid NOT NULL,
    state text NOT NULL,
    total integer NOT NULL,
    pending integer NOT NULL,
    succeeded integer NOT NULL,
    failed integer NOT NULL,
    discarded integer NOT NULL,
    cancelled integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_dependencies (
    id bigserial PRIMARY KEY,
    run_id bigint NOT NULL,
    job_id uuid NOT NULL,
    depends_on uuid,
    state text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_operations (
    id bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    action text NOT NULL,
    asked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    answered_at timestamptz,
    answer text
);
"""


@dataclass(frozen=True)
class Run:
    id: int
    job_id: str
    kind: str
    key: str | None
    host: str
    pid: int
    attempt: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class Fault:
    id: int
    kind: str
    host: str | None
    pids: tuple[int, ...]
    started_at: datetime
    ended_at: datetime | None
    detail: str


@dataclass(frozen=True)
class StepEvent:
    """``event``: plan (``value``: the items to iterate), start (``value``: the cursor it resumed
    from, None on a first run), item (``value``: the item), checkpoint (``value``: the cursor
    proven written), done (the step's function returned), committed (its completion proven
    written)."""

    id: int
    run_id: int
    job_id: str
    step: str
    event: str
    value: int | None
    at: datetime


@dataclass(frozen=True)
class Cancel:
    id: int
    job_id: str
    kind: str
    asked_at: datetime
    answered_at: datetime | None
    answer: str | None


@dataclass(frozen=True)
class CallbackSeen:
    """A callback run's view of its batch (``what``: finish, success, discard)."""

    id: int
    run_id: int
    job_id: str
    what: str
    batch_id: str
    state: str
    total: int
    pending: int
    succeeded: int
    failed: int
    discarded: int
    cancelled: int
    at: datetime


@dataclass(frozen=True)
class DependencySeen:
    """A workflow job's run read one of its dependencies in ``state`` (``depends_on`` None and
    ``state`` ``error:<class>``: the read failed)."""

    id: int
    run_id: int
    job_id: str
    depends_on: str | None
    state: str
    at: datetime


@dataclass(frozen=True)
class Operation:
    """An operator's retry or discard of a failed job (``action``: retry, discard)."""

    id: int
    job_id: str
    action: str
    asked_at: datetime
    answered_at: datetime | None
    answer: str | None


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def create(url: str) -> None:
    with connect(url) as conn:
        conn.execute(SCHEMA)


# -- written by the jobs ------------------------------------------------------------------------


def start_run(conn: psycopg.Connection[Any], job_id: str, kind: str, key: str | None,
              attempt: int) -> int:  # fmt: skip
    row = conn.execute(
        "INSERT INTO chaos_runs (job_id, kind, key, host, pid, attempt)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        [job_id, kind, key, os.environ.get("PGJOBS_HOSTNAME", "?"), os.getpid(), attempt],
    ).fetchone()
    assert row is not None
    return int(row[0])


def end_run(conn: psycopg.Connection[Any], run_id: int, outcome: str) -> None:
    conn.execute(
        "UPDATE chaos_runs SET ended_at = clock_timestamp(), outcome = %s WHERE id = %s",
        [outcome, run_id],
    )


def step_event(conn: psycopg.Connection[Any], run_id: int, job_id: str, step: str, event: str,
               value: int | None = None) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO chaos_steps (run_id, job_id, step, event, value) VALUES (%s, %s, %s, %s, %s)",
        [run_id, job_id, step, event, value],
    )


def snoozes(conn: psycopg.Connection[Any], job_id: str) -> int:
    """How many runs of the job snoozed (ended with the outcome "snoozed")."""
    row = conn.execute(
        "SELECT count(*) FROM chaos_runs WHERE job_id = %s AND outcome = 'snoozed'", [job_id]
    ).fetchone()
    return int(row[0]) if row else 0


def callback_seen(conn: psycopg.Connection[Any], run_id: int, job_id: str, what: str,
                  batch: Any) -> None:  # fmt: skip
    """``batch``: the :class:`pgjobs.BatchInfo` the callback received."""
    conn.execute(
        "INSERT INTO chaos_callbacks (run_id, job_id, what, batch_id, state, total, pending,"
        " succeeded, failed, discarded, cancelled) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s)",
        [run_id, job_id, what, batch.batch_id, batch.state, batch.total, batch.pending,
         batch.succeeded, batch.failed, batch.discarded, batch.cancelled],
    )  # fmt: skip


def dependency_seen(conn: psycopg.Connection[Any], run_id: int, job_id: str,
                    depends_on: str | None, state: str) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO chaos_dependencies (run_id, job_id, depends_on, state)"
        " VALUES (%s, %s, %s, %s)",
        [run_id, job_id, depends_on, state],
    )


def failed_runs(conn: psycopg.Connection[Any], job_id: str) -> int:
    """How many runs of the job raised (ended with the outcome "raised")."""
    row = conn.execute(
        "SELECT count(*) FROM chaos_runs WHERE job_id = %s AND outcome = 'raised'", [job_id]
    ).fetchone()
    return int(row[0]) if row else 0


# -- written by the driver ----------------------------------------------------------------------


def start_fault(
    conn: psycopg.Connection[Any], kind: str, host: str | None, pids: Sequence[int], detail: str
) -> int:
    row = conn.execute(
        "INSERT INTO chaos_faults (kind, host, pids, detail) VALUES (%s, %s, %s, %s) RETURNING id",
        [kind, host, list(pids), detail],
    ).fetchone()
    assert row is not None
    return int(row[0])


def end_fault(conn: psycopg.Connection[Any], fault_id: int) -> None:
    conn.execute("UPDATE chaos_faults SET ended_at = clock_timestamp() WHERE id = %s", [fault_id])


def start_cancel(conn: psycopg.Connection[Any], job_id: str, kind: str) -> int:
    row = conn.execute(
        "INSERT INTO chaos_cancels (job_id, kind) VALUES (%s, %s) RETURNING id", [job_id, kind]
    ).fetchone()
    assert row is not None
    return int(row[0])


def end_cancel(conn: psycopg.Connection[Any], cancel_id: int, answer: str) -> None:
    conn.execute(
        "UPDATE chaos_cancels SET answered_at = clock_timestamp(), answer = %s WHERE id = %s",
        [answer, cancel_id],
    )


def start_operation(conn: psycopg.Connection[Any], job_id: str, action: str) -> int:
    row = conn.execute(
        "INSERT INTO chaos_operations (job_id, action) VALUES (%s, %s) RETURNING id",
        [job_id, action],
    ).fetchone()
    assert row is not None
    return int(row[0])


def end_operation(conn: psycopg.Connection[Any], operation_id: int, answer: str) -> None:
    conn.execute(
        "UPDATE chaos_operations SET answered_at = clock_timestamp(), answer = %s WHERE id = %s",
        [answer, operation_id],
    )


def open_run_pids(conn: psycopg.Connection[Any]) -> list[int]:
    rows = conn.execute(
        "SELECT DISTINCT pid FROM chaos_runs r WHERE ended_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM chaos_deaths d WHERE d.pid = r.pid)"
    ).fetchall()
    return [int(r[0]) for r in rows]


def record_death(conn: psycopg.Connection[Any], pid: int) -> None:
    conn.execute("INSERT INTO chaos_deaths (pid) VALUES (%s) ON CONFLICT DO NOTHING", [pid])


def now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


# -- read by the checks -------------------------------------------------------------------------


def runs(conn: psycopg.Connection[Any]) -> list[Run]:
    rows = conn.execute(
        "SELECT id, job_id::text, kind, key, host, pid, attempt, started_at, ended_at, outcome"
        " FROM chaos_runs ORDER BY started_at, id"
    ).fetchall()
    return [Run(*row) for row in rows]


def faults(conn: psycopg.Connection[Any]) -> list[Fault]:
    rows = conn.execute(
        "SELECT id, kind, host, pids, started_at, ended_at, detail FROM chaos_faults ORDER BY id"
    ).fetchall()
    return [Fault(r[0], r[1], r[2], tuple(r[3]), r[4], r[5], r[6]) for r in rows]


def deaths(conn: psycopg.Connection[Any]) -> dict[int, datetime]:
    return {int(pid): at for pid, at in conn.execute("SELECT pid, seen_at FROM chaos_deaths")}


def steps(conn: psycopg.Connection[Any]) -> list[StepEvent]:
    rows = conn.execute(
        "SELECT id, run_id, job_id::text, step, event, value, at FROM chaos_steps ORDER BY at, id"
    ).fetchall()
    return [StepEvent(*row) for row in rows]


def cancels(conn: psycopg.Connection[Any]) -> list[Cancel]:
    rows = conn.execute(
        "SELECT id, job_id::text, kind, asked_at, answered_at, answer FROM chaos_cancels"
        " ORDER BY asked_at, id"
    ).fetchall()
    return [Cancel(*row) for row in rows]


def callbacks_seen(conn: psycopg.Connection[Any]) -> list[CallbackSeen]:
    rows = conn.execute(
        "SELECT id, run_id, job_id::text, what, batch_id::text, state, total, pending, succeeded,"
        " failed, discarded, cancelled, at FROM chaos_callbacks ORDER BY at, id"
    ).fetchall()
    return [CallbackSeen(*row) for row in rows]


def dependencies_seen(conn: psycopg.Connection[Any]) -> list[DependencySeen]:
    rows = conn.execute(
        "SELECT id, run_id, job_id::text, depends_on::text, state, at FROM chaos_dependencies"
        " ORDER BY at, id"
    ).fetchall()
    return [DependencySeen(*row) for row in rows]


def operations(conn: psycopg.Connection[Any]) -> list[Operation]:
    rows = conn.execute(
        "SELECT id, job_id::text, action, asked_at, answered_at, answer FROM chaos_operations"
        " ORDER BY asked_at, id"
    ).fetchall()
    return [Operation(*row) for row in rows]
