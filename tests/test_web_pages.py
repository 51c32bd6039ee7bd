"""The dashboard's pages (server side): what each shows, filters, keyset pages, the prefix mount."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from pgjobs.config.queue import Config
from pgjobs.db.database import Database
from pgjobs.db.names import sql
from pgjobs.operations import counts, lists
from pgjobs.web import create_app, throughput
from tests.web_helpers import (
    PASSWORD,
    USER,
    add_job,
    add_process,
    app_on,
    basic,
    client_on,
    flash,
    set_control,
    submit,
)


def cells(page: str) -> list[str]:
    """The first column's job links of a job list, in order (public ids)."""
    return re.findall(r'<td><a href="[^"]*/job/([0-9a-f-]{36})" class="class">', page)


# -- overview ------------------------------------------------------------------------------------


def test_overview_counts_chart_and_latency(conn: psycopg.Connection) -> None:
    worker = add_process(conn)
    for state in ("ready", "ready", "scheduled", "in_progress", "blocked", "failed", "finished"):
        add_job(
            conn,
            state,
            queue="mail",
            process_id=worker,
            created_at=datetime.now(UTC) - timedelta(minutes=3),
        )
    found = counts.state_counts(conn, None)
    assert {k: (v.value, v.kind) for k, v in found.items()} == {
        "ready": (2, "exact"), "scheduled": (1, "exact"), "in_progress": (1, "exact"),
        "blocked": (1, "exact"), "failed": (1, "exact"), "finished": (1, "exact"),
    }  # fmt: skip
    page = client_on(conn).get("/").text
    assert re.search(r'card-value">2</span>\s*<span class="card-label">Ready', page)
    assert re.search(r'card-value">1</span>\s*<span class="card-label">Finished', page)
    assert "<svg" in page and "1 processed, 1 failed" in page
    assert re.search(r">mail</a></td>\s*<td class=\"num\">2</td>\s*<td class=\"num\">3 min", page)


def test_counts_past_the_cap_are_estimates(conn: psycopg.Connection) -> None:
    for _ in range(5):
        add_job(conn, "failed")
        add_job(conn, "finished")
    found = counts.state_counts(conn, None, cap=3)
    assert found["failed"] == counts.Count(3, "at_least")  # never analyzed: a lower bound
    conn.execute("ANALYZE pgjobs_failed_executions")
    conn.execute("ANALYZE pgjobs_jobs")
    found = counts.state_counts(conn, None, cap=3)
    assert found["failed"] == counts.Count(5, "estimate")
    assert found["finished"] == counts.Count(5, "estimate")  # jobs (10) minus the other states
    assert found["ready"] == counts.Count(0)


def test_counts_formatting() -> None:
    from pgjobs.web import fmt

    assert fmt.count(counts.Count(1234)) == "1,234"
    assert fmt.count(counts.Count(1_234_567, "estimate")) == "≈ 1.2 M"
    assert fmt.count(counts.Count(48_000, "estimate")) == "≈ 48 k"
    assert fmt.count(counts.Count(10_000, "at_least")) == "10,000+"
    assert fmt.duration(0.4) == "0 s" and fmt.duration(192) == "3 min 12 s"
    assert fmt.duration(7500) == "2 h 5 min" and fmt.duration(3 * 86400 + 3600) == "3 d 1 h"


def test_throughput_per_minute(conn: psycopg.Connection) -> None:
    now = datetime(2026, 1, 5, 12, 30, 20, tzinfo=UTC)
    minute = now.replace(second=0)
    add_job(conn, "finished", created_at=now - timedelta(hours=3), at=now - timedelta(hours=3))
    # Enqueued 16 minutes before the hour, finished in it: outside the walk (the approximation).
    add_job(
        conn,
        "finished",
        created_at=minute - timedelta(minutes=76),
        at=minute - timedelta(minutes=50),
    )
    for _ in range(3):
        add_job(
            conn,
            "finished",
            created_at=minute - timedelta(minutes=70),
            at=minute - timedelta(minutes=5),
        )
    add_job(
        conn, "finished", created_at=minute - timedelta(minutes=2), at=minute + timedelta(seconds=5)
    )
    add_job(
        conn,
        "discarded",
        created_at=minute - timedelta(minutes=2),
        at=minute - timedelta(minutes=5),
    )
    add_job(conn, "failed", at=minute - timedelta(minutes=5))
    add_job(conn, "failed", at=minute - timedelta(hours=2))
    flow = throughput.throughput(conn, None, now)
    assert len(flow.minutes) == 60 and flow.minutes[-1].start == minute
    by_start = {m.start: (m.processed, m.failed) for m in flow.minutes if m.processed or m.failed}
    assert by_start == {minute - timedelta(minutes=5): (3, 2), minute: (1, 0)}
    assert flow.walked_since is None
    # The newest 4 ids: the job finished at 12:30, the discarded one and the two failed ones.
    capped = throughput.throughput(conn, None, now, cap=4)
    assert (capped.processed, capped.walked_since) == (1, minute - timedelta(minutes=2))


def test_first_id_since_is_a_binary_search(conn: psycopg.Connection) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [10, 11, 15, 40, 41, 42, 100, 350, 351, 1000]
    for i, ident in enumerate(ids):
        add_job(conn, "finished", job_id=ident, created_at=base + timedelta(minutes=i))
    statement = sql(throughput.FIRST_ID_SINCE, None)
    for i, ident in enumerate(ids):
        row = conn.execute(
            statement, {"since": base + timedelta(minutes=i, seconds=-30)}
        ).fetchone()
        assert row is not None and row[0] <= ident and (i == 0 or row[0] > ids[i - 1]), (i, row)
    row = conn.execute(statement, {"since": base + timedelta(days=1)}).fetchone()
    assert row == (1001, 1000)  # nothing since: past the newest id


# -- queues --------------------------------------------------------------------------------------


def test_queues_page_and_pause_resume(conn: psycopg.Connection) -> None:
    add_job(conn, "ready", queue="mail", created_at=datetime.now(UTC) - timedelta(seconds=90))
    add_job(conn, "ready", queue="reports")
    client = client_on(conn)
    page = client.get("/queues").text
    assert ">mail</a>" in page and ">reports</a>" in page and re.search(r">1 min 3\d s<", page)
    message = flash(client, submit(client, "/queues", "/queues/pause", {"queue": "mail"}))
    assert message == "success: Paused queue mail: workers skip it until it is resumed."
    page = client.get("/queues").text
    assert re.search(r'<tr class="paused">\s*<td><a[^>]*>mail</a>', page)
    message = flash(client, submit(client, "/queues", "/queues/resume", {"queue": "mail"}))
    assert message == "success: Resumed queue mail."
    assert conn.execute("SELECT count(*) FROM pgjobs_pauses").fetchone() == (0,)


def test_queue_size_past_the_cap(conn: psycopg.Connection) -> None:
    for _ in range(6):
        add_job(conn, "ready", queue="big")
    conn.execute("ANALYZE pgjobs_ready_executions")
    (stats,) = counts.queue_stats(conn, None, cap=4, window=2)
    assert stats.size == counts.Count(6, "estimate") and stats.oldest is not None


# -- job lists -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state", ["ready", "scheduled", "in_progress", "blocked", "failed", "finished"]
)
def test_each_state_lists_its_jobs_newest_first(conn: psycopg.Connection, state: str) -> None:
    worker = add_process(conn)
    mine = [
        add_job(conn, state, process_id=worker, at=datetime.now(UTC) + timedelta(seconds=i))[1]
        for i in range(3)
    ]
    for other in ("ready", "scheduled", "in_progress", "blocked", "failed", "finished"):
        if other != state:
            add_job(conn, other, process_id=worker)
    page = client_on(conn).get(f"/jobs/{state}")
    assert page.status_code == 200
    assert cells(page.text) == [str(j) for j in reversed(mine)]


def test_unknown_state_is_404(conn: psycopg.Connection) -> None:
    assert client_on(conn).get("/jobs/everything").status_code == 404


def test_filters(conn: psycopg.Connection) -> None:
    _, a = add_job(conn, "failed", queue="mail", class_name="app:Send", args=["alice@example.com"],
                   error="smtplib.SMTPException")  # fmt: skip
    _, b = add_job(conn, "failed", queue="mail", class_name="app:Report", args=["bob"])
    _, c = add_job(conn, "failed", queue="reports", class_name="app:Send", args=["carol"])
    client = client_on(conn)

    def shown(**params: str) -> list[str]:
        return cells(client.get("/jobs/failed", params=params).text)

    assert shown() == [str(c), str(b), str(a)]
    assert shown(queue="mail") == [str(b), str(a)]
    assert shown(**{"class": "app:Send"}) == [str(c), str(a)]
    assert shown(q="ALICE") == [str(a)]
    assert shown(error="SMTPException") == [str(a)]
    assert shown(error="smtplib.SMTPException", queue="mail") == [str(a)]
    assert shown(error="PaymentError") == [str(c), str(b)]
    assert shown(queue="nope") == []


def test_keyset_pages_over_http(conn: psycopg.Connection) -> None:
    jobs = [
        add_job(conn, "finished", at=datetime.now(UTC) - timedelta(seconds=i))[1]
        for i in range(lists.PAGE_SIZE + 5)
    ]
    client = client_on(conn)
    first = client.get("/jobs/finished").text
    assert cells(first) == [str(j) for j in reversed(jobs)][: lists.PAGE_SIZE]
    older = re.search(r'href="([^"]*)">Older', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert cells(second) == [str(j) for j in reversed(jobs)][lists.PAGE_SIZE :]
    assert "End of the list." in second and "Older" not in second


def test_failed_pages_by_failure_time(conn: psycopg.Connection) -> None:
    # Failure order differs from enqueue order; ties on the time are broken by id.
    late = add_job(conn, "failed", at=datetime.now(UTC))[1]
    early = add_job(conn, "failed", at=datetime.now(UTC) - timedelta(hours=1))[1]
    tie = [
        add_job(conn, "failed", at=datetime.now(UTC) - timedelta(minutes=5))[1] for _ in range(3)
    ]
    expected = [late, *reversed(tie), early]
    seen, cursor = [], None
    while True:
        page = lists.page(conn, None, "failed", lists.Filters(), cursor, limit=2)
        seen += [row.job_id for row in page.rows]
        if page.next is None:
            break
        cursor = lists.Cursor.decode(page.next.encode())
    assert seen == expected


def test_a_rare_filter_searches_a_bounded_window(conn: psycopg.Connection) -> None:
    target = add_job(conn, "finished", args=["needle"])[1]
    for _ in range(7):
        add_job(conn, "finished", args=["hay"])
    search = lists.Filters(text="needle")
    first = lists.page(conn, None, "finished", search, limit=2, window=3)
    assert first.rows == [] and not first.exhausted and first.searched == 3
    second = lists.page(conn, None, "finished", search, first.next, limit=2, window=3)
    assert second.rows == [] and not second.exhausted
    third = lists.page(conn, None, "finished", search, second.next, limit=2, window=3)
    assert [r.job_id for r in third.rows] == [target] and third.exhausted and third.next is None
    # Over HTTP: the page says how far it looked and offers to look further.
    page = client_on(conn).get("/jobs/finished", params={"q": "needle"}).text
    assert cells(page) == [str(target)]
    assert "Each page looks at up to 10,000" in page


def test_in_progress_by_process_and_finished_by_class(conn: psycopg.Connection) -> None:
    one, two = add_process(conn), add_process(conn)
    _, mine = add_job(conn, "in_progress", process_id=one)
    add_job(conn, "in_progress", process_id=two)
    client = client_on(conn)
    assert cells(client.get("/jobs/in_progress", params={"process": str(one)}).text) == [str(mine)]
    _, report = add_job(conn, "finished", class_name="app:Report")
    _, dropped = add_job(conn, "discarded", class_name="app:Report")
    add_job(conn, "finished", class_name="app:Send")
    page = client.get("/jobs/finished", params={"class": "app:Report"}).text
    assert cells(page) == [str(dropped), str(report)] and "state-discarded" in page


# -- job detail ----------------------------------------------------------------------------------


def test_job_detail(conn: psycopg.Connection) -> None:
    worker = add_process(conn, metadata={"queues": ["mail"], "threads": 2})
    ident, job = add_job(conn, "in_progress", queue="mail", class_name="app:Send", priority=-5,
                         args=[{"to": "a@example.com"}], process_id=worker,
                         concurrency_key="user:7")  # fmt: skip
    conn.execute(
        "INSERT INTO pgjobs_job_errors (job_id, attempt, exception_class, message, backtrace, "
        "hostname, pid) VALUES (%s, 1, 'smtplib.SMTPException', 'timeout', "
        "'Traceback (most recent call last):\n  File \"send.py\", line 3', 'host-9', 99)",
        [ident],
    )
    conn.execute(
        "INSERT INTO pgjobs_recurring_executions (task_key, run_at, job_id) VALUES "
        "('hourly_mail', now(), %s)",
        [ident],
    )
    page = client_on(conn).get(f"/job/{job}").text
    assert "state-in_progress" in page and ">app:Send</a>" in page
    assert "mail" in page and "-5" in page and "user:7" in page
    assert "&#34;to&#34;: &#34;a@example.com&#34;" in page  # pretty JSON, escaped
    assert "smtplib.SMTPException" in page and "File &#34;send.py&#34;, line 3" in page
    assert "host-9" in page and "hourly_mail" in page and "host-1, pid 4321" in page
    assert "Attempts that raised (1)" in page


def test_failed_job_detail_and_unknown_jobs(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "failed", error="myapp.GatewayError", message="card declined")
    client = client_on(conn)
    page = client.get(f"/job/{job}").text
    assert "<strong>myapp.GatewayError</strong>: card declined" in page
    assert "Traceback (most recent call last)" in page and "host-1, pid 4321" in page
    assert 'action="/failed/retry"' in page
    assert client.get(f"/job/{uuid.uuid4()}").status_code == 404
    assert client.get("/job/not-a-uuid").status_code == 404


# -- processes and recurring tasks ---------------------------------------------------------------


def test_processes_page(conn: psycopg.Connection) -> None:
    supervisor = add_process(conn, "supervisor", metadata={"app": "myapp"})
    worker = add_process(conn, metadata={"queues": ["critical", "default"], "threads": 5},
                         supervisor_id=supervisor)  # fmt: skip
    add_process(conn, heartbeat=datetime.now(UTC) - timedelta(minutes=20))
    add_job(conn, "in_progress", process_id=worker)
    add_job(conn, "in_progress", process_id=worker)
    page = client_on(conn).get("/processes").text
    assert "critical, default" in page and ">5</td>" in page and "app: myapp" in page
    assert f'process={worker}">2</a>' in page
    assert page.count('<span class="badge dead">dead</span>') == 1
    assert "20 min" in page


def test_recurring_page(conn: psycopg.Connection) -> None:
    ident, job = add_job(conn, "finished")
    conn.execute(
        "INSERT INTO pgjobs_recurring_tasks (key, schedule, class_name, queue_name, description) "
        "VALUES ('nightly', 'every day at 3am', 'app:Report', 'reports', 'The nightly report')"
    )
    conn.execute(
        "INSERT INTO pgjobs_recurring_executions (task_key, run_at, job_id) "
        "VALUES ('nightly', now() - interval '1 day', %s)",
        [ident],
    )
    page = client_on(conn).get("/recurring").text
    assert "nightly" in page and "every day at 3am" in page and "app:Report" in page
    assert f"/job/{job}" in page and "The nightly report" in page
    assert "03:00:00 UTC" in page  # the next run


# -- mounting ------------------------------------------------------------------------------------


def test_mounted_under_a_prefix(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "failed", queue="payments")
    outer = Starlette(routes=[Mount("/admin/jobs", app=app_on(conn))])
    client = TestClient(outer, headers=basic(), follow_redirects=False)
    page = client.get("/admin/jobs/").text
    links = re.findall(r'(?:href|action|src)="([^"]*)"', page)
    assert links and all(link.startswith("/admin/jobs/") for link in links), links
    response = submit(client, "/admin/jobs/jobs/failed", "/failed/retry")
    assert response.headers["location"] == "/admin/jobs/jobs/failed"
    assert "Path=/admin/jobs/;" in response.headers["set-cookie"]
    assert flash(client, response).startswith(f"success: Retried job {job}")
    assert client.get("/admin/jobs/static/pgjobs.css").status_code == 200
    for link in set(re.findall(r'href="([^"]*)"', client.get("/admin/jobs/jobs/ready").text)):
        assert client.get(link.replace("&amp;", "&")).status_code == 200, link


def test_behind_a_proxy_root_path(conn: psycopg.Connection) -> None:
    client = TestClient(app_on(conn), headers=basic(), root_path="/ops")
    page = client.get("/ops/queues").text
    assert 'href="/ops/static/pgjobs.css"' in page and 'href="/ops/jobs/failed"' in page


def test_database_down_is_a_503_page(conn: psycopg.Connection) -> None:
    broken = psycopg.connect(conn.info.dsn)
    client = TestClient(app_on(broken), headers=basic())
    broken.close()
    page = client.get("/")
    assert page.status_code == 503 and "Something is wrong" in page.text


@pytest.mark.committed
def test_on_the_pool_with_commits(db: Database) -> None:
    """The real path: pooled autocommit connections, bulk actions committed batch by batch."""
    with db.connection() as conn:
        for i in range(7):
            add_job(conn, "failed", queue="payments", args=[i])
    app = create_app(db, username=USER, password=PASSWORD, config=Config())
    app.state.dashboard.batch_size = 3
    client = TestClient(app, headers=basic(), follow_redirects=False)
    assert client.get("/").status_code == 200
    message = flash(client, submit(client, "/jobs/failed", "/failed/retry-all"))
    assert message == "success: Retried 7 failed jobs."
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM pgjobs_ready_executions").fetchone() == (7,)


def test_failed_jobs_a_bulk_action_would_touch(conn: psycopg.Connection) -> None:
    from pgjobs.web import pages

    for _ in range(4):
        add_job(conn, "failed", queue="payments", error="app.GatewayError")
    add_job(conn, "failed", queue="mail")
    payments = lists.Filters(queue="payments", error="GatewayError")
    assert pages._failed_matching(conn, None, payments, counts.Count(5)) == counts.Count(4)
    everything = counts.Count(5)
    assert pages._failed_matching(conn, None, lists.Filters(), everything) is everything
    conn.execute("ANALYZE pgjobs_failed_executions")
    conn.execute("ANALYZE pgjobs_jobs")
    # Past the count cap (a big failed table): the planner's estimate, shown with ≈.
    estimate = pages._failed_matching(conn, None, payments, counts.Count(5, "estimate"))
    assert estimate.kind == "estimate" and 1 <= estimate.value <= 5


def test_the_job_page_says_what_a_waiting_job_waits_for(conn: psycopg.Connection) -> None:
    from tests.web_helpers import add_job, client_on

    _, holder = add_job(conn, "in_progress", concurrency_key="store-7")
    _, blocked = add_job(conn, "blocked", concurrency_key="store-7")
    conn.execute("UPDATE pgjobs_jobs SET concurrency_limit = 1 WHERE concurrency_key = 'store-7'")
    conn.execute(
        "INSERT INTO pgjobs_semaphores (key, value, expires_at) VALUES ('store-7', 1, now())"
    )
    _, scheduled = add_job(conn, "scheduled")
    _, paused = add_job(conn, "ready", queue="held")
    conn.execute("INSERT INTO pgjobs_pauses (queue_name) VALUES ('held')")
    client = client_on(conn)
    page = client.get(f"/job/{blocked}").text
    assert "Waiting for" in page and "store-7" in page and "1 of 1 taken" in page
    assert f'href="/job/{holder}"' in page and "The block expires" in page
    assert "Its time:" in client.get(f"/job/{scheduled}").text
    assert "is paused (since" in client.get(f"/job/{paused}").text
    assert "Waiting for" not in client.get(f"/job/{holder}").text


# -- job control: progress, steps, results, cancelled jobs ---------------------------------------


def test_the_job_page_shows_progress_steps_and_a_cancel_request(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "in_progress", class_name="app:Import")
    at = datetime.now(UTC) - timedelta(seconds=30)
    set_control(
        conn,
        job,
        progress={"done": 400, "total": 1000, "message": "rows <b>", "at": at.isoformat()},
        checkpoint={"completed": ["fetch", "parse"], "step": "load", "cursor": ("row", 399)},
        cancel_requested_at=datetime.now(UTC),
    )
    page = client_on(conn).get(f"/job/{job}").text
    assert '<progress max="1" value="0.4" aria-label="Progress">40%</progress>' in page
    assert "400 / 1,000 <strong>40%</strong> · rows &lt;b&gt;" in page
    assert "30 s ago" in page
    assert "<code>fetch</code>, <code>parse</code>" in page and "<code>load</code>" in page
    assert '<code class="cursor">(&#39;row&#39;, 399)</code>' in page  # the decoded tuple's repr
    assert '<span class="badge stopping">stopping</span> Asked to stop' in page
    assert "<h2>Result</h2>" not in page


def test_the_job_page_shows_the_result(conn: psycopg.Connection) -> None:
    from datetime import date

    from pgjobs.web import fmt

    _, job = add_job(conn, "finished")
    set_control(conn, job, result={"rows": 3, "on": date(2026, 1, 2)},
                progress={"done": 3, "total": None, "message": None, "at": None})  # fmt: skip
    client = client_on(conn)
    page = client.get(f"/job/{job}").text
    result = "{&#39;on&#39;: datetime.date(2026, 1, 2), &#39;rows&#39;: 3}"  # jsonb's key order
    assert f'<h2>Result</h2>\n<pre class="json result">{result}</pre>' in page
    assert '<progress aria-label="Progress"></progress>' in page  # no total: indeterminate
    assert "its last report" not in page  # no time reported
    _, big = add_job(conn, "finished")
    set_control(conn, big, result="x" * 5000)
    shown = re.search(r'<pre class="json result">([^<]*)</pre>', client.get(f"/job/{big}").text)
    assert shown is not None and len(html.unescape(shown.group(1))) == fmt.VALUE_WIDTH
    assert shown.group(1).startswith("&#39;xxx") and shown.group(1).endswith("x…")
    # A value this process cannot decode (an unknown tag): its stored JSON.
    conn.execute(
        """UPDATE pgjobs_jobs SET result = '{"__pgjobs__": "martian", "v": 1}' WHERE job_id = %s""",
        [big],
    )
    page = client.get(f"/job/{big}").text
    assert "&#34;__pgjobs__&#34;: &#34;martian&#34;" in page


def test_a_cancelled_job_is_shown_as_cancelled(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "cancelled", class_name="app:Report")
    _, done = add_job(conn, "finished", class_name="app:Report")
    _, dropped = add_job(conn, "discarded", class_name="app:Report")
    client = client_on(conn)
    page = client.get(f"/job/{job}").text
    assert '<h1>app:Report <span class="badge state-cancelled">cancelled</span>' in page
    assert "(cancelled)</dd>" in page and "<dt>Cancelled</dt>" in page
    assert 'href="/jobs/finished?class=app%3AReport"' in page  # listed among the finished
    assert 'action="/job/cancel"' not in page
    listed = client.get("/jobs/finished").text
    assert cells(listed) == [str(dropped), str(done), str(job)]
    badges = re.findall(r'<td class="detail">(.*?)</td>', listed)
    assert badges == [
        '<span class="badge state-discarded">discarded</span>',
        "",
        '<span class="badge state-cancelled">cancelled</span>',
    ]


def test_the_in_progress_list_shows_progress(conn: psycopg.Connection) -> None:
    worker = add_process(conn)
    _, counted = add_job(conn, "in_progress", process_id=worker)
    _, open_ended = add_job(conn, "in_progress", process_id=worker)
    _, silent = add_job(conn, "in_progress", process_id=worker)
    set_control(conn, counted, progress={"done": 2.5, "total": 10, "message": "step 2",
                                         "at": datetime.now(UTC).isoformat()})  # fmt: skip
    set_control(conn, open_ended, progress={"done": 7, "total": None, "message": None, "at": None},
                cancel_requested_at=datetime.now(UTC))  # fmt: skip
    page = client_on(conn).get("/jobs/in_progress").text
    assert cells(page) == [str(silent), str(open_ended), str(counted)]
    bars = re.findall(r'<td class="progress-cell">(.*?)</td>', page, re.S)
    assert bars[0] == ""
    assert '<progress aria-label="Progress"></progress>' in bars[1] and ">7</span>" in bars[1]
    assert 'class="badge stopping"' in bars[1]
    assert 'value="0.25"' in bars[2] and "2.5 / 10 <strong>25%</strong> · step 2" in bars[2]
    rows = lists.page(conn, None, "in_progress", lists.Filters()).rows
    assert [r.progress.done if r.progress else None for r in rows] == [None, 7, 2.5]
    # A job may report progress(None), or an infinite total: no bar, or no total, never a 500.
    set_control(conn, silent, progress={"done": None, "total": 10, "message": "?", "at": None})
    set_control(conn, counted, progress={"done": 3, "total": {"__pgjobs__": "float", "v": "inf"},
                                         "message": None, "at": None})  # fmt: skip
    page = client_on(conn).get("/jobs/in_progress").text
    bars = re.findall(r'<td class="progress-cell">(.*?)</td>', page, re.S)
    assert bars[0] == "" and '<progress aria-label="Progress"></progress>' in bars[2]
    assert client_on(conn).get(f"/job/{silent}").status_code == 200
    assert [r.cancel_requested_at is not None for r in rows] == [False, True, False]
    # Other lists read no progress.
    assert lists.page(conn, None, "finished", lists.Filters()).rows == []


def test_cancelled_jobs_are_not_processed_in_the_chart(conn: psycopg.Connection) -> None:
    now = datetime(2026, 1, 5, 12, 30, 20, tzinfo=UTC)
    minute = now.replace(second=0)
    for state in ("finished", "finished", "cancelled", "discarded"):
        add_job(conn, state, created_at=minute - timedelta(minutes=3), at=minute)
    flow = throughput.throughput(conn, None, now)
    assert (flow.minutes[-1].processed, flow.minutes[-1].failed) == (2, 1)


def test_the_job_page_of_a_job_waiting_for_its_rate_limit(conn: psycopg.Connection) -> None:
    from tests.web_helpers import add_job, client_on

    _, lined = add_job(conn, "blocked", concurrency_key="rate|partner-api")
    conn.execute(
        "INSERT INTO pgjobs_rate_limits (key, max_starts, period, starts, free_at)"
        " VALUES ('partner-api', 10, interval '1 second', ARRAY[now(), now()],"
        " now() + interval '1 second')"
    )
    page = client_on(conn).get(f"/job/{lined}").text
    assert "Waiting for" in page and "rate limit of key <strong>partner-api</strong>" in page
    assert "at most 10 starts per 1.0 s; 2 in the current window, 1 job in line" in page
    assert "The line moves next at" in page


def test_the_queues_page_lists_rate_limits(conn: psycopg.Connection) -> None:
    from tests.web_helpers import add_job, client_on

    add_job(conn, "blocked", concurrency_key="rate|partner-api")
    conn.execute(
        "INSERT INTO pgjobs_rate_limits (key, max_starts, period, starts, free_at)"
        " VALUES ('partner-api', 10, interval '1 second', ARRAY[now()], now() + interval '1 s')"
    )
    page = client_on(conn).get("/queues").text
    assert "<h2>Rate limits</h2>" in page
    assert re.search(r"<td>partner-api</td><td>10 per 1.0 s</td><td>1</td>", page)
    conn.execute("DELETE FROM pgjobs_rate_limits")
    assert "<h2>Rate limits</h2>" not in client_on(conn).get("/queues").text  # none in use
