"""The dashboard's actions: POST only, CSRF-checked, refused in read-only mode.

Each action does its work through pgjobs' own API (:class:`pgjobs.FailedJobs`,
:class:`pgjobs.operations.waiting.WaitingJobs`, :func:`pgjobs.cancel`,
:class:`pgjobs.operations.queues.Queue`, :func:`pgjobs.operations.recurring.run_now`), then
redirects (303) back to the page it came from with a flash message saying what it did
(POST-redirect-GET: a reload never repeats it). Every action is idempotent under a double
click: retrying or discarding a job that is no longer failed (or discarding or dispatching one
no longer waiting: a worker claimed it meanwhile; or cancelling one
already cancelled or ended) says so; pausing a paused queue says so; a bulk action run twice finds
nothing the second time (except asking running jobs to stop: those still running are asked again,
which changes nothing); "run now" twice from the same page enqueues once (the second request finds
the run the first one recorded since the page was rendered).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from pgjobs.db.database import Database
from pgjobs.db.names import names, sql
from pgjobs.errors import JobNotFound, PgJobsError
from pgjobs.operations.failed import FailedJobs
from pgjobs.operations.queues import Queue
from pgjobs.operations.recurring import run_now
from pgjobs.operations.results import cancel as pgjobs_cancel
from pgjobs.operations.results import get_job
from pgjobs.operations.waiting import STATES, WaitingJobs
from pgjobs.web.pinned import PinnedDatabase
from pgjobs.web.security import CSRF_FIELD, FLASH_COOKIE, cookie_path, csrf_ok
from pgjobs.web.state import Dashboard, dashboard

Flash = dict[str, Any]  # {"kind": "success" | "info" | "error", "message": str, "job": uuid?}
Handler = Callable[[Dashboard, FormData], Flash]

# One "run now" of a task at a time, per database (transaction-scoped advisory lock).
LOCK_RUN = "SELECT pg_advisory_xact_lock(hashtext(%(name)s))"
# A manual run of the task recorded since the page was rendered; served by the unique
# (task_key, run_at) index.
RUN_SINCE = """
SELECT e.run_at, j.job_id FROM {recurring_executions} e LEFT JOIN {jobs} j ON j.id = e.job_id
WHERE e.task_key = %(key)s AND e.run_at >= %(since)s AND e.manual
ORDER BY e.run_at DESC LIMIT 1
"""


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() or None if isinstance(value, str) else None


def _job_id(form: FormData) -> uuid.UUID | None:
    try:
        return uuid.UUID(_text(form, "job_id") or "")
    except ValueError:
        return None


def _back(request: Request, target: str | None) -> str:
    """Where to go after the action: a path of this dashboard (never another site)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        target = "/"
    if any(c in target for c in "\r\n\\"):
        target = "/"
    return str(request.scope.get("root_path", "")).rstrip("/") + target


def action(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A POST endpoint: refuse in read-only mode or without a valid CSRF token; run the handler
    in the thread pool; redirect back with its flash message."""

    async def endpoint(request: Request) -> Response:
        dash = dashboard(request)
        if dash.read_only:
            return PlainTextResponse("The dashboard is read-only: actions are disabled.", 403)
        form = await request.form()
        if not csrf_ok(request, dash.signer, form.get(CSRF_FIELD)):
            message = "Invalid or missing CSRF token: reload the page and try again."
            return PlainTextResponse(message, 403)
        flash = await run_in_threadpool(handler, dash, form)
        response = RedirectResponse(_back(request, _text(form, "return_to")), 303)
        response.set_cookie(
            FLASH_COOKIE,
            dash.signer.seal(flash),
            max_age=60,
            path=cookie_path(request),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    return endpoint


def _one(dash: Dashboard, form: FormData, verb: str) -> Flash:
    job_id = _job_id(form)
    if job_id is None:
        return {"kind": "error", "message": "No job id given."}
    failed = FailedJobs(dash.database)
    done = failed.retry(job_id) if verb == "retry" else failed.discard(job_id)
    if done and verb == "retry":
        state = failed.state(job_id)
        shown = "in progress" if state == "claimed" else state
        return {"kind": "success", "message": f"Retried job {job_id}: it is {shown} now.",
                "job": str(job_id)}  # fmt: skip
    if done:
        return {"kind": "success", "message": f"Discarded job {job_id} and its error history."}
    state = failed.state(job_id)
    shown = "in progress" if state == "claimed" else state
    where = "it no longer exists" if state is None else f"it is {shown}"
    return {"kind": "info", "message": f"Job {job_id} is not failed ({where}): nothing done.",
            "job": str(job_id) if state else None}  # fmt: skip


def retry(dash: Dashboard, form: FormData) -> Flash:
    return _one(dash, form, "retry")


def discard(dash: Dashboard, form: FormData) -> Flash:
    return _one(dash, form, "discard")


def _all(dash: Dashboard, form: FormData, verb: str) -> Flash:
    queue, job_class, error = _text(form, "queue"), _text(form, "class"), _text(form, "error")
    text = _text(form, "q")
    failed = FailedJobs(dash.database, batch_size=dash.batch_size)
    act = failed.retry_all if verb == "retry" else failed.discard_all
    done = act(queue=queue, job_class=job_class, error=error, text=text)
    given = (("queue", queue), ("class", job_class), ("error", error), ("arguments with", text))
    past = "Retried" if verb == "retry" else "Discarded"
    return _bulk_done(done, "failed jobs", given, verb, past)


def _bulk_done(
    done: int,
    jobs: str,
    given: tuple[tuple[str, str | None], ...],
    verb: str,
    past: str,
    after: str = "",
) -> Flash:
    """The flash of a bulk action on ``jobs`` matching the ``given`` filters: "``past`` 3
    ``jobs`` matching queue mail``after``."."""
    shown = ", ".join(f"{name} {value}" for name, value in given if value)
    matching = f"{jobs} matching {shown}" if shown else jobs
    if not done:
        return {"kind": "info", "message": f"No {matching}: nothing to {verb}."}
    return {"kind": "success", "message": f"{past} {done:,} {matching}{after}."}


def retry_all(dash: Dashboard, form: FormData) -> Flash:
    return _all(dash, form, "retry")


def discard_all(dash: Dashboard, form: FormData) -> Flash:
    return _all(dash, form, "discard")


def _pause(dash: Dashboard, form: FormData, pause: bool) -> Flash:
    name = _text(form, "queue")
    if name is None:
        return {"kind": "error", "message": "No queue given."}
    queue = Queue(name, database=dash.database)
    if queue.paused == pause:
        state = "paused" if pause else "not paused"
        return {"kind": "info", "message": f"Queue {name} was already {state}: nothing done."}
    queue.pause() if pause else queue.resume()
    if pause:
        message = f"Paused queue {name}: workers skip it until it is resumed."
    else:
        message = f"Resumed queue {name}."
    return {"kind": "success", "message": message}


def pause(dash: Dashboard, form: FormData) -> Flash:
    return _pause(dash, form, True)


def resume(dash: Dashboard, form: FormData) -> Flash:
    return _pause(dash, form, False)


def _run_once(
    conn: psycopg.Connection[Any], database: Database, key: str, since: datetime | None
) -> Flash:
    with conn.transaction():
        lock = f"{names(database.schema)['recurring_executions']}:web-run:{key}"
        conn.execute(LOCK_RUN, {"name": lock})
        if since is not None:
            params = {"key": key, "since": since}
            row = conn.execute(sql(RUN_SINCE, database.schema), params).fetchone()
            if row is not None:
                message = (
                    f"Task {key} was already run from this page (a double submit?): not run "
                    "again. Reload the page to run it again."
                )
                return {"kind": "info", "message": message, "job": str(row[1]) if row[1] else None}
        handle = run_now(PinnedDatabase(conn, schema=database.schema), key)
    if handle is None:
        return {"kind": "info", "message": f"Task {key}: an enqueue callback dropped the job."}
    return {"kind": "success", "message": f"Enqueued task {key} now: job {handle.job_id}.",
            "job": str(handle.job_id)}  # fmt: skip


def run(dash: Dashboard, form: FormData) -> Flash:
    key = _text(form, "key")
    if key is None:
        return {"kind": "error", "message": "No task given."}
    try:
        since = datetime.fromisoformat(_text(form, "issued_at") or "")
    except ValueError:
        since = None
    database = dash.database
    try:
        with database.connection() as conn:
            return _run_once(conn, database, key, since)
    except PgJobsError as exc:  # an unknown task, a job class that does not resolve
        return {"kind": "error", "message": str(exc)}


# -- waiting jobs: discard ready, scheduled or blocked ones; run scheduled ones now -----------

_SHOWN = {"claimed": "in progress", None: "gone"}


def _waiting_one(dash: Dashboard, form: FormData, verb: str) -> Flash:
    job_id = _job_id(form)
    if job_id is None:
        return {"kind": "error", "message": "No job id given."}
    waiting = WaitingJobs(dash.database)
    outcome = waiting.discard(job_id) if verb == "discard" else waiting.dispatch(job_id)
    state = _SHOWN.get(outcome.state, outcome.state)
    if outcome.done and verb == "discard":
        return {"kind": "success", "message": f"Discarded job {job_id}.", "job": str(job_id)}
    if outcome.done:
        return {"kind": "success", "message": f"Dispatched job {job_id}: it is {state} now.",
                "job": str(job_id)}  # fmt: skip
    wanted = "ready, scheduled or blocked" if verb == "discard" else "scheduled"
    where = "it no longer exists" if outcome.state is None else f"it is {state}"
    return {"kind": "info", "message": f"Job {job_id} is not {wanted} ({where}): nothing done.",
            "job": str(job_id) if outcome.state else None}  # fmt: skip


def discard_waiting(dash: Dashboard, form: FormData) -> Flash:
    return _waiting_one(dash, form, "discard")


def dispatch(dash: Dashboard, form: FormData) -> Flash:
    return _waiting_one(dash, form, "dispatch")


def _waiting_all(dash: Dashboard, form: FormData, verb: str) -> Flash:
    queue, job_class, text = _text(form, "queue"), _text(form, "class"), _text(form, "q")
    state = "scheduled" if verb == "dispatch" else _text(form, "state")
    if state not in STATES:
        return {"kind": "error", "message": "Give the state: ready, scheduled or blocked."}
    waiting = WaitingJobs(dash.database, batch_size=dash.batch_size)
    if verb == "discard":
        done = waiting.discard_all(state, queue=queue, job_class=job_class, text=text)
    elif verb == "cancel":
        done = waiting.cancel_all(state, queue=queue, job_class=job_class, text=text)
    else:
        done = waiting.dispatch_all(queue=queue, job_class=job_class, text=text)
    given = (("queue", queue), ("class", job_class), ("arguments with", text))
    past = {"discard": "Discarded", "cancel": "Cancelled", "dispatch": "Dispatched"}[verb]
    return _bulk_done(done, f"{state} jobs", given, verb, past)


def discard_waiting_all(dash: Dashboard, form: FormData) -> Flash:
    return _waiting_all(dash, form, "discard")


def dispatch_all(dash: Dashboard, form: FormData) -> Flash:
    return _waiting_all(dash, form, "dispatch")


# -- cancelling: waiting jobs never run, running ones are asked to stop ------------------------


# What cancelling one job did, by outcome (any other: the state it had ended in).
_CANCELLED = {
    "cancelled": ("success", "Cancelled job {id}: it will not run."),
    "cancelling": (
        "success",
        "Asked job {id} to stop: it is running, and is cancelled when it next checks for a "
        "cancel request.",
    ),
    "already": ("info", "Job {id} was already cancelled: nothing done."),
}


def cancel(dash: Dashboard, form: FormData) -> Flash:
    """Cancel one job.  It is read first, so that a job cancelled earlier (a double click) is
    told apart: ``pgjobs.cancel`` returns "cancelled" for it too."""
    job_id = _job_id(form)
    if job_id is None:
        return {"kind": "error", "message": "No job id given."}
    database = dash.database
    try:
        if get_job(job_id, database=database).state == "cancelled":
            outcome: str = "already"
        else:
            outcome = pgjobs_cancel(job_id, database=database)
    except JobNotFound:
        return {"kind": "info", "message": f"Job {job_id} no longer exists: nothing done."}
    kind, message = _CANCELLED.get(
        outcome, ("info", f"Job {{id}} has ended ({outcome}): not cancelled.")
    )
    return {"kind": kind, "message": message.format(id=job_id), "job": str(job_id)}


def cancel_waiting_all(dash: Dashboard, form: FormData) -> Flash:
    return _waiting_all(dash, form, "cancel")


def cancel_running_all(dash: Dashboard, form: FormData) -> Flash:
    queue, job_class, text = _text(form, "queue"), _text(form, "class"), _text(form, "q")
    waiting = WaitingJobs(dash.database, batch_size=dash.batch_size)
    asked = waiting.cancel_running(queue=queue, job_class=job_class, text=text)
    given = (("queue", queue), ("class", job_class), ("arguments with", text))
    return _bulk_done(asked, "running jobs", given, "cancel", "Asked", " to stop")


ROUTES = [
    Route("/job/cancel", action(cancel), methods=["POST"], name="cancel"),
    Route("/waiting/cancel-all", action(cancel_waiting_all), methods=["POST"], name="cancel_all"),
    Route(
        "/running/cancel-all",
        action(cancel_running_all),
        methods=["POST"],
        name="cancel_running_all",
    ),
    Route("/waiting/discard", action(discard_waiting), methods=["POST"], name="discard_waiting"),
    Route("/waiting/dispatch", action(dispatch), methods=["POST"], name="dispatch"),
    Route(
        "/waiting/discard-all",
        action(discard_waiting_all),
        methods=["POST"],
        name="discard_waiting_all",
    ),
    Route("/waiting/dispatch-all", action(dispatch_all), methods=["POST"], name="dispatch_all"),
    Route("/failed/retry", action(retry), methods=["POST"], name="retry"),
    Route("/failed/discard", action(discard), methods=["POST"], name="discard"),
    Route("/failed/retry-all", action(retry_all), methods=["POST"], name="retry_all"),
    Route("/failed/discard-all", action(discard_all), methods=["POST"], name="discard_all"),
    Route("/queues/pause", action(pause), methods=["POST"], name="pause"),
    Route("/queues/resume", action(resume), methods=["POST"], name="resume"),
    Route("/recurring/run", action(run), methods=["POST"], name="run"),
]
