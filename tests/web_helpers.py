"""Helpers for the dashboard's tests: an app on the test's rolled-back connection, a client
that logs in, forms submitted the way a browser does, and jobs written straight into a state."""

from __future__ import annotations

import base64
import html
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pgjobs.config.queue import Config
from pgjobs.web import create_app
from pgjobs.web.pinned import PinnedDatabase

USER, PASSWORD = "admin", "s3cret"


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def app_on(conn: psycopg.Connection[Any], **options: Any) -> Starlette:
    """The dashboard on the test's connection (every page and action in its transaction)."""
    options.setdefault("config", Config())
    if "authorize" not in options and "no_auth" not in options:
        options.setdefault("username", USER)
        options.setdefault("password", PASSWORD)
    return create_app(PinnedDatabase(conn), **options)


def client_on(conn: psycopg.Connection[Any], **options: Any) -> TestClient:
    return TestClient(app_on(conn, **options), headers=basic(), follow_redirects=False)


def form_fields(page: str, action: str) -> list[dict[str, str]]:
    """The hidden fields of each form of ``page`` that posts to a path ending in ``action``."""
    found = []
    for match in re.finditer(r'<form method="post" action="([^"]*)"[^>]*>(.*?)</form>', page, re.S):
        if match.group(1).endswith(action):
            fields = re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)"', match.group(2)
            )
            found.append({name: html.unescape(value) for name, value in fields})
    return found


def submit(
    client: TestClient, page_path: str, action: str, match: dict[str, str] | None = None
) -> Any:
    """Open ``page_path``, then POST its form for ``action`` (the first one whose fields include
    ``match``) with every hidden field, as a browser would.  Returns the response (a redirect)."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    forms = [
        f
        for f in form_fields(page.text, action)
        if all(f.get(k) == v for k, v in (match or {}).items())
    ]
    assert forms, f"no form for {action} {match} on {page_path}"
    action_path = re.search(rf'action="([^"]*{re.escape(action)})"', page.text)
    assert action_path is not None
    return client.post(action_path.group(1), data=forms[0])


def flash(client: TestClient, response: Any) -> str:
    """Follow an action's redirect and return the flash message the page shows."""
    assert response.status_code == 303, response.text
    page = client.get(response.headers["location"])
    found = re.search(
        r'<div class="flash flash-(\w+)" role="status">\s*(.*?)\s*(<a|</div>)', page.text, re.S
    )
    assert found is not None, page.text[:2000]
    return f"{found.group(1)}: {html.unescape(found.group(2))}"


def add_job(
    conn: psycopg.Connection[Any],
    state: str = "ready",
    *,
    queue: str = "default",
    class_name: str = "tests.web:Job",
    args: list[Any] | None = None,
    priority: int = 0,
    created_at: datetime | None = None,
    at: datetime | None = None,
    process_id: int | None = None,
    error: str = "myapp.PaymentError",
    message: str = "declined",
    concurrency_key: str | None = None,
    job_id: int | None = None,
) -> tuple[int, uuid.UUID]:
    """A job written straight into ``state`` (ready, scheduled, in_progress, blocked, failed,
    finished, discarded, cancelled); ``at`` is that state's time.  Returns (id, public id)."""
    public = uuid.uuid4()
    created = created_at or datetime.now(UTC)
    when = at or created
    arguments = json.dumps({"args": args if args is not None else [], "kwargs": {}})
    finished = when if state in ("finished", "discarded", "cancelled") else None
    cancelled = when if state == "cancelled" else None
    row = conn.execute(
        "INSERT INTO pgjobs_jobs (id, job_id, queue_name, class_name, arguments, priority, "
        "created_at, finished_at, discarded_at, concurrency_key, scheduled_at, "
        "cancel_requested_at, cancelled_at) "
        "OVERRIDING SYSTEM VALUE VALUES (COALESCE(%s, nextval(pg_get_serial_sequence("
        "'pgjobs_jobs', 'id'))), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        [job_id, public, queue, class_name, arguments, priority, created, finished,
         when if state == "discarded" else None, concurrency_key,
         when if state == "scheduled" else None, cancelled, cancelled],
    ).fetchone()  # fmt: skip
    assert row is not None
    ident = int(row[0])
    if state == "ready":
        conn.execute(
            "INSERT INTO pgjobs_ready_executions (job_id, queue_name, priority, created_at) "
            "VALUES (%s, %s, %s, %s)",
            [ident, queue, priority, when],
        )
    elif state == "scheduled":
        conn.execute(
            "INSERT INTO pgjobs_scheduled_executions (job_id, queue_name, priority, scheduled_at)"
            " VALUES (%s, %s, %s, %s)",
            [ident, queue, priority, when],
        )
    elif state == "in_progress":
        conn.execute(
            "INSERT INTO pgjobs_claimed_executions (job_id, process_id, created_at) "
            "VALUES (%s, %s, %s)",
            [ident, process_id or 0, when],
        )
    elif state == "blocked":
        conn.execute(
            "INSERT INTO pgjobs_blocked_executions (job_id, queue_name, priority, concurrency_key,"
            " expires_at, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
            [ident, queue, priority, concurrency_key or "key", when + timedelta(minutes=5), when],
        )
    elif state == "failed":
        conn.execute(
            "INSERT INTO pgjobs_failed_executions (job_id, exception_class, message, backtrace, "
            "attempt, hostname, pid, created_at) VALUES (%s, %s, %s, %s, 1, 'host-1', 4321, %s)",
            [
                ident,
                error,
                message,
                f"Traceback (most recent call last):\n{error}: {message}",
                when,
            ],
        )
    return ident, public


def set_control(
    conn: psycopg.Connection[Any],
    job_id: uuid.UUID,
    *,
    progress: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
    result: object = None,
    cancel_requested_at: datetime | None = None,
) -> None:
    """Write a job's control columns as a worker would: ``progress`` ({"done", "total",
    "message", "at"}), ``checkpoint`` ({"completed", "step", "cursor"}, the cursor a Python
    value) and ``result`` (a Python value), encoded like ``pgjobs.serialization.dumps_value``."""
    from pgjobs.serialization import dumps_value

    if checkpoint is not None:
        checkpoint = {**checkpoint, "cursor": json.loads(dumps_value(checkpoint.get("cursor")))}
    conn.execute(
        "UPDATE pgjobs_jobs SET progress = %s::jsonb, checkpoint = %s::jsonb, result = %s::jsonb,"
        " cancel_requested_at = %s WHERE job_id = %s",
        [None if progress is None else json.dumps(progress),
         None if checkpoint is None else json.dumps(checkpoint),
         None if result is None else dumps_value(result), cancel_requested_at, job_id],
    )  # fmt: skip


def add_process(
    conn: psycopg.Connection[Any],
    kind: str = "worker",
    *,
    heartbeat: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    supervisor_id: int | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO pgjobs_processes (kind, name, hostname, pid, supervisor_id, metadata, "
        "last_heartbeat_at) VALUES (%s, %s, 'host-1', 4321, %s, %s, %s) RETURNING id",
        [kind, f"{kind}-{uuid.uuid4().hex[:12]}", supervisor_id,
         json.dumps(metadata if metadata is not None else {"queues": ["*"], "threads": 3}),
         heartbeat or datetime.now(UTC)],
    ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


def state_of(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> str | None:
    from pgjobs.store import jobs

    row = conn.execute("SELECT id FROM pgjobs_jobs WHERE job_id = %s", [job_id]).fetchone()
    if row is None:
        return None
    found = conn.execute(jobs.STATE_OF.format(**_tables()), {"id": row[0]}).fetchone()
    return str(found[0]) if found else None


def _tables() -> dict[str, str]:
    from pgjobs.db.names import names

    return names(None)
