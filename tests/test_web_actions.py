"""The dashboard's actions: each says what it did, and a double click does not do it twice."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.sample_jobs import SendWelcomeEmail
from tests.web_helpers import (
    add_job,
    add_process,
    client_on,
    flash,
    form_fields,
    set_control,
    state_of,
    submit,
)


def test_retry_one_then_again(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "failed")
    client = client_on(conn)
    page = client.get("/jobs/failed").text
    fields = form_fields(page, "/failed/retry")[0]
    first = client.post("/failed/retry", data=fields)
    assert flash(client, first) == f"success: Retried job {job}: it is ready now."
    assert state_of(conn, job) == "ready"
    second = client.post("/failed/retry", data=fields)  # the double click
    message = flash(client, second)
    assert message == f"info: Job {job} is not failed (it is ready): nothing done."
    assert conn.execute("SELECT count(*) FROM pgjobs_ready_executions").fetchone() == (1,)


def test_retry_from_the_job_page_returns_to_it(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "failed")
    client = client_on(conn)
    response = submit(client, f"/job/{job}", "/failed/retry")
    assert response.headers["location"] == f"/job/{job}"
    page = client.get(response.headers["location"]).text
    assert "state-ready" in page and "Retried job" in page
    assert 'class="flash' not in client.get(f"/job/{job}").text  # shown once


def test_discard_one_then_again(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "failed")
    client = client_on(conn)
    fields = form_fields(client.get(f"/job/{job}").text, "/failed/discard")[0]
    response = client.post("/failed/discard", data=fields)
    assert response.headers["location"] == "/jobs/failed"
    assert flash(client, response) == f"success: Discarded job {job} and its error history."
    assert state_of(conn, job) is None
    again = flash(client, client.post("/failed/discard", data=fields))
    assert again == f"info: Job {job} is not failed (it no longer exists): nothing done."


def test_retry_a_job_that_is_not_failed(conn: psycopg.Connection) -> None:
    _, failed = add_job(conn, "failed")
    _, running = add_job(conn, "in_progress")
    client = client_on(conn)
    fields = form_fields(client.get("/jobs/failed").text, "/failed/retry")[0]
    message = flash(client, client.post("/failed/retry", data={**fields, "job_id": str(running)}))
    assert message == f"info: Job {running} is not failed (it is in progress): nothing done."
    bad = flash(client, client.post("/failed/retry", data={**fields, "job_id": "nope"}))
    assert bad == "error: No job id given."
    assert state_of(conn, failed) == "failed"


def test_bulk_retry_takes_every_job_matching_the_filter(conn: psycopg.Connection) -> None:
    payments = [
        add_job(conn, "failed", queue="payments", error="app.GatewayError")[1] for _ in range(7)
    ]
    other_error = add_job(conn, "failed", queue="payments", error="app.Timeout")[1]
    other_queue = add_job(conn, "failed", queue="mail", error="app.GatewayError")[1]
    client = client_on(conn)
    client.app.state.dashboard.batch_size = 2  # type: ignore[attr-defined]
    page = "/jobs/failed?queue=payments&error=GatewayError"
    shown = client.get(page).text
    assert "These filters match 7 failed jobs" in shown
    fields = form_fields(shown, "/failed/retry-all")[0]
    response = client.post("/failed/retry-all", data=fields)
    assert response.headers["location"] == page
    message = flash(client, response)
    assert message == "success: Retried 7 failed jobs matching queue payments, error GatewayError."
    assert {state_of(conn, j) for j in payments} == {"ready"}
    assert state_of(conn, other_error) == state_of(conn, other_queue) == "failed"
    again = flash(client, client.post("/failed/retry-all", data=fields))  # the double click
    assert again == (
        "info: No failed jobs matching queue payments, error GatewayError: nothing to retry."
    )


def test_bulk_discard_and_class_filter(conn: psycopg.Connection) -> None:
    reports = [add_job(conn, "failed", class_name="app:Report")[1] for _ in range(3)]
    kept = add_job(conn, "failed", class_name="app:Send")[1]
    client = client_on(conn)
    message = flash(client, submit(client, "/jobs/failed?class=app:Report", "/failed/discard-all"))
    assert message == "success: Discarded 3 failed jobs matching class app:Report."
    assert [state_of(conn, j) for j in reports] == [None, None, None]
    assert state_of(conn, kept) == "failed"
    message = flash(client, submit(client, "/jobs/failed", "/failed/discard-all"))
    assert message == "success: Discarded 1 failed jobs."


def test_bulk_actions_take_the_text_filter(conn: psycopg.Connection) -> None:
    _, needle = add_job(conn, "failed", args=["a 100%_needle"])
    _, other = add_job(conn, "failed", args=["a 100 needle"])  # % and _ are literal, not wildcards
    client = client_on(conn)
    page = client.get("/jobs/failed?q=100%25_NEEDLE").text
    assert "These filters match 1 failed jobs" in page
    message = flash(client, submit(client, "/jobs/failed?q=100%25_NEEDLE", "/failed/retry-all"))
    assert message == "success: Retried 1 failed jobs matching arguments with 100%_NEEDLE."
    assert state_of(conn, needle) == "ready"
    assert state_of(conn, other) == "failed"


def test_pause_twice(conn: psycopg.Connection) -> None:
    add_job(conn, "ready", queue="mail")
    client = client_on(conn)
    fields = form_fields(client.get("/queues").text, "/queues/pause")[0]
    assert flash(client, client.post("/queues/pause", data=fields)).startswith("success: Paused")
    again = flash(client, client.post("/queues/pause", data=fields))
    assert again == "info: Queue mail was already paused: nothing done."
    assert conn.execute("SELECT queue_name FROM pgjobs_pauses").fetchall() == [("mail",)]
    resume = form_fields(client.get("/queues").text, "/queues/resume")[0]
    assert flash(client, client.post("/queues/resume", data=resume)).startswith("success: Resumed")
    again = flash(client, client.post("/queues/resume", data=resume))
    assert again == "info: Queue mail was already not paused: nothing done."


@pytest.fixture
def nightly(conn: psycopg.Connection) -> str:
    conn.execute(
        "INSERT INTO pgjobs_recurring_tasks (key, schedule, class_name, arguments, queue_name) "
        "VALUES ('nightly', 'every day at 3am', %s, %s, 'reports')",
        [SendWelcomeEmail.job_name, json.dumps({"args": [5], "kwargs": {}})],
    )
    return "nightly"


def test_run_now_once_per_page(conn: psycopg.Connection, nightly: str) -> None:
    client = client_on(conn)
    fields = form_fields(client.get("/recurring").text, "/recurring/run")[0]
    message = flash(client, client.post("/recurring/run", data=fields))
    match = re.fullmatch(r"success: Enqueued task nightly now: job ([0-9a-f-]{36})\.", message)
    assert match is not None, message
    row = conn.execute(
        "SELECT j.job_id::text, j.queue_name, j.arguments, e.manual FROM pgjobs_jobs j "
        "JOIN pgjobs_recurring_executions e ON e.job_id = j.id"
    ).fetchall()
    assert row == [(match.group(1), "reports", {"args": [5], "kwargs": {}}, True)]
    again = flash(client, client.post("/recurring/run", data=fields))  # the double click
    assert again.startswith("info: Task nightly was already run from this page")
    assert conn.execute("SELECT count(*) FROM pgjobs_jobs").fetchone() == (1,)
    # The page, reloaded, links the run's job and runs the task again.
    page = client.get("/recurring").text
    assert f"/job/{match.group(1)}" in page
    fresh = form_fields(page, "/recurring/run")[0]
    assert flash(client, client.post("/recurring/run", data=fresh)).startswith("success: Enqueued")
    assert conn.execute("SELECT count(*) FROM pgjobs_jobs").fetchone() == (2,)


def test_run_now_of_an_unknown_task(conn: psycopg.Connection, nightly: str) -> None:
    client = client_on(conn)
    fields = form_fields(client.get("/recurring").text, "/recurring/run")[0]
    message = flash(client, client.post("/recurring/run", data={**fields, "key": "nightli"}))
    assert message == "error: no recurring task 'nightli'; did you mean 'nightly'?"
    conn.execute("UPDATE pgjobs_recurring_tasks SET class_name = 'nowhere:Missing'")
    message = flash(client, client.post("/recurring/run", data=fields))
    assert message.startswith("error: job class 'nowhere:Missing'")
    assert conn.execute("SELECT count(*) FROM pgjobs_recurring_executions").fetchone() == (0,)


# -- waiting jobs: discard ready, scheduled, blocked; run scheduled now -------------------------


@pytest.mark.parametrize("state", ["ready", "scheduled", "blocked"])
def test_discard_a_waiting_job_then_again(conn: psycopg.Connection, state: str) -> None:
    _, job = add_job(conn, state)
    client = client_on(conn)
    fields = form_fields(client.get(f"/jobs/{state}").text, "/waiting/discard")[0]
    first = client.post("/waiting/discard", data=fields)
    assert flash(client, first) == f"success: Discarded job {job}."
    assert state_of(conn, job) == "discarded"
    row = conn.execute("SELECT finished_at = discarded_at FROM pgjobs_jobs").fetchone()
    assert row == (True,)
    again = flash(client, client.post("/waiting/discard", data=fields))
    message = f"info: Job {job} is not ready, scheduled or blocked (it is discarded): nothing done."
    assert again == message


def test_discard_from_the_job_page_of_a_job_a_worker_claimed(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "ready")
    client = client_on(conn)
    fields = form_fields(client.get(f"/job/{job}").text, "/waiting/discard")[0]
    conn.execute("DELETE FROM pgjobs_ready_executions")  # a worker claims it meanwhile
    conn.execute(
        "INSERT INTO pgjobs_claimed_executions (job_id, process_id) "
        "SELECT id, 0 FROM pgjobs_jobs WHERE job_id = %s",
        [job],
    )
    message = flash(client, client.post("/waiting/discard", data=fields))
    assert message == (
        f"info: Job {job} is not ready, scheduled or blocked (it is in progress): nothing done."
    )
    assert state_of(conn, job) == "claimed"


def test_dispatch_one_then_again(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "scheduled", at=datetime.now(UTC) + timedelta(hours=1))
    client = client_on(conn)
    response = submit(client, f"/job/{job}", "/waiting/dispatch")
    assert response.headers["location"] == f"/job/{job}"
    assert flash(client, response) == f"success: Dispatched job {job}: it is ready now."
    assert state_of(conn, job) == "ready"
    fields = form_fields(client.get("/jobs/scheduled").text, "/waiting/dispatch")
    assert fields == []  # nothing scheduled is left to run now


def test_bulk_discard_and_dispatch_take_the_filters(conn: psycopg.Connection) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    jobs = [add_job(conn, "scheduled", queue="mail", at=soon)[1] for _ in range(3)]
    other = add_job(conn, "scheduled", queue="other", at=soon)[1]
    ready = [add_job(conn, "ready", queue="mail")[1] for _ in range(2)]
    client = client_on(conn)
    page = client.get("/jobs/scheduled?queue=mail").text
    assert "Run all scheduled jobs matching these filters now" in page
    message = flash(client, submit(client, "/jobs/scheduled?queue=mail", "/waiting/dispatch-all"))
    assert message == "success: Dispatched 3 scheduled jobs matching queue mail."
    assert [state_of(conn, j) for j in jobs] == ["ready"] * 3
    assert state_of(conn, other) == "scheduled"
    fields = form_fields(client.get("/jobs/ready?queue=mail").text, "/waiting/discard-all")[0]
    message = flash(client, client.post("/waiting/discard-all", data=fields))
    assert message == "success: Discarded 5 ready jobs matching queue mail."
    assert [state_of(conn, j) for j in ready] == ["discarded"] * 2
    assert "/waiting/discard-all" not in client.get("/jobs/ready?queue=mail").text
    again = flash(client, client.post("/waiting/discard-all", data=fields))  # a double click
    assert again == "info: No ready jobs matching queue mail: nothing to discard."


def test_bulk_discard_needs_a_waiting_state(conn: psycopg.Connection) -> None:
    add_job(conn, "ready")
    client = client_on(conn)
    fields = form_fields(client.get("/jobs/ready").text, "/waiting/discard-all")[0]
    bad = flash(client, client.post("/waiting/discard-all", data={**fields, "state": "failed"}))
    assert bad == "error: Give the state: ready, scheduled or blocked."


# -- cancelling: waiting jobs never run, running ones are asked to stop -------------------------


def _cancel_columns(conn: psycopg.Connection, job: object) -> tuple[object, ...] | None:
    """(finished = cancelled, cancel requested, discarded) of a job."""
    return conn.execute(
        "SELECT finished_at = cancelled_at, cancel_requested_at IS NOT NULL, discarded_at "
        "FROM pgjobs_jobs WHERE job_id = %s",
        [job],
    ).fetchone()


@pytest.mark.parametrize("state", ["ready", "scheduled", "blocked"])
def test_cancel_a_waiting_job_from_its_page_then_again(
    conn: psycopg.Connection, state: str
) -> None:
    _, job = add_job(conn, state)
    client = client_on(conn)
    page = client.get(f"/job/{job}").text
    assert "Cancel this " + state + " job? It is finished as cancelled without running." in page
    fields = form_fields(page, "/job/cancel")[0]
    response = client.post("/job/cancel", data=fields)
    assert response.headers["location"] == f"/job/{job}"
    assert flash(client, response) == f"success: Cancelled job {job}: it will not run."
    assert state_of(conn, job) == "cancelled"
    assert _cancel_columns(conn, job) == (True, True, None)
    page = client.get(f"/job/{job}").text
    assert '<span class="badge state-cancelled">cancelled</span>' in page
    assert 'action="/job/cancel"' not in page  # nothing left to cancel
    again = flash(client, client.post("/job/cancel", data=fields))  # the double click
    assert again == f"info: Job {job} was already cancelled: nothing done."


def test_cancel_a_running_job_asks_it_to_stop(conn: psycopg.Connection) -> None:
    worker = add_process(conn)
    _, job = add_job(conn, "in_progress", process_id=worker)
    _, other = add_job(conn, "in_progress", process_id=worker)
    client = client_on(conn)
    response = submit(client, "/jobs/in_progress", "/job/cancel", {"job_id": str(job)})
    assert response.headers["location"] == "/jobs/in_progress"
    assert flash(client, response) == (
        f"success: Asked job {job} to stop: it is running, and is cancelled when it next checks "
        "for a cancel request."
    )
    assert state_of(conn, job) == "claimed"  # its worker ends it: the request is all we do
    assert _cancel_columns(conn, job) == (None, True, None)
    assert _cancel_columns(conn, other) == (None, False, None)
    listed = client.get("/jobs/in_progress").text
    assert listed.count('<span class="badge stopping"') == 1
    page = client.get(f"/job/{job}").text
    assert "Asked to stop" in page and "<dt>Cancel requested</dt>" in page
    assert "Ask this running job to stop?" in page  # asking again is allowed (and harmless)


@pytest.mark.parametrize(("state", "shown"), [("finished", "finished"), ("failed", "failed"),
                                              ("discarded", "discarded")])  # fmt: skip
def test_cancel_a_job_that_has_ended(conn: psycopg.Connection, state: str, shown: str) -> None:
    _, ready = add_job(conn, "ready")
    _, job = add_job(conn, state)
    client = client_on(conn)
    fields = form_fields(client.get(f"/job/{ready}").text, "/job/cancel")[0]
    message = flash(client, client.post("/job/cancel", data={**fields, "job_id": str(job)}))
    assert message == f"info: Job {job} has ended ({shown}): not cancelled."
    assert _cancel_columns(conn, job)[1] is False  # type: ignore[index]
    gone = uuid.uuid4()
    message = flash(client, client.post("/job/cancel", data={**fields, "job_id": str(gone)}))
    assert message == f"info: Job {gone} no longer exists: nothing done."
    bad = flash(client, client.post("/job/cancel", data={**fields, "job_id": "nope"}))
    assert bad == "error: No job id given."
    assert state_of(conn, ready) == "ready"


def test_bulk_cancel_of_waiting_jobs_takes_the_filters(conn: psycopg.Connection) -> None:
    mail = [add_job(conn, "ready", queue="mail", args=[i])[1] for i in range(3)]
    other = add_job(conn, "ready", queue="other")[1]
    scheduled = add_job(conn, "scheduled", queue="mail")[1]
    client = client_on(conn)
    client.app.state.dashboard.batch_size = 2  # type: ignore[attr-defined]
    page = client.get("/jobs/ready?queue=mail").text
    assert "Cancel all ready jobs matching these filters? They are finished as cancelled" in page
    message = flash(client, submit(client, "/jobs/ready?queue=mail", "/waiting/cancel-all"))
    assert message == "success: Cancelled 3 ready jobs matching queue mail."
    assert [state_of(conn, j) for j in mail] == ["cancelled"] * 3
    assert state_of(conn, other) == "ready" and state_of(conn, scheduled) == "scheduled"
    finished = client.get("/jobs/finished").text
    assert finished.count('<span class="badge state-cancelled">cancelled</span>') == 3
    fields = form_fields(client.get("/jobs/ready").text, "/waiting/cancel-all")[0]
    again = flash(client, client.post("/waiting/cancel-all", data={**fields, "queue": "mail"}))
    assert again == "info: No ready jobs matching queue mail: nothing to cancel."
    bad = flash(client, client.post("/waiting/cancel-all", data={**fields, "state": "running"}))
    assert bad == "error: Give the state: ready, scheduled or blocked."
    assert state_of(conn, other) == "ready"


def test_bulk_cancel_of_blocked_jobs(conn: psycopg.Connection) -> None:
    blocked = [add_job(conn, "blocked", queue="imports", concurrency_key="feed")[1]
               for _ in range(2)]  # fmt: skip
    other = add_job(conn, "blocked", queue="other", concurrency_key="feed")[1]
    client = client_on(conn)
    page = client.get("/jobs/blocked?queue=imports").text
    assert "Cancel all blocked jobs matching these filters? They are finished as cancelled" in page
    message = flash(client, submit(client, "/jobs/blocked?queue=imports", "/waiting/cancel-all"))
    assert message == "success: Cancelled 2 blocked jobs matching queue imports."
    assert [state_of(conn, j) for j in blocked] == ["cancelled"] * 2
    assert [_cancel_columns(conn, j) for j in blocked] == [(True, True, None)] * 2
    assert state_of(conn, other) == "blocked"
    assert conn.execute("SELECT count(*) FROM pgjobs_blocked_executions").fetchone() == (1,)
    fields = form_fields(client.get("/jobs/blocked").text, "/waiting/cancel-all")[0]
    again = flash(client, client.post("/waiting/cancel-all", data={**fields, "queue": "imports"}))
    assert again == "info: No blocked jobs matching queue imports: nothing to cancel."


def test_bulk_cancel_of_running_jobs_asks_them_to_stop(conn: psycopg.Connection) -> None:
    one, two = add_process(conn), add_process(conn)
    reports = [add_job(conn, "in_progress", class_name="app:Report", process_id=one)[1]
               for _ in range(2)]  # fmt: skip
    report_on_two = add_job(conn, "in_progress", class_name="app:Report", process_id=two)[1]
    send = add_job(conn, "in_progress", class_name="app:Send", process_id=one)[1]
    client = client_on(conn)
    # With a process filter the bulk action is not offered: it takes queue, class and text only.
    assert "/running/cancel-all" not in client.get(f"/jobs/in_progress?process={one}").text
    page = "/jobs/in_progress?class=app:Report"
    assert "Cancel all running jobs matching these filters" in client.get(page).text
    message = flash(client, submit(client, page, "/running/cancel-all"))
    assert message == "success: Asked 3 running jobs matching class app:Report to stop."
    asked = [_cancel_columns(conn, j) for j in [*reports, report_on_two, send]]
    assert asked == [(None, True, None)] * 3 + [(None, False, None)]
    assert {state_of(conn, j) for j in [*reports, report_on_two, send]} == {"claimed"}
    fields = form_fields(client.get("/jobs/in_progress").text, "/running/cancel-all")[0]
    none = flash(client, client.post("/running/cancel-all", data={**fields, "queue": "nope"}))
    assert none == "info: No running jobs matching queue nope: nothing to cancel."


def test_no_cancel_buttons_in_read_only_mode(conn: psycopg.Connection) -> None:
    _, ready = add_job(conn, "ready")
    _, running = add_job(conn, "in_progress")
    set_control(conn, running, progress={"done": 1, "total": 2, "message": None, "at": None})
    client = client_on(conn, read_only=True)
    for path in ("/jobs/ready", "/jobs/in_progress", f"/job/{ready}", f"/job/{running}"):
        page = client.get(path).text
        assert "cancel" not in page.lower().replace("cancelled", ""), path
    assert "<progress" in client.get("/jobs/in_progress").text
