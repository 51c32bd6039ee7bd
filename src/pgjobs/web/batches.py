"""The dashboard's batch pages (GET only): batches and workflows newest first, and one with its
counts, progress, properties, callbacks, nested batches and jobs by state.

Everything is read by :mod:`pgjobs.operations.batches` (what ``pgjobs batches`` shows too), on one
pooled connection per page, in the thread pool.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgjobs.operations import batches as ops
from pgjobs.web.state import dashboard

LIST_TITLES = {"running": "Running", "finished": "Finished", "succeeded": "Succeeded",
               "failed": "Failed"}  # fmt: skip
KIND_TITLES = {"batch": "Batches", "workflow": "Workflows"}
# The batch page's job tabs, in the order a job goes through the states.
JOB_TITLES = {
    "held": "Held", "scheduled": "Scheduled", "blocked": "Blocked", "ready": "Ready",
    "running": "Running", "failed": "Failed", "finished": "Succeeded", "discarded": "Discarded",
    "cancelled": "Cancelled",
}  # fmt: skip


def _choice(request: Request, name: str, allowed: Any) -> str | None:
    """A query parameter among ``allowed``; anything else is no filter (like a bad cursor)."""
    value = request.query_params.get(name)
    return value if value in allowed else None


def _cursor(request: Request, name: str) -> int | None:
    value = request.query_params.get(name, "")
    return int(value) if value.isdigit() and 0 < int(value) < ops.MAX_BEFORE else None


async def batches(request: Request) -> Response:
    dash = dashboard(request)
    kind = _choice(request, "kind", ops.KINDS)
    state = _choice(request, "state", ops.LIST_STATES)
    before = _cursor(request, "before")
    page = await dash.read(_list, kind, state, before)
    context = {
        "page": "batches",
        "result": page,
        "kind": kind,
        "state": state,
        "before": before,
        "states": LIST_TITLES,
        "kinds": KIND_TITLES,
        "query": {"kind": kind, "state": state},
    }
    return dash.render(request, "batches.html", context)


def _list(
    conn: psycopg.Connection[Any],
    schema: str | None,
    kind: str | None,
    state: str | None,
    before: int | None,
) -> ops.BatchesPage:
    return ops.list_batches(conn, schema, kind=kind, state=state, before=before)


def _batch(
    conn: psycopg.Connection[Any],
    schema: str | None,
    batch_id: uuid.UUID,
    state: str | None,
    after: int | None,
) -> tuple[ops.BatchDetail, ops.JobsPage] | None:
    info = ops.find(conn, schema, batch_id)
    if info is None:
        return None
    return ops.detail(conn, schema, info), ops.jobs(conn, schema, info, state=state, after=after)


async def batch(request: Request) -> Response:
    batch_id = request.path_params["batch_id"]
    assert isinstance(batch_id, uuid.UUID)
    dash = dashboard(request)
    state = _choice(request, "state", ops.JOB_STATES)
    after = _cursor(request, "after")
    found = await dash.read(_batch, batch_id, state, after)
    if found is None:
        message = f"No batch or workflow {batch_id}."
        return dash.render(request, "error.html", {"message": message}, 404)
    detail, jobs = found
    # The page's jobs by public id: a dependency among them is named by its class.
    names = {job.job_id: job.class_name for job in jobs.jobs}
    context = {
        "page": "batches",
        "b": detail.info,
        "detail": detail,
        "jobs": jobs,
        "names": names,
        "state": state,
        "after": after,
        "states": JOB_TITLES,
    }
    return dash.render(request, "batch.html", context)


ROUTES = [
    Route("/batches", batches, name="batches"),
    Route("/batches/{batch_id:uuid}", batch, name="batch"),
]
