"""The chaos ledger: what really ran, when, and which faults were injected.

It lives in its own database on the test server, never on the PostgreSQL the chaos run faults,
so it records runs while pgjobs cannot reach its database (an outage, a partition).  Every time
in it is ``clock_timestamp()`` of that one server: all hosts share one clock.

- ``chaos_runs``: one row per execution of a job's ``perform`` (written by the jobs, autocommit).
  ``ended_at``/``outcome`` stay NULL when the process died under it.
- ``chaos_faults``: one row per injected fault, with the pids and host it hit and its interval.
- ``chaos_deaths``: when the watcher saw a process that had a run open disappear.
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
