"""The dashboard's pages (GET only: no page changes anything).

Each handler reads what its page shows on one pooled connection, in the thread pool, and renders
its template.  The SQL lives in :mod:`~pgjobs.operations.counts`, :mod:`~pgjobs.web.throughput`,
:mod:`~pgjobs.operations.lists` and :mod:`~pgjobs.web.detail`; processes and recurring tasks use the
statements and API of :mod:`pgjobs.store.processes` and :mod:`pgjobs.config.recurring`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pgjobs import clock
from pgjobs.db.names import sql
from pgjobs.operations import counts, lists
from pgjobs.operations.failed import escape_like
from pgjobs.operations.recurring import TaskStatus, list_tasks
from pgjobs.operations.waiting import WaitingJobs
from pgjobs.store import failed as failed_store
from pgjobs.store import processes as processes_store
from pgjobs.web import detail, fmt, throughput
from pgjobs.web.pinned import PinnedDatabase
from pgjobs.web.state import dashboard

MAX_FILTER = 200  # characters of a filter value
STATE_TITLES = {
    "ready": "Ready",
    "scheduled": "Scheduled",
    "in_progress": "In progress",
    "blocked": "Blocked",
    "held": "Held",
    "failed": "Failed",
    "finished": "Finished",
}
# Held jobs (a workflow's, waiting for their dependencies), counted up to %(cap)s like each state.
HELD_COUNT = "SELECT count(*) FROM (SELECT 1 FROM {held} LIMIT %(cap)s) t"
# The public ids of jobs known by internal id (recurring tasks' last runs); primary key.
JOB_IDS = "SELECT id, job_id FROM {jobs} WHERE id = ANY(%(ids)s::bigint[])"
# The operators' filter on failed jobs, exactly as pgjobs.FailedJobs applies it.
_FAILED_FILTER = "\nWHERE true" + failed_store.FILTER
# How many failed jobs match a filter: run only while the failed table is under the count cap.
# The LATERAL LIMIT 1 keeps it a nested loop of primary-key probes (never a scan of the jobs).
FAILED_MATCHING = (
    """
SELECT count(*) FROM {failed} f
CROSS JOIN LATERAL (
    SELECT job_id, queue_name, class_name, arguments FROM {jobs} WHERE id = f.job_id LIMIT 1
) j"""
    + _FAILED_FILTER
)
# Past the cap: the planner's estimate of the same.
FAILED_MATCHING_ESTIMATE = (
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM {failed} f JOIN {jobs} j ON j.id = f.job_id"
    + _FAILED_FILTER
)


def _overview(conn: psycopg.Connection[Any], schema: str | None, now: datetime) -> dict[str, Any]:
    flow = throughput.throughput(conn, schema, now)
    return {
        "counts": counts.state_counts(conn, schema),
        "queues": counts.queue_stats(conn, schema),
        "throughput": flow,
        "chart": fmt.chart(flow.minutes),
        "cap": counts.COUNT_CAP,
    }


async def overview(request: Request) -> Response:
    dash = dashboard(request)
    data = await dash.read(_overview, clock.now())
    refresh = request.query_params.get("refresh", "")
    seconds = min(max(int(refresh), 2), 3600) if refresh.isdigit() else None
    return dash.render(request, "overview.html", {**data, "page": "overview", "refresh": seconds})


async def queues(request: Request) -> Response:
    dash = dashboard(request)
    found = await dash.read(counts.queue_stats)
    rates = await dash.read(_rate_limits)
    context = {"queues": found, "rates": rates, "page": "queues"}
    return dash.render(request, "queues.html", context)


def _rate_limits(conn: psycopg.Connection[Any], schema: str | None) -> list[Any]:
    """The rate-limit keys in use (the first 100), for the queues page."""
    from pgjobs.operations.queues import rate_limits

    return rate_limits(PinnedDatabase(conn, schema=schema), 100, conn=conn)


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value[:MAX_FILTER] or None


def _filters(request: Request, state: str) -> lists.Filters:
    process = _param(request, "process") if state == "in_progress" else None
    return lists.Filters(
        queue=_param(request, "queue"),
        class_name=_param(request, "class"),
        text=_param(request, "q"),
        error=_param(request, "error") if state == "failed" else None,
        process=int(process) if process and process.isdigit() else None,
    )


def _failed_matching(
    conn: psycopg.Connection[Any], schema: str | None, filters: lists.Filters, total: counts.Count
) -> counts.Count:
    """How many failed jobs a bulk action on ``filters`` would touch: exact while the failed
    table is under the count cap (then it is small), else the planner's estimate."""
    if not (filters.queue or filters.class_name or filters.error or filters.text):
        return total
    params = {
        "queue": filters.queue,
        "class_name": filters.class_name,
        "error": filters.error,
        "text": f"%{escape_like(filters.text)}%" if filters.text else None,
        "failed_before": None,
        "failed_after": None,
        "job_ids": None,
    }
    if total.kind == "exact":
        row = conn.execute(sql(FAILED_MATCHING, schema), params).fetchone()
        return counts.Count(int(row[0]) if row else 0)
    estimate = counts.explain_rows(conn, sql(FAILED_MATCHING_ESTIMATE, schema), params)
    return counts.Count(estimate, "estimate")


def _jobs(
    conn: psycopg.Connection[Any],
    schema: str | None,
    state: str,
    filters: lists.Filters,
    cursor: lists.Cursor | None,
) -> dict[str, Any]:
    found = counts.state_counts(conn, schema)
    found["held"] = _held(conn, schema)
    data: dict[str, Any] = {
        "counts": found,
        "result": lists.page(conn, schema, state, filters, cursor),
    }
    if state == "failed":
        data["matching"] = _failed_matching(conn, schema, filters, found["failed"])
    return data


def _held(conn: psycopg.Connection[Any], schema: str | None) -> counts.Count:
    """Held jobs, exact up to the count cap (past it, a lower bound: the table holds only the
    jobs of workflows waiting for others)."""
    row = conn.execute(sql(HELD_COUNT, schema), {"cap": counts.COUNT_CAP}).fetchone()
    held = int(row[0]) if row else 0
    return counts.Count(held) if held < counts.COUNT_CAP else counts.Count(held, "at_least")


async def jobs(request: Request) -> Response:
    state = request.path_params["state"]
    if state not in STATE_TITLES:
        raise HTTPException(404, f"no job state {state!r}")
    dash = dashboard(request)
    filters = _filters(request, state)
    cursor = lists.Cursor.decode(request.query_params.get("before"))
    data = await dash.read(_jobs, state, filters, cursor)
    query = {
        "queue": filters.queue,
        "class": filters.class_name,
        "q": filters.text,
        "error": filters.error,
        "process": filters.process,
    }
    context = {
        **data,
        "page": "failed" if state == "failed" else "jobs",
        "state": state,
        "states": STATE_TITLES,
        "filters": filters,
        "query": query,
        "cursor": cursor,
        "window": lists.SEARCH_WINDOW,
    }
    return dash.render(request, "jobs.html", context)


async def job(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    assert isinstance(job_id, uuid.UUID)
    dash = dashboard(request)
    found = await dash.read(detail.find, job_id)
    if found is None:
        return dash.render(request, "error.html", {"message": f"No job {job_id}."}, 404)
    waiting_for = None
    if found.state in ("ready", "scheduled", "blocked"):
        waiting_for = await run_in_threadpool(WaitingJobs(dash.database).waiting_for, job_id)
    context = {"job": found, "page": "jobs", "waiting_for": waiting_for}
    return dash.render(request, "job.html", context)


@dataclass(frozen=True)
class ProcessRow:
    id: int
    kind: str
    name: str
    hostname: str
    pid: int
    supervisor_id: int | None
    metadata: dict[str, Any]
    last_heartbeat_at: datetime
    created_at: datetime
    running: int
    heartbeat_age: float
    dead: bool

    @property
    def queues(self) -> str:
        """The queues of a worker, as configured ("-" for other kinds)."""
        found, weights = self.metadata.get("queues"), self.metadata.get("weights")
        if isinstance(found, list) and isinstance(weights, list) and len(weights) == len(found):
            return ", ".join(f"{q}: {w}" for q, w in zip(found, weights, strict=True))  # weighted
        if isinstance(found, list):
            return ", ".join(str(q) for q in found)
        return "-" if found is None else str(found)


def _processes(
    conn: psycopg.Connection[Any], schema: str | None, now: datetime, alive: float
) -> list[ProcessRow]:
    found = []
    for row in conn.execute(sql(processes_store.LIST, schema)):
        age = max(0.0, (now - row[7]).total_seconds())
        metadata = row[6] if isinstance(row[6], dict) else {}
        ident, kind, name, hostname, pid, supervisor_id = row[:6]
        heartbeat, created, running = row[7:10]
        found.append(
            ProcessRow(ident, kind, name, hostname, pid, supervisor_id, metadata, heartbeat,
                       created, running, age, age > alive)
        )  # fmt: skip
    return found


async def processes(request: Request) -> Response:
    dash = dashboard(request)
    found = await dash.read(_processes, clock.now(), dash.alive_threshold)
    names = {p.id: p.name for p in found}
    context = {"processes": found, "names": names, "page": "processes"}
    return dash.render(request, "processes.html", {**context, "alive": dash.alive_threshold})


def _recurring(
    conn: psycopg.Connection[Any], schema: str | None
) -> tuple[list[TaskStatus], dict[int, uuid.UUID]]:
    tasks = list_tasks(PinnedDatabase(conn, schema=schema))
    ids = [t.last_job_id for t in tasks if t.last_job_id is not None]
    public = {int(r[0]): r[1] for r in conn.execute(sql(JOB_IDS, schema), {"ids": ids})}
    return tasks, public


async def recurring(request: Request) -> Response:
    dash = dashboard(request)
    tasks, public = await dash.read(_recurring)
    context = {"tasks": tasks, "public_ids": public, "page": "recurring"}
    return dash.render(request, "recurring.html", {**context, "issued_at": clock.now()})


async def metrics(request: Request) -> Response:
    """The database gauges for Prometheus (``pgjobs[metrics]``), for hosts that do not run
    ``pgjobs start --metrics-port``; the same names and values as its ``/metrics``."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from pgjobs.observability.metrics import database_registry
    except ImportError:
        hint = '/metrics needs prometheus_client: pip install "pgjobs[metrics]"\n'
        return PlainTextResponse(hint, 501)
    dash = dashboard(request)
    if dash.metrics is None:
        dash.metrics = database_registry(dash.database)
    body = await run_in_threadpool(generate_latest, dash.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/", overview, name="overview"),
    Route("/metrics", metrics, name="metrics"),
    Route("/queues", queues, name="queues"),
    Route("/jobs/{state}", jobs, name="jobs"),
    Route("/job/{job_id:uuid}", job, name="job"),
    Route("/processes", processes, name="processes"),
    Route("/recurring", recurring, name="recurring"),
]
