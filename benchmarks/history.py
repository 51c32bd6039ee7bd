"""History (issue 21): 10 M finished jobs — retention (``clear-finished``) and the dashboard.

``python -m benchmarks run --only history [--history-jobs 10000000] [--history-drain-jobs 50000]
[--history-page-repeat 5] [--repeat 3] --no-limits --name <date>-history``

What it measures, on its own database ``bench_history`` (created, dropped at the end):

1. **Fill**: ``--history-jobs`` finished jobs written straight into ``pgjobs_jobs`` with
   ``INSERT ... SELECT generate_series`` (two connections, ids reserved from the identity), the
   secondary indexes built afterwards (``CREATE INDEX``, as a restore would), then ``VACUUM
   (ANALYZE)`` (what autovacuum would do later).  Realistic rows: 4 queues, 6 classes, ~100-byte
   arguments, ``finished_at`` spread evenly over one day that ended an hour before the default
   retention cutoff (``now - 1 day``), ``created_at`` 2 s earlier, ids in ``created_at`` order;
   1 % of the jobs succeeded on a second attempt (``executions`` 2 and one row in
   ``pgjobs_job_errors``: the rows ``clear-finished`` deletes with them), 0.1 % discarded, 0.01 %
   failed for good (a ``pgjobs_failed_executions`` row and 3 error rows: never cleared), one
   ``pgjobs_recurring_executions`` row per 2,000 jobs (5 recurring tasks).  Fill time, and the
   heap and index sizes of every table.
2. **Drains, history or not**: ``--history-drain-jobs`` no-op jobs enqueued in bulk, then drained by
   ``pgjobs start`` with the drain scenario's largest configuration (200 threads x 2 processes,
   durable claims, ``--skip-recurring``: the scheduler would start clearing the history itself),
   clock from the first claim to the empty queue, as ``benchmarks.runner``'s drain; CPU time
   of the workers and their backends per job.  ``empty``: a fresh database (the schema
   only); ``history``: ``bench_history`` with the 10 M rows.  ``--repeat`` runs each, in turn.
3. **Dashboard**: every page that lists or counts jobs, in process (Starlette's TestClient on
   ``pgjobs.web.create_app``: server time, no network), one warm-up request then
   ``--history-page-repeat`` timed ones; every SQL statement of a page is timed (a wrapper around
   ``psycopg.Connection.execute``) and, for a page over 1 s, ``EXPLAIN (ANALYZE, BUFFERS)`` of
   its slowest statement.  Measured with the history, after ``clear-finished`` (before any
   vacuum: a server without autovacuum, or before it gets to the table) and after ``VACUUM``.
4. **clear-finished alone**: ``pgjobs.operations.retention.clear_finished`` (what ``pgjobs
   clear-finished`` runs, default ``--older-than 1d`` and ``--batch-size 1000``) in a child
   process, nothing else running: rows/s, total time, CPU of the process and of its backend,
   WAL (``pg_current_wal_lsn`` difference: server-wide, so other sessions' writes count too)
   and ``EXPLAIN (ANALYZE, BUFFERS, WAL)`` of one batch (rolled back).  Then ``VACUUM`` of the
   tables it left dead rows in (unthrottled, timed).
5. **Drains during clear-finished**: the database is filled again; one ``clear_finished`` child
   runs through the phase, told by a control file to ``pause`` (between two batches: no
   statement and no transaction open), to run at ``full`` speed, or ``paced`` at the issue's bar
   (the history in one hour: ``--history-jobs`` / 3600 rows/s, a sleep after each batch in its
   progress callback).  A drain in each mode, ``--repeat`` rounds, the order rotated every round;
   the clear's mode is switched when the first job is claimed and back to ``pause`` when the queue
   is empty, so it runs exactly over the timed drain.  Reported: jobs/s and CPU/job of the
   drain, the rows the clear deleted meanwhile, and the slowdown against ``pause``.
6. **Drains during VACUUM**: the clear then finishes alone; a ``VACUUM`` of ``pgjobs_jobs`` with
   autovacuum's default throttling (``vacuum_cost_delay`` 2 ms, ``vacuum_cost_limit`` 200) is
   started — what autovacuum would run after the clear — and drains run while it does (its
   progress from ``pg_stat_progress_vacuum``); it is cancelled after them.

``autovacuum`` is off on the development server: the scenario runs the ``VACUUM``s a production
server's autovacuum would (after the fill, after the clear) itself, and says so in the report.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql as pgsql

from benchmarks.common import (
    ROOT,
    WARMUP,
    System,
    admin_connect,
    stop,
    subprocess_env,
    with_database,
)
from benchmarks.footprint import cpu_delta, cpu_seconds
from benchmarks.runner import DONE_POLL, _count, wait_for

if TYPE_CHECKING:
    from benchmarks.runner import Runner

DB_NAME = "bench_history"
SLOW_PAGE_MS = 1000.0
EXPLAIN_PAGE_MS = 250.0  # pages slower than this get their slowest statement EXPLAINed
CLEAR_APP = "bench-history-clear"
QUEUES = ("default", "mailers", "reports", "webhooks")
CLASSES = (
    "app.jobs:SendEmail",
    "app.jobs:SyncAccount",
    "app.jobs:BuildReport",
    "app.jobs:DeliverWebhook",
    "app.jobs:ChargeCard",
    "app.jobs:ResizeImage",
)
FILL_CHUNK = 1_000_000  # rows per INSERT statement
FILL_CONNECTIONS = 2
# The history's day ends this long before the default cutoff (now - 1 day): all of it is due.
DAY_ENDS = timedelta(hours=25)
HISTORY_TABLES = (
    "pgjobs_jobs",
    "pgjobs_job_errors",
    "pgjobs_failed_executions",
    "pgjobs_recurring_executions",
)
HOT_TABLES = (
    "pgjobs_ready_executions",
    "pgjobs_claimed_executions",
    "pgjobs_processes",
    "pgjobs_semaphores",
)
# Secondary indexes of pgjobs_jobs, built after the rows (the primary key takes them in order).
DEFERRED_INDEXES = ("ix_pgjobs_jobs_job_id", "ix_pgjobs_jobs_class_name_id")

# Job i (1-based, in created_at order): failed for good when i % 10000 = 13, finished otherwise
# (a second attempt when i % 100 = 7, discarded when i % 1000 = 3).
FILL_JOBS = """
INSERT INTO pgjobs_jobs (id, job_id, queue_name, class_name, arguments, priority, executions,
                         finished_at, discarded_at, created_at)
SELECT %(base)s + i, gen_random_uuid(),
       (%(queues)s::text[])[1 + i %% 4],
       (%(classes)s::text[])[1 + i %% 6],
       jsonb_build_object('args', jsonb_build_array(i, 'user-' || i || '@example.com'),
                          'kwargs', jsonb_build_object('order', 'ord_' || left(md5(i::text), 12),
                                                       'locale', 'en')),
       0,
       CASE WHEN i %% 10000 = 13 THEN 3 WHEN i %% 100 = 7 THEN 2 ELSE 1 END,
       CASE WHEN i %% 10000 <> 13 THEN t + interval '2 seconds' END,
       CASE WHEN i %% 10000 <> 13 AND i %% 1000 = 3 THEN t + interval '2 seconds' END,
       t
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i,
     LATERAL (SELECT %(day_start)s::timestamptz
                     + make_interval(secs => 86400.0 * i / %(total)s) AS t) AS at
"""
BACKTRACE = '  File "app/jobs.py", line 42, in perform\\n    client.post(url, json=payload)\\n' * 6
FILL_ERRORS = f"""
INSERT INTO pgjobs_job_errors (job_id, attempt, exception_class, message, backtrace, hostname,
                               pid, created_at)
SELECT j.id, a, 'app.http.TimeoutError', 'timed out after 30 s (job ' || j.id || ')',
       E'{BACKTRACE}', 'worker-host-1', 4242, j.created_at + make_interval(secs => a)
FROM pgjobs_jobs j, generate_series(1, j.executions - 1) AS a
WHERE j.executions > 1
"""
FILL_FAILED = f"""
INSERT INTO pgjobs_failed_executions (job_id, exception_class, message, backtrace, attempt,
                                      hostname, pid, created_at)
SELECT id, 'app.http.TimeoutError', 'timed out after 30 s (job ' || id || ')', E'{BACKTRACE}',
       3, 'worker-host-1', 4242, created_at + interval '3 seconds'
FROM pgjobs_jobs WHERE finished_at IS NULL
"""
FILL_RECURRING = """
WITH tasks AS (
    INSERT INTO pgjobs_recurring_tasks (key, schedule, class_name, queue_name)
    SELECT 'task_' || n, 'every hour', %(class_name)s, 'default' FROM generate_series(1, 5) n
    RETURNING key
)
INSERT INTO pgjobs_recurring_executions (task_key, run_at, job_id)
SELECT 'task_' || (1 + (id / 2000) %% 5), created_at, id
FROM pgjobs_jobs WHERE id %% 2000 = 0
"""
SIZES = """
SELECT c.relname, c.reltuples::bigint, pg_relation_size(c.oid), pg_indexes_size(c.oid),
       pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'pgjobs%%'
ORDER BY pg_total_relation_size(c.oid) DESC
"""
INDEX_SIZES = """
SELECT indexrelid::regclass::text, pg_relation_size(indexrelid)
FROM pg_index WHERE indrelid = 'pgjobs_jobs'::regclass ORDER BY 1
"""
VACUUM_PROGRESS = """
SELECT phase, heap_blks_total, heap_blks_scanned, heap_blks_vacuumed, index_vacuum_count
FROM pg_stat_progress_vacuum WHERE pid = %(pid)s
"""

MODES = ("pause", "full", "paced")


# -- the scenario ---------------------------------------------------------------------------


def run(runner: Runner, systems: Sequence[System], templates: dict[str, str]) -> dict[str, Any]:
    system = next((s for s in systems if s.name == "pgjobs"), None)
    if system is None:
        runner.say("  history: pgjobs only, skipped")
        return {}
    return {"pgjobs": History(runner, system, templates["pgjobs"]).run()}


@dataclass
class History:
    runner: Runner
    system: System
    template: str
    out: dict[str, Any] = field(default_factory=dict)

    @property
    def o(self) -> Any:
        return self.runner.options

    def say(self, text: str) -> None:
        self.runner.say(text)

    @property
    def url(self) -> str:
        return with_database(self.o.url, DB_NAME)

    def run(self) -> dict[str, Any]:
        o = self.o
        setup = self.system.drain_setups()[-1]
        self.setup = setup
        self.out = {
            "rows": o.history_jobs,
            "drain_jobs": o.history_drain_jobs,
            "page_repeat": o.history_page_repeat,
            "setup": setup.label,
            "paced_rate": o.history_jobs / 3600.0,
            "autovacuum": _show(self.o.url, "autovacuum"),
            "steps": [],
        }
        previous = os.environ.get("BENCH_PGJOBS_SKIP_RECURRING")
        os.environ["BENCH_PGJOBS_SKIP_RECURRING"] = "1"  # no scheduler: it would clear the history
        try:
            self._phase_one()
            self._phase_two()
        finally:
            if previous is None:
                os.environ.pop("BENCH_PGJOBS_SKIP_RECURRING", None)
            else:
                os.environ["BENCH_PGJOBS_SKIP_RECURRING"] = previous
            self.runner.dbs.drop(DB_NAME)
        return self.out

    def step(self, name: str, began: float) -> None:
        self.out["steps"].append({"step": name, "seconds": round(time.perf_counter() - began, 1)})

    # -- phase one: fill, drains with and without the history, pages, clear alone, vacuum --

    def _phase_one(self) -> None:
        o = self.o
        began = time.perf_counter()
        self.out["fill"] = [self._new_database()]
        self.say(
            f"  history: filled {o.history_jobs:,} jobs in {self.out['fill'][0]['seconds']:.0f} s"
        )
        self.out["sizes_filled"] = sizes(self.url)
        self.step("fill 1", began)

        began = time.perf_counter()
        drains: dict[str, list[dict[str, Any]]] = {"empty": [], "history": []}
        for r in range(o.repeat):
            for case in ("empty", "history") if r % 2 == 0 else ("history", "empty"):
                if case == "empty":
                    with self.runner.dbs.fresh("history_empty", self.template) as url:
                        result = self.drain(url)
                else:
                    result = self.drain(self.url)
                drains[case].append(result)
                self.say(f"  history drain [{case}] #{r + 1}: {_drain_text(result)}")
        self.out["drains_history"] = drains
        self.step("drains: empty vs history", began)

        began = time.perf_counter()
        self.out["pages_history"] = self.pages("history")
        self.step("pages with the history", began)

        began = time.perf_counter()
        self.out["clear_batch_plan"] = clear_batch_plan(self.url)
        self.out["clear_alone"] = self.clear_alone()
        c = self.out["clear_alone"]
        self.say(
            f"  history clear-finished alone: {c['deleted']:,} jobs in {c['seconds']:.1f} s "
            f"({c['rate']:,.0f} rows/s), WAL {c['wal_bytes'] / 2**20:,.0f} MiB"
        )
        self.step("clear-finished alone", began)

        began = time.perf_counter()
        self.out["pages_cleared"] = self.pages("cleared, not vacuumed")
        self.step("pages after the clear", began)

        began = time.perf_counter()
        self.out["vacuum_after_clear"] = vacuum(self.url, HISTORY_TABLES)
        self.say(f"  history VACUUM after the clear: {self.out['vacuum_after_clear']}")
        self.out["sizes_vacuumed"] = sizes(self.url)
        self.step("vacuum after the clear", began)

        began = time.perf_counter()
        self.out["pages_vacuumed"] = self.pages("cleared, vacuumed")
        self.step("pages after vacuum", began)

    # -- phase two: fill again, drains during the clear, then during a throttled VACUUM --

    def _phase_two(self) -> None:
        o = self.o
        began = time.perf_counter()
        self.out["fill"].append(self._new_database())
        self.say(
            f"  history: filled {o.history_jobs:,} jobs again in "
            f"{self.out['fill'][1]['seconds']:.0f} s"
        )
        self.step("fill 2", began)

        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
            clear = Clearer(self.url, Path(tmp), o.history_jobs / 3600.0)
            clear.start("pause")
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            try:
                for r in range(o.repeat):
                    order = MODES[r % 3 :] + MODES[: r % 3]
                    for mode in order:
                        result = self.drain(self.url, clear=clear, mode=mode)
                        runs[mode].append(result)
                        self.say(f"  history drain [clear {mode}] #{r + 1}: {_drain_text(result)}")
                self.out["drains_clear"] = runs
                self.step("drains during clear-finished", began)
                began = time.perf_counter()
                done_before = clear.deleted()
                clear.set("full")
                whole = clear.wait()
                seconds = time.perf_counter() - began
                rest = {
                    "deleted": whole["deleted"] - done_before,
                    "seconds": seconds,
                    "rate": (whole["deleted"] - done_before) / seconds,
                    "whole_run": whole,
                }
                self.out["clear_rest"] = rest
                self.say(
                    f"  history clear-finished, the rest alone: {rest['deleted']:,} rows in "
                    f"{seconds:.1f} s ({rest['rate']:,.0f} rows/s)"
                )
                self.step("clear-finished, the rest", began)
            finally:
                clear.kill()
        began = time.perf_counter()
        self.out["drains_vacuum"] = self.drains_during_vacuum()
        self.step("drains during a throttled VACUUM", began)

    # -- pieces -------------------------------------------------------------------------

    def _new_database(self) -> dict[str, Any]:
        dbs = self.runner.dbs
        dbs.drop(DB_NAME)
        with admin_connect(self.o.url) as conn:
            conn.execute(
                pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    pgsql.Identifier(DB_NAME), pgsql.Identifier(self.template)
                )
            )
        dbs.created.append(DB_NAME)
        return fill(self.url, self.o.history_jobs, self.say)

    def drain(self, url: str, clear: Clearer | None = None, mode: str = "pause") -> dict[str, Any]:
        """One drain of ``history_drain_jobs`` no-op jobs on ``url`` (see the module doc)."""
        system, n = self.system, self.o.history_drain_jobs
        with (
            tempfile.TemporaryDirectory(prefix="bench-") as tmp,
            psycopg.connect(url, autocommit=True, application_name="bench-monitor") as mon,
        ):
            for table in HOT_TABLES:  # as autovacuum would, between runs (they are tiny)
                mon.execute(pgsql.SQL("VACUUM {}").format(pgsql.Identifier(table)))
            first = _count(mon, "SELECT coalesce(max(id), 0) FROM pgjobs_jobs") + 1
            system.enqueue_bulk(url, n, self.o.batch)
            workdir = Path(tmp)
            procs = system.start(url, self.setup, workdir, subprocess_env(url))
            try:
                started = wait_for(mon, system.started_sql, procs, workdir, 0.002, 120.0)
                if clear is not None:
                    clear.set(mode)
                    cleared0 = clear.deleted()
                cpu0 = cpu_seconds(system, procs, mon)
                stopped = wait_for(mon, system.done_sql, procs, workdir, DONE_POLL, 600.0)
                cpu1 = cpu_seconds(system, procs, mon)
                if clear is not None:
                    clear.set("pause")
                    cleared = clear.deleted() - cleared0
                    clear_alive = clear.alive()
            finally:
                stop(procs)
            finished = _count(
                mon,
                f"SELECT count(*) FROM pgjobs_jobs WHERE id >= {first} AND finished_at IS NOT NULL",
            )
        self.runner.note_load()
        used = cpu_delta(cpu0, cpu1)
        used.pop(f"db:{CLEAR_APP}", None)
        used.pop("db:bench-monitor", None)
        seconds = stopped - started
        total = n + WARMUP
        result: dict[str, Any] = {
            "rate": total / seconds,
            "seconds": seconds,
            "jobs": total,
            "finished": finished,
            "cpu_us_per_job": sum(used.values()) / total * 1e6,
            "cpu_by_kind_us": {k: round(v / total * 1e6, 1) for k, v in sorted(used.items())},
            "load": round(os.getloadavg()[0], 2),
        }
        if clear is not None:
            result["mode"] = mode
            result["cleared"] = cleared
            result["clear_rate"] = cleared / seconds
            result["clear_alive"] = clear_alive
        return result

    def pages(self, label: str) -> dict[str, Any]:
        found = time_pages(self.url, self.o.history_page_repeat)
        slow = [p for p in found["pages"] if p["median_ms"] > SLOW_PAGE_MS]
        worst = max(found["pages"], key=lambda p: p["median_ms"])
        self.say(
            f"  history pages [{label}]: {len(found['pages'])} pages, slowest {worst['label']} "
            f"{worst['median_ms']:.0f} ms; over 1 s: "
            + (", ".join(p["label"] for p in slow) or "none")
        )
        return {"label": label, **found}

    def clear_alone(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
            clear = Clearer(self.url, Path(tmp), self.o.history_jobs / 3600.0)
            try:
                with psycopg.connect(self.o.url, autocommit=True) as conn:
                    lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
                    clear.start("full")
                    result = clear.wait()
                    wal = conn.execute(
                        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn0,)
                    ).fetchone()[0]  # type: ignore[index]
            finally:
                clear.kill()
        result["wal_bytes"] = int(wal)
        result["wal_bytes_per_row"] = int(wal) / max(result["deleted"], 1)
        return result

    def drains_during_vacuum(self) -> dict[str, Any]:
        """Drains while a VACUUM of pgjobs_jobs throttled like autovacuum runs (then cancelled)."""
        out: dict[str, Any] = {"settings": "vacuum_cost_delay = 2ms, vacuum_cost_limit = 200"}
        holder: dict[str, Any] = {}
        ready = threading.Event()

        def work() -> None:
            began = time.perf_counter()
            try:
                with psycopg.connect(
                    self.url, autocommit=True, application_name="bench-history-vacuum"
                ) as conn:
                    holder["pid"] = conn.info.backend_pid
                    conn.execute("SET vacuum_cost_delay = '2ms'")
                    conn.execute("SET vacuum_cost_limit = 200")
                    ready.set()
                    conn.execute("VACUUM pgjobs_jobs")
                holder["finished"] = True
            except psycopg.errors.QueryCanceled:
                holder["finished"] = False
            except psycopg.Error as exc:  # pragma: no cover - reported, not raised
                holder["error"] = str(exc)
            finally:
                holder["seconds"] = time.perf_counter() - began
                ready.set()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        ready.wait(30)
        time.sleep(2.0)
        runs = []
        progress = []
        with psycopg.connect(self.o.url, autocommit=True) as mon:
            for r in range(self.o.repeat):
                if not thread.is_alive():
                    break
                result = self.drain(self.url)
                result["vacuum"] = _vacuum_progress(mon, holder.get("pid"))
                runs.append(result)
                progress.append(result["vacuum"])
                self.say(
                    f"  history drain [during VACUUM] #{r + 1}: {_drain_text(result)}; "
                    f"vacuum {result['vacuum']}"
                )
            still = thread.is_alive()
            out["progress_at_end"] = _vacuum_progress(mon, holder.get("pid"))
            if still and holder.get("pid"):
                mon.execute("SELECT pg_cancel_backend(%s)", (holder["pid"],))
        thread.join(60)
        out.update(
            runs=runs,
            vacuum_seconds=holder.get("seconds"),
            vacuum_finished=holder.get("finished"),
            vacuum_error=holder.get("error"),
        )
        return out


# -- filling ----------------------------------------------------------------------------------


def fill(url: str, total: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Write ``total`` jobs of finished history (see the module doc); timings in seconds."""
    timings: dict[str, float] = {}
    began = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        defs: dict[str, str] = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'pgjobs_jobs'"
            ).fetchall()
        )
        for name in DEFERRED_INDEXES:
            conn.execute(pgsql.SQL("DROP INDEX {}").format(pgsql.Identifier(name)))
        row = conn.execute(
            "SELECT setval(s, nextval(s) + %(n)s - 1) "
            "FROM pg_get_serial_sequence('pgjobs_jobs', 'id') s",
            {"n": total},
        ).fetchone()
        base = int(row[0]) - total if row else 0
        day_start = conn.execute(
            "SELECT now() - %(ends)s - interval '1 day'", {"ends": DAY_ENDS}
        ).fetchone()[0]  # type: ignore[index]
    chunks = [(f, min(total, f + FILL_CHUNK - 1)) for f in range(1, total + 1, FILL_CHUNK)]
    errors: list[BaseException] = []

    def insert(mine: list[tuple[int, int]]) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for first, last in mine:
                    conn.execute(
                        FILL_JOBS,
                        {
                            "base": base,
                            "first": first,
                            "last": last,
                            "total": total,
                            "queues": list(QUEUES),
                            "classes": list(CLASSES),
                            "day_start": day_start,
                        },
                    )
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    t = time.perf_counter()
    threads = [
        threading.Thread(target=insert, args=(chunks[k::FILL_CONNECTIONS],))
        for k in range(FILL_CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    timings["insert_jobs"] = time.perf_counter() - t
    with psycopg.connect(url, autocommit=True) as conn:
        t = time.perf_counter()
        conn.execute(FILL_ERRORS)
        conn.execute(FILL_FAILED)
        conn.execute(FILL_RECURRING, {"class_name": "benchmarks.jobs:noop"})
        timings["insert_others"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '256MB'")
        for name in DEFERRED_INDEXES:
            conn.execute(defs[name])
        timings["create_indexes"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        timings["vacuum_analyze"] = time.perf_counter() - t
        counts = {
            "finished": _count(
                conn, "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL"
            ),
            "failed": _count(conn, "SELECT count(*) FROM pgjobs_failed_executions"),
            "job_errors": _count(conn, "SELECT count(*) FROM pgjobs_job_errors"),
            "recurring_executions": _count(
                conn, "SELECT count(*) FROM pgjobs_recurring_executions"
            ),
        }
        span = conn.execute(
            "SELECT min(finished_at), max(finished_at), now() - interval '1 day' FROM pgjobs_jobs"
        ).fetchone()
    seconds = time.perf_counter() - began
    say(
        "    fill: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"; {counts['finished']:,} finished"
    )
    return {
        "seconds": seconds,
        "rows_per_s": total / seconds,
        "timings": timings,
        "counts": counts,
        "finished_at_from": str(span[0]) if span else None,
        "finished_at_to": str(span[1]) if span else None,
        "cutoff_at_fill": str(span[2]) if span else None,
    }


def sizes(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            {"table": t, "rows_estimate": n, "heap": h, "indexes": i, "total": tot}
            for t, n, h, i, tot in conn.execute(SIZES).fetchall()
            if tot > 64 * 1024
        ]
        indexes: dict[str, int] = dict(conn.execute(INDEX_SIZES).fetchall())
        db = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    return {"tables": tables, "jobs_indexes": indexes, "database": db}


def vacuum(url: str, tables: Sequence[str], *, analyze: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            t = time.perf_counter()
            what = "VACUUM (ANALYZE) {}" if analyze else "VACUUM {}"
            conn.execute(pgsql.SQL(what).format(pgsql.Identifier(table)))
            out[table] = round(time.perf_counter() - t, 2)
    return out


def _vacuum_progress(mon: psycopg.Connection[Any], pid: int | None) -> dict[str, Any] | None:
    if pid is None:
        return None
    row = mon.execute(VACUUM_PROGRESS, {"pid": pid}).fetchone()
    if row is None:
        return None
    phase, total, scanned, vacuumed, passes = row
    return {
        "phase": phase,
        "heap_blks_total": total,
        "heap_blks_scanned": scanned,
        "heap_blks_vacuumed": vacuumed,
        "index_vacuum_count": passes,
    }


def _show(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return str(conn.execute(pgsql.SQL("SHOW {}").format(pgsql.Identifier(name))).fetchone()[0])  # type: ignore[index]


def _drain_text(r: dict[str, Any]) -> str:
    text = f"{r['rate']:,.0f} jobs/s, {r['cpu_us_per_job']:.0f} µs CPU/job"
    if "cleared" in r:
        text += f"; clear deleted {r['cleared']:,} rows ({r['clear_rate']:,.0f}/s)"
    return text


# -- clear-finished in a child process --------------------------------------------------------


class Clearer:
    """``clear_finished`` in a child process (``python -m benchmarks.history clear``), steered
    by a control file (``pause``, ``full``, ``paced``) and reporting every batch to a log."""

    def __init__(self, url: str, workdir: Path, paced_rate: float) -> None:
        self.url = url
        self.control = workdir / "control"
        self.log = workdir / "progress.log"
        self.result = workdir / "result.json"
        self.paced_rate = paced_rate
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, mode: str) -> None:
        self.set(mode)
        self.log.write_text("")
        args = [
            sys.executable,
            "-m",
            "benchmarks.history",
            "clear",
            self.url,
            str(self.control),
            str(self.log),
            str(self.result),
            str(self.paced_rate),
        ]
        out = open(self.log.with_suffix(".out"), "ab")  # noqa: SIM115 - the child holds it
        try:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, env=subprocess_env(self.url), stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            out.close()

    def set(self, mode: str) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(mode)
        tmp.replace(self.control)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def deleted(self) -> int:
        """Rows deleted so far (the last line of the progress log)."""
        with suppress(OSError, ValueError, IndexError):
            lines = self.log.read_text().splitlines()
            if lines:
                return int(lines[-1].split()[1])
        return 0

    def wait(self, timeout: float = 7200.0) -> dict[str, Any]:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self.proc.returncode != 0:
            out = self.log.with_suffix(".out").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"clear-finished child exited with {self.proc.returncode}:\n{out}")
        result: dict[str, Any] = json.loads(self.result.read_text())
        return result

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _proc_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` (utime + stime from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def clear_child(url: str, control: Path, log: Path, result_path: Path, paced_rate: float) -> int:
    """The child: run ``clear_finished`` once, as ``pgjobs clear-finished`` does (defaults)."""
    from pgjobs.db.database import Database
    from pgjobs.operations.retention import clear_finished

    database = Database(url, pool_size=1, application_name=CLEAR_APP)
    with database.connection() as conn:
        backend = int(conn.info.backend_pid)
    out = open(log, "a", buffering=1)  # noqa: SIM115 - closed at the end
    state: dict[str, Any] = {"mode": "", "mode_at": 0.0, "mode_count": 0, "paused": 0.0}
    state["batches"] = 0

    def read_mode() -> str:
        with suppress(OSError):
            return control.read_text().strip()
        return "full"

    def progress(count: int) -> None:
        state["batches"] += 1
        now = time.perf_counter()
        out.write(f"{now:.4f} {count}\n")
        mode = read_mode()
        if mode != state["mode"]:
            state.update(mode=mode, mode_at=now, mode_count=count)
        while mode == "pause":
            time.sleep(0.005)
            mode = read_mode()
            if mode != "pause":
                state["paused"] += time.perf_counter() - now
                state.update(mode=mode, mode_at=time.perf_counter(), mode_count=count)
        if mode == "paced":
            due = state["mode_at"] + (count - state["mode_count"]) / paced_rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    progress_start = read_mode()
    while progress_start == "pause":  # wait before the first batch too
        time.sleep(0.005)
        progress_start = read_mode()
    cpu0, bcpu0 = _proc_cpu(os.getpid()), _proc_cpu(backend)
    began = time.perf_counter()
    deleted = clear_finished(database=database, progress=progress)
    seconds = time.perf_counter() - began
    cpu, bcpu = _proc_cpu(os.getpid()) - cpu0, _proc_cpu(backend) - bcpu0
    out.write(f"{time.perf_counter():.4f} {deleted}\n")
    out.close()
    database.close()
    result = {
        "deleted": deleted,
        "seconds": seconds,
        "paused_seconds": state["paused"],
        "rate": deleted / max(seconds - state["paused"], 1e-9),
        "batches": state["batches"],
        "client_cpu_s": cpu,
        "backend_cpu_s": bcpu,
        "cores": (cpu + bcpu) / max(seconds - state["paused"], 1e-9),
        "cpu_us_per_row": (cpu + bcpu) / max(deleted, 1) * 1e6,
        "command": "pgjobs.operations.retention.clear_finished(database=...) (the defaults of "
        "`pgjobs clear-finished`: --older-than 1d, --batch-size 1000)",
    }
    result_path.write_text(json.dumps(result))
    return 0


# -- the EXPLAIN of one clear batch ------------------------------------------------------------


def clear_batch_plan(url: str) -> str:
    from pgjobs.db.names import sql
    from pgjobs.store import finished

    now = datetime.now(UTC)
    params = {
        "now": now,
        "cutoff": now - timedelta(days=1),
        "class_name": None,
        "limit": 1000,
        "after": 0,
    }
    with psycopg.connect(url) as conn:
        try:
            rows = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, WAL) " + sql(finished.CLEAR_RANGE, None), params
            ).fetchall()
        finally:
            conn.rollback()
    return "\n".join(str(r[0]) for r in rows)


# -- dashboard pages ---------------------------------------------------------------------------


@contextmanager
def traced() -> Iterator[list[tuple[float, Any, Any]]]:
    """Record (ms, query, params) of every ``psycopg.Connection.execute`` meanwhile."""
    calls: list[tuple[float, Any, Any]] = []
    original = psycopg.Connection.execute

    def execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(self, query, params, **kwargs)
        finally:
            calls.append(((time.perf_counter() - t) * 1000, query, params))

    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        psycopg.Connection.execute = original  # type: ignore[method-assign]


def page_targets(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    failed = conn.execute(
        "SELECT j.job_id FROM pgjobs_failed_executions f JOIN pgjobs_jobs j ON j.id = f.job_id "
        "ORDER BY f.created_at DESC LIMIT 1"
    ).fetchone()
    bounds = conn.execute("SELECT min(id), max(id) FROM pgjobs_jobs").fetchone()
    lo, hi = (int(bounds[0] or 0), int(bounds[1] or 0)) if bounds else (0, 0)
    middle = (lo + hi) // 2
    finished = conn.execute(
        "SELECT job_id FROM pgjobs_jobs WHERE id >= %s AND finished_at IS NOT NULL "
        "ORDER BY id LIMIT 1",
        (middle,),
    ).fetchone()
    out = [
        ("overview", "/"),
        ("queues", "/queues"),
        ("ready", "/jobs/ready"),
        ("scheduled", "/jobs/scheduled"),
        ("in progress", "/jobs/in_progress"),
        ("blocked", "/jobs/blocked"),
        ("failed", "/jobs/failed"),
        ("failed, class + error filter", f"/jobs/failed?class={CLASSES[1]}&error=TimeoutError"),
        ("finished", "/jobs/finished"),
        ("finished, a page in the middle", f"/jobs/finished?before={middle}"),
        ("finished, class filter", f"/jobs/finished?class={CLASSES[2]}"),
        ("finished, class filter, middle", f"/jobs/finished?class={CLASSES[2]}&before={middle}"),
        ("finished, queue filter", "/jobs/finished?queue=reports"),
        ("finished, text search (no match)", "/jobs/finished?q=nobody@nowhere"),
        ("processes", "/processes"),
        ("recurring", "/recurring"),
        ("metrics", "/metrics"),
    ]
    if finished:
        out.append(("job detail (finished)", f"/job/{finished[0]}"))
    if failed:
        out.append(("job detail (failed)", f"/job/{failed[0]}"))
    return out


def time_pages(url: str, repeat: int) -> dict[str, Any]:
    import base64

    from starlette.testclient import TestClient

    from pgjobs.config.queue import Config
    from pgjobs.db.database import Database
    from pgjobs.web import create_app

    auth = {"Authorization": "Basic " + base64.b64encode(b"bench:bench").decode()}
    database = Database(url, application_name="pgjobs-web-bench")
    app = create_app(database, username="bench", password="bench", config=Config())
    results = []
    try:
        with TestClient(app, headers=auth, follow_redirects=False) as client:
            with database.connection() as conn:
                targets = page_targets(conn)
            for label, path in targets:
                app.state.dashboard.metrics = None  # /metrics caches its snapshot for 5 s
                first_t = time.perf_counter()
                client.get(path)  # warm: plans, pool, templates
                first = (time.perf_counter() - first_t) * 1000
                samples, statements = [], []
                for _ in range(repeat):
                    app.state.dashboard.metrics = None
                    with traced() as calls:
                        t = time.perf_counter()
                        response = client.get(path)
                        samples.append((time.perf_counter() - t) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                    statements.append(calls)
                median = statistics.median(samples)
                # the slowest statement of the median request
                k = sorted(range(len(samples)), key=lambda i: samples[i])[len(samples) // 2]
                calls = statements[k]
                slowest = max(calls, key=lambda c: c[0]) if calls else None
                entry: dict[str, Any] = {
                    "label": label,
                    "path": path,
                    "first_ms": first,
                    "median_ms": median,
                    "min_ms": min(samples),
                    "max_ms": max(samples),
                    "statements": len(calls),
                    "db_ms": sum(c[0] for c in calls),
                    "slowest_statement_ms": slowest[0] if slowest else None,
                    "slowest_statement": _squash(slowest[1]) if slowest else None,
                }
                if median > EXPLAIN_PAGE_MS and slowest is not None:
                    entry["explain"] = _explain(database, slowest[1], slowest[2])
                results.append(entry)
    finally:
        database.close()
    return {"pages": results}


def _squash(query: Any) -> str:
    text = query if isinstance(query, str) else str(query)
    return " ".join(text.split())[:600]


def _explain(database: Any, query: Any, params: Any) -> str:
    text = query if isinstance(query, str) else str(query)
    with database.connection() as conn:
        try:
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + text, params).fetchall()
        except psycopg.Error as exc:
            return f"(EXPLAIN failed: {exc})"
    return "\n".join(str(r[0]) for r in rows)


# -- the report --------------------------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "\u2013"
    text = fmt.format(_med(values))
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}\u2013{fmt.format(max(values))})"
    return text


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def render(results: dict[str, Any]) -> list[str]:
    """The Markdown section of the history scenario (empty when it did not run)."""
    data = results["systems"].get("pgjobs", {}).get("history")
    if not data:
        return []
    n = data["rows"]
    out = ["", f"## {n:,} jobs of history (issue 21)", ""]
    out += [
        f"`benchmarks/history.py`. Server `autovacuum = {data['autovacuum']}`: the scenario "
        "ran the VACUUMs autovacuum would (after each fill, after the clear). Drains: "
        f"{data['drain_jobs']:,} no-op jobs, `pgjobs start` [{data['setup']}] with "
        "`--skip-recurring`, clock from the first claim to the empty queue; median of the runs "
        "(min\u2013max).",
        "",
    ]
    fills = data.get("fill", [])
    if fills:
        out += ["### Fill", ""]
        rows = []
        for k, f in enumerate(fills):
            t = f["timings"]
            rows.append(
                [
                    str(k + 1),
                    f"{f['seconds']:.0f} s",
                    f"{f['rows_per_s']:,.0f}",
                    f"{t['insert_jobs']:.0f} s",
                    f"{t['insert_others']:.0f} s",
                    f"{t['create_indexes']:.0f} s",
                    f"{t['vacuum_analyze']:.0f} s",
                ]
            )
        out += _table(
            [
                "fill",
                "total",
                "rows/s",
                "INSERT jobs",
                "other tables",
                "CREATE INDEX",
                "VACUUM ANALYZE",
            ],
            rows,
        )
        c = fills[0]["counts"]
        out += [
            "",
            f"Rows: {c['finished']:,} finished jobs, {c['failed']:,} failed, {c['job_errors']:,} "
            f"error-history rows, {c['recurring_executions']:,} recurring runs; finished_at from "
            f"{fills[0]['finished_at_from'][:19]} to {fills[0]['finished_at_to'][:19]} (cutoff "
            f"at the fill: {fills[0]['cutoff_at_fill'][:19]}).",
            "",
        ]
    for key, label in (
        ("sizes_filled", "filled"),
        ("sizes_vacuumed", "after clear-finished and VACUUM"),
    ):
        s = data.get(key)
        if not s:
            continue
        out += [f"Sizes, {label} (database {_mib(s['database'])}):", ""]
        out += _table(
            ["table", "rows (estimate)", "heap", "indexes", "total"],
            [
                [
                    t["table"],
                    f"{t['rows_estimate']:,}",
                    _mib(t["heap"]),
                    _mib(t["indexes"]),
                    _mib(t["total"]),
                ]
                for t in s["tables"]
            ],
        )
        out += [
            "",
            "pgjobs_jobs indexes: "
            + ", ".join(f"{k} {_mib(v)}" for k, v in s["jobs_indexes"].items()),
            "",
        ]

    c = data.get("clear_alone")
    if c:
        out += ["### clear-finished alone", ""]
        out += [
            f"- {c['command']}",
            f"- deleted {c['deleted']:,} jobs in {c['seconds']:.1f} s: "
            f"**{c['rate']:,.0f} rows/s**, "
            f"{c['batches']:,} batches; CPU {c['cpu_us_per_row']:.1f} µs/row "
            f"(client {c['client_cpu_s']:.1f} s, backend {c['backend_cpu_s']:.1f} s: "
            f"{c['cores']:.2f} cores)",
            f"- WAL: {_mib(c['wal_bytes'])} ({c['wal_bytes_per_row']:.0f} bytes/row; "
            "server-wide LSN difference)",
        ]
        v = data.get("vacuum_after_clear")
        if v:
            out += [
                "- then VACUUM (ANALYZE), unthrottled: "
                + ", ".join(f"{k} {s:.1f} s" for k, s in v.items())
            ]
        rest = data.get("clear_rest")
        if rest:
            out += [
                f"- second fill, after the drains below: the rest, {rest['deleted']:,} rows, "
                f"alone in {rest['seconds']:.1f} s: {rest['rate']:,.0f} rows/s"
            ]
        plan = data.get("clear_batch_plan")
        if plan:
            out += [
                "",
                "One batch (1,000 ids), `EXPLAIN (ANALYZE, BUFFERS, WAL)`, rolled back:",
                "",
                "```",
                plan,
                "```",
            ]
        out += [""]

    rows = []
    dh = data.get("drains_history", {})
    base_empty = _med([r["rate"] for r in dh.get("empty", [])])
    for key, label in (("empty", "empty history"), ("history", f"{n:,} finished kept")):
        runs = dh.get(key, [])
        if runs:
            rate = [r["rate"] for r in runs]
            rows.append([label, _spread(rate), _spread([r["cpu_us_per_job"] for r in runs]),
                         f"{_med(rate) / base_empty:.2f}\u00d7", "\u2013"])  # fmt: skip
    dc = data.get("drains_clear", {})
    base_pause = _med([r["rate"] for r in dc.get("pause", [])])
    labels = {
        "pause": "history, clear-finished paused",
        "full": "history, clear-finished at full speed",
        "paced": f"history, clear-finished paced at {data['paced_rate']:,.0f} rows/s (the bar)",
    }
    for mode in MODES:
        runs = dc.get(mode, [])
        if runs:
            rate = [r["rate"] for r in runs]
            rows.append(
                [
                    labels[mode],
                    _spread(rate),
                    _spread([r["cpu_us_per_job"] for r in runs]),
                    f"{_med(rate) / base_pause:.2f}\u00d7 of paused",
                    _spread([r["clear_rate"] for r in runs]) if mode != "pause" else "\u2013",
                ]
            )
    dv = data.get("drains_vacuum", {})
    if dv.get("runs"):
        rate = [r["rate"] for r in dv["runs"]]
        rows.append(
            [
                f"history, during VACUUM pgjobs_jobs ({dv['settings']})",
                _spread(rate),
                _spread([r["cpu_us_per_job"] for r in dv["runs"]]),
                f"{_med(rate) / base_pause:.2f}\u00d7 of paused" if base_pause > 0 else "\u2013",
                "\u2013",
            ]
        )
    if rows:
        out += ["### Drains", ""]
        out += _table(["case", "jobs/s", "CPU µs/job", "ratio", "clear rows/s meanwhile"], rows)
        out += [""]
        if dv:
            out += [
                f"VACUUM during the drains: progress at the end {dv.get('progress_at_end')}, "
                f"{'finished' if dv.get('vacuum_finished') else 'cancelled after the drains'} "
                f"after {dv.get('vacuum_seconds') or 0:.0f} s.",
                "",
            ]

    for key in ("pages_history", "pages_cleared", "pages_vacuumed"):
        p = data.get(key)
        if not p:
            continue
        out += [f"### Dashboard pages: {p['label']}", ""]
        out += _table(
            [
                "page",
                "path",
                "median ms",
                "min\u2013max ms",
                "first ms",
                "statements",
                "slowest statement ms",
            ],
            [
                [
                    ("**" + e["label"] + "**") if e["median_ms"] > SLOW_PAGE_MS else e["label"],
                    f"`{e['path']}`",
                    f"{e['median_ms']:,.1f}",
                    f"{e['min_ms']:,.1f}\u2013{e['max_ms']:,.1f}",
                    f"{e['first_ms']:,.1f}",
                    str(e["statements"]),
                    f"{e['slowest_statement_ms']:,.1f}" if e["slowest_statement_ms"] else "\u2013",
                ]
                for e in p["pages"]
            ],
        )
        for e in p["pages"]:
            if e.get("explain"):
                over = "over 1 s" if e["median_ms"] > SLOW_PAGE_MS else f"{e['median_ms']:,.0f} ms"
                out += ["", f"`{e['path']}` ({over}); its slowest statement:", "", "```sql",
                        e["slowest_statement"], "```", "", "```", e["explain"], "```"]  # fmt: skip
        out += [""]
    steps = data.get("steps", [])
    if steps:
        out += ["Steps: " + "; ".join(f"{s['step']} {s['seconds']:.0f} s" for s in steps) + "."]
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def main(argv: Sequence[str]) -> int:
    if len(argv) == 6 and argv[0] == "clear":
        _, url, control, log, result, rate = argv
        return clear_child(url, Path(control), Path(log), Path(result), float(rate))
    print("usage: python -m benchmarks.history clear URL CONTROL LOG RESULT PACED_RATE")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
