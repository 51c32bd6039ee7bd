"""How fast the dashboard's pages are on big tables: ``python -m benchmarks.dashboard``.

Loads a scratch database (created and migrated with ``pgjobs.migrate``, dropped at the end unless
``--keep``) with 1,000,000 finished jobs, 100,000 failed jobs (each with its error history) and
10,000 scheduled jobs — enqueued over the last 24 hours, ids in ``created_at`` order as in real
life — plus a few ready and running jobs, processes and recurring tasks; then times every page
(``--repeat`` times, in process through Starlette's TestClient: server time, no network) and the
bulk retry of the 100,000 failed jobs from the failed page.  Not a test: nothing here is
collected by pytest.  ``docs/dashboard.md`` shows a run's numbers.

    python -m benchmarks.dashboard [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--jobs 1110000] [--repeat 5] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql as pgsql
from starlette.testclient import TestClient

from pgjobs.config.queue import Config
from pgjobs.db.database import Database
from pgjobs.db.migrate import migrate
from pgjobs.db.urls import to_url
from pgjobs.web import create_app

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
NAME = "bench_dashboard"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"bench:bench").decode()}
CLASSES = 20
QUEUES = ("default", "mailers", "reports", "payments", "webhooks")

# Every job, in created_at order over the last 24 hours: job i is failed when i % 111 < 10,
# scheduled when it is 10, finished otherwise (1 in 100 of those discarded).
LOAD_JOBS = """
INSERT INTO pgjobs_jobs (job_id, queue_name, class_name, arguments, priority, executions,
                         scheduled_at, finished_at, discarded_at, created_at)
SELECT gen_random_uuid(),
       (%(queues)s::text[])[1 + i %% 5],
       'myapp.jobs:Job' || (i %% %(classes)s),
       jsonb_build_object('args', jsonb_build_array(i, 'user-' || i || '@example.com'),
                          'kwargs', jsonb_build_object('locale', 'en')),
       0,
       CASE WHEN i %% 111 < 10 THEN 3 ELSE 1 END,
       CASE WHEN i %% 111 = 10 THEN now() + make_interval(secs => i %% 604800) END,
       CASE WHEN i %% 111 > 10 THEN t + interval '2 seconds' END,
       CASE WHEN i %% 111 > 10 AND i %% 100 = 0 THEN t + interval '2 seconds' END,
       t
FROM generate_series(1, %(total)s) AS i,
     LATERAL (SELECT now() - interval '24 hours'
                     + make_interval(secs => 86400.0 * i / %(total)s) AS t) AS at
"""
LOAD_FAILED = """
INSERT INTO pgjobs_failed_executions (job_id, exception_class, message, backtrace, attempt,
                                      hostname, pid, created_at)
SELECT id, 'myapp.gateway.GatewayError', 'card declined for job ' || id,
       repeat(E'  File "myapp/jobs.py", line 12, in perform\\n    gateway.charge(amount)\\n', 12),
       3, 'worker-host-1', 4242, created_at + interval '3 seconds'
FROM pgjobs_jobs WHERE finished_at IS NULL AND scheduled_at IS NULL
"""
LOAD_ERRORS = """
INSERT INTO pgjobs_job_errors (job_id, attempt, exception_class, message, backtrace, hostname,
                               pid, created_at)
SELECT job_id, attempt, exception_class, message, backtrace, hostname, pid, created_at
FROM pgjobs_failed_executions
"""
LOAD_SCHEDULED = """
INSERT INTO pgjobs_scheduled_executions (job_id, queue_name, priority, scheduled_at)
SELECT id, queue_name, priority, scheduled_at FROM pgjobs_jobs WHERE scheduled_at IS NOT NULL
"""
# A little of everything else, so every page has something to show.
LOAD_EXTRAS = """
WITH sup AS (
    INSERT INTO pgjobs_processes (kind, name, hostname, pid, metadata)
    VALUES ('supervisor', 'supervisor-bench', 'worker-host-1', 100, '{"app": "myapp"}')
    RETURNING id
), workers AS (
    INSERT INTO pgjobs_processes (kind, name, hostname, pid, supervisor_id, metadata)
    SELECT 'worker', 'worker-bench-' || n, 'worker-host-1', 100 + n, sup.id,
           '{"queues": ["*"], "threads": 5}'::jsonb
    FROM sup, generate_series(1, 4) AS n
    RETURNING id
), fresh AS (
    INSERT INTO pgjobs_jobs (job_id, queue_name, class_name, arguments)
    SELECT gen_random_uuid(), (%(queues)s::text[])[1 + n %% 5], 'myapp.jobs:Job' || (n %% 7),
           jsonb_build_object('args', jsonb_build_array(n), 'kwargs', '{}'::jsonb)
    FROM generate_series(1, 1020) AS n
    RETURNING id, queue_name
), ready AS (
    INSERT INTO pgjobs_ready_executions (job_id, queue_name)
    SELECT id, queue_name FROM fresh ORDER BY id OFFSET 20
)
INSERT INTO pgjobs_claimed_executions (job_id, process_id)
SELECT f.id, (SELECT min(id) FROM workers) FROM (SELECT id FROM fresh ORDER BY id LIMIT 20) f
"""
LOAD_RECURRING = """
INSERT INTO pgjobs_recurring_tasks (key, schedule, class_name, queue_name)
SELECT 'task_' || n, 'every hour', 'myapp.jobs:Job' || n, 'default'
FROM generate_series(1, 5) AS n
"""


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def load(url: str, total: int, *, log: Callable[[str], None]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(LOAD_JOBS, {"total": total, "queues": list(QUEUES), "classes": CLASSES})
        for statement in (LOAD_FAILED, LOAD_ERRORS, LOAD_SCHEDULED, LOAD_RECURRING):
            conn.execute(statement)
        conn.execute(LOAD_EXTRAS, {"queues": list(QUEUES)})
        log(f"loaded {total:,} jobs in {time.perf_counter() - started:.0f} s; vacuuming")
        conn.execute("VACUUM ANALYZE")
        for table in ("pgjobs_jobs", "pgjobs_failed_executions", "pgjobs_scheduled_executions"):
            row = conn.execute(pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table)))
            log(f"  {table}: {row.fetchone()[0]:,} rows")  # type: ignore[index]


def pages(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(label, path) of every page to time, with ids and cursors taken from the data."""
    failed = conn.execute(
        "SELECT j.job_id FROM pgjobs_failed_executions f JOIN pgjobs_jobs j ON j.id = f.job_id "
        "ORDER BY f.created_at DESC LIMIT 1"
    ).fetchone()
    middle = conn.execute("SELECT max(id) / 2 FROM pgjobs_jobs").fetchone()
    assert failed is not None and middle is not None
    return [
        ("overview", "/"),
        ("queues", "/queues"),
        ("ready", "/jobs/ready"),
        ("scheduled", "/jobs/scheduled"),
        ("in progress", "/jobs/in_progress"),
        ("blocked", "/jobs/blocked"),
        ("failed", "/jobs/failed"),
        ("failed, class + error filter", "/jobs/failed?class=myapp.jobs:Job7&error=GatewayError"),
        ("failed, text search (rare)", "/jobs/failed?q=user-77777@"),
        ("finished", "/jobs/finished"),
        ("finished, a page in the middle", f"/jobs/finished?before={middle[0]}"),
        ("finished, class filter", "/jobs/finished?class=myapp.jobs:Job3"),
        ("finished, queue filter", "/jobs/finished?queue=reports"),
        ("finished, text search (no match)", "/jobs/finished?q=nobody@nowhere"),
        ("job detail (failed)", f"/job/{failed[0]}"),
        ("processes", "/processes"),
        ("recurring", "/recurring"),
    ]


def time_pages(client: TestClient, targets: list[tuple[str, str]], repeat: int) -> list[Any]:
    results = []
    for label, path in targets:
        client.get(path)  # warm: plans, pool, template cache
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        results.append((label, path, statistics.median(samples), max(samples)))
    return results


def bulk_retry(client: TestClient) -> tuple[float, str]:
    page = client.get("/jobs/failed").text
    form = re.search(
        r'<form method="post" action="/failed/retry-all"[^>]*>(.*?)</form>', page, re.S
    )
    assert form is not None
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(1)))
    started = time.perf_counter()
    response = client.post(
        "/failed/retry-all", data={k: html.unescape(v) for k, v in fields.items()}
    )
    elapsed = time.perf_counter() - started
    message = re.search(
        r'role="status">\s*(.*?)\s*<', client.get(response.headers["location"]).text
    )
    return elapsed, html.unescape(message.group(1)) if message else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__)
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help="a server role that may CREATE DATABASE"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1_110_000,
        help="jobs to load, 100 finished : 10 failed : 1 scheduled (default 1,110,000)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per page")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    total = args.jobs
    url = to_url(args.database_url, dbname=NAME)

    def log(message: str) -> None:
        print(message, flush=True)

    with _admin(args.database_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{NAME}"')
    try:
        migrate(url)
        load(url, total, log=log)
        database = Database(url, application_name="pgjobs-web-bench")
        app = create_app(database, username="bench", password="bench", config=Config())
        with TestClient(app, headers=AUTH, follow_redirects=False) as client:
            with database.connection() as conn:
                targets = pages(conn)
            results = time_pages(client, targets, args.repeat)
            log("\n| page | path | median ms | max ms |\n| --- | --- | ---: | ---: |")
            for label, path, median, worst in results:
                log(f"| {label} | `{path}` | {median:.1f} | {worst:.1f} |")
            elapsed, message = bulk_retry(client)
            log(f"\nbulk retry from the failed page: {elapsed:.1f} s — {message}")
        database.close()
    finally:
        if not args.keep:
            with _admin(args.database_url) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
