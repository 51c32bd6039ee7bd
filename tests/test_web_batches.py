"""The dashboard's batch pages: the batches list with its progress bars, a batch's page (counts,
properties, callbacks, nested batches, its jobs by state with their dependencies), held jobs in
the job lists and on the job page.  Batches are written with ``pgjobs.batch(connection=conn)``
in the test's rolled-back transaction, and their jobs ended with the row changes a worker's
statements make (the triggers count them)."""

from __future__ import annotations

import html
import re
import uuid

import psycopg
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

import pgjobs
from pgjobs.operations import batches as ops
from pgjobs.web.pinned import PinnedDatabase
from pgjobs.workflows.info import read
from tests.web_helpers import add_job, app_on, basic, client_on, flash, form_fields, submit
from tests.workflow_helpers import fail, succeed
from tests.workflow_jobs import Callback, Part


def bar(page: str) -> list[tuple[str, str, str]]:
    """The outcome segments of the first progress bar on the page: (outcome, x, width)."""
    svg = re.search(r'<svg class="batch-bar".*?</svg>', page, re.S)
    assert svg is not None, page[:2000]
    found = re.findall(r'<rect class="(\w+)" x="([\d.]+)" y="0" width="([\d.]+)"', svg.group(0))
    return [f for f in found if f[0] != "pending"]


def listed(page: str) -> list[str]:
    """The batches of a batches page, in order (public ids)."""
    return re.findall(r'<td><a href="[^"]*/batches/([0-9a-f-]{36})" class="class">', page)


def job_rows(page: str) -> list[tuple[str, str]]:
    """A batch page's jobs, in order: (public id, state shown)."""
    return re.findall(
        r'<td><a href="[^"]*/job/([0-9a-f-]{36})" class="class">[^<]*</a>.*?</td>\s*'
        r'<td><span class="badge state-(\w+)">',
        page,
        re.S,
    )


# -- the batches list ----------------------------------------------------------------------------


def test_the_batches_list_newest_first_with_progress_bars(conn: psycopg.Connection) -> None:
    with pgjobs.batch(description="import a.csv", connection=conn) as batch:
        batch.add(Part.build("a"), Part.build("b"), Part.build("c"))
    a, b, _c = batch._jobs
    succeed(conn, a)
    fail(conn, b)
    with pgjobs.workflow(description="nightly", connection=conn) as wf:
        first = wf.add(Part.build("x"))
        wf.add(Part.build("y"), after=[first])
    client = client_on(conn)
    page = client.get("/batches")
    assert page.status_code == 200
    assert listed(page.text) == [str(wf.batch_id), str(batch.batch_id)]
    assert 'aria-current="page">Batches</a>' in page.text  # the nav link
    row = page.text.split(f"/batches/{batch.batch_id}")[1]
    # One third succeeded, one third failed, one third pending (the background).
    assert bar(row) == [("succeeded", "0.00", "33.33"), ("failed", "33.33", "33.33")]
    assert "2/3 ended · 1 succeeded · 1 failed · 1 pending" in row
    assert (
        "<title>2/3 ended: 1 succeeded, 1 failed, 0 discarded, 0 cancelled; 1 pending</title>"
        in row
    )
    assert 'class="badge kind-batch">batch<' in row and "state-running" in row
    assert ">import a.csv</a>" in row
    workflow_row = page.text.split(f"/batches/{wf.batch_id}")[1].split("</tr>")[0]
    assert bar(workflow_row) == [] and "0/2 ended · 2 pending" in workflow_row
    assert 'class="badge kind-workflow">workflow<' in workflow_row

    assert listed(client.get("/batches", params={"kind": "workflow"}).text) == [str(wf.batch_id)]
    assert listed(client.get("/batches", params={"kind": "batch"}).text) == [str(batch.batch_id)]
    assert listed(client.get("/batches", params={"state": "finished"}).text) == []
    assert "No finished batches or workflows." in client.get("/batches?state=finished").text
    # Unknown filters are no filter, as a bad cursor is the first page.
    assert len(listed(client.get("/batches", params={"kind": "x", "state": "y"}).text)) == 2


def test_finished_batches_and_their_states(conn: psycopg.Connection) -> None:
    with pgjobs.batch(description="ok", connection=conn) as good:
        good.add(Part.build("a"), Part.build("b"))
    with pgjobs.batch(description="bad", connection=conn) as bad:
        bad.add(Part.build("c"), Part.build("d"))
    for job in good._jobs:
        succeed(conn, job)
    fail(conn, bad._jobs[0])
    pgjobs.cancel(bad._jobs[1].job_id, database=PinnedDatabase(conn))  # before it ran
    client = client_on(conn)
    assert listed(client.get("/batches?state=succeeded").text) == [str(good.batch_id)]
    assert listed(client.get("/batches?state=failed").text) == [str(bad.batch_id)]
    assert listed(client.get("/batches?state=finished").text) == [
        str(bad.batch_id),
        str(good.batch_id),
    ]
    page = client.get("/batches?state=failed").text
    assert bar(page) == [("failed", "0.00", "50.00"), ("cancelled", "50.00", "50.00")]
    assert "state-failed" in page and "2/2 ended · 1 failed · 1 cancelled" in page
    good_page = client.get("/batches?state=succeeded").text
    assert bar(good_page) == [("succeeded", "0.00", "100.00")]
    assert '<span class="badge state-succeeded">succeeded</span>' in good_page


def test_the_batches_list_pages_by_id(conn: psycopg.Connection) -> None:
    made = [
        pgjobs.Batch.of([], description=f"b{i}", connection=conn) for i in range(ops.PAGE_SIZE + 3)
    ]
    newest_first = [str(b.batch_id) for b in reversed(made)]
    client = client_on(conn)
    first = client.get("/batches").text
    assert listed(first) == newest_first[: ops.PAGE_SIZE]
    older = re.search(r'href="([^"]*)">Older', first)
    assert older is not None
    second = client.get(html.unescape(older.group(1))).text
    assert listed(second) == newest_first[ops.PAGE_SIZE :]
    assert "End of the list." in second and "Older" not in second and "« Newest" in second


# -- a batch's page ------------------------------------------------------------------------------


def test_a_batch_page_counts_properties_callbacks_and_nested_batches(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.batch(
        description="import",
        properties={"file": "a.csv", "rows": 3},
        on_finish=Callback.build("finish"),
        on_success=Callback.build("success"),
        on_discard=Callback.build("discard"),
        connection=conn,
    ) as batch:
        batch.add(Part.build("a"), Part.build("b"))
        inner = batch.batch(description="inner part")
        inner.add(Part.build("c"))
    a, b = batch._jobs
    succeed(conn, a)
    fail(conn, b)
    succeed(conn, inner._jobs[0])  # the nested batch succeeds: one more success of the parent
    info = read(conn, None, batch.batch_id)
    assert (info.total, info.succeeded, info.failed, info.state) == (3, 2, 1, "failed")

    page = client_on(conn).get(f"/batches/{batch.batch_id}")
    assert page.status_code == 200
    text = page.text
    assert "<h1>import" in text and "state-failed" in text
    assert "3/3 ended: 2 succeeded, 1 failed, 0 discarded, 0 cancelled; 0 pending" in text
    assert bar(text) == [("succeeded", "0.00", "66.67"), ("failed", "66.67", "33.33")]
    assert "&#34;file&#34;: &#34;a.csv&#34;" in text and "&#34;rows&#34;: 3" in text
    # on_discard and on_finish were written (links to their jobs); on_success was not.
    finish, success, discard = (info.callbacks[w] for w in ("finish", "success", "discard"))
    assert f'<dt>on_finish</dt>\n  <dd><a href="/job/{finish}"' in text
    assert f'<dt>on_discard</dt>\n  <dd><a href="/job/{discard}"' in text
    assert f'<dd><span class="id">{success}</span> <span class="aside">not written yet' in text
    assert f"/job/{success}" not in text
    # The nested batch, linked, with its own bar.
    nested = text.split("Nested batches (1)")[1]
    assert f'href="/batches/{inner.batch_id}" class="class">inner part</a>' in nested
    assert "1/1 ended · 1 succeeded" in nested
    # Its page names its parent.
    child = client_on(conn).get(f"/batches/{inner.batch_id}").text
    assert f'<dt>Nested in</dt><dd><a href="/batches/{batch.batch_id}"' in child
    # Only the parent's own jobs are listed (the nested batch's are on its page).
    assert job_rows(text) == [(str(a.job_id), "succeeded"), (str(b.job_id), "failed")]


def test_a_workflow_page_lists_its_jobs_by_state_with_their_dependencies(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.workflow(description="etl", connection=conn) as wf:
        fetch = wf.add(Part.build("fetch"))
        parse = wf.add(Part.build("parse"), after=[fetch])
        store = wf.add(Part.build("store"), after=[parse, fetch])
        audit = wf.add(Part.build("audit"), after=[fetch])
    client = client_on(conn)
    path = f"/batches/{wf.batch_id}"
    page = client.get(path).text
    assert job_rows(page) == [
        (str(fetch.job_id), "ready"),
        (str(parse.job_id), "held"),
        (str(store.job_id), "held"),
        (str(audit.job_id), "held"),
    ]
    assert re.search(r"Held <span class=\"count\">3</span>", page)
    assert re.search(r"Ready <span class=\"count\">1</span>", page)
    assert "when a job fails for good: cancel every job that waits on it" in page

    succeed(conn, fetch)  # releases parse and audit; store still waits for parse
    page = client.get(path).text
    assert re.search(r"All <span class=\"count\">4</span>", page)
    assert re.search(r"Held <span class=\"count\">1</span>", page)
    assert re.search(r"Ready <span class=\"count\">2</span>", page)
    assert re.search(r"Succeeded <span class=\"count\">1</span>", page)
    assert "tab-failed" not in page  # no failed job: no tab

    held = client.get(path, params={"state": "held"}).text
    assert job_rows(held) == [(str(store.job_id), "held")]
    # Its dependencies, in after=[...] order, linked to their pages.
    cell = held.split('<td class="depends">')[1].split("</td>")[0]
    assert re.findall(r'href="/job/([0-9a-f-]{36})"', cell) == [
        str(parse.job_id),
        str(fetch.job_id),
    ]
    ready = client.get(path, params={"state": "ready"}).text
    assert job_rows(ready) == [(str(parse.job_id), "ready"), (str(audit.job_id), "ready")]
    # A dependency listed on the same page is named by its class.
    assert f'title="{fetch.job_id}">tests.Part <span class="id">' not in ready
    everything = client.get(path).text
    assert (
        f'title="{fetch.job_id}">tests.Part <span class="id">{str(fetch.job_id)[:8]}' in everything
    )
    assert "No cancelled jobs." in client.get(path, params={"state": "cancelled"}).text

    fail(conn, parse)  # on_failure cancel: store is cancelled at once
    page = client.get(path).text
    assert dict(job_rows(page)) == {
        str(fetch.job_id): "succeeded",
        str(parse.job_id): "failed",
        str(store.job_id): "cancelled",
        str(audit.job_id): "ready",
    }
    assert (
        "4/4" not in page and "3/4 ended: 1 succeeded, 1 failed, 0 discarded, 1 cancelled" in page
    )


def test_a_batch_page_pages_its_jobs(conn: psycopg.Connection) -> None:
    with pgjobs.batch(connection=conn) as batch:
        batch.add(Part.build(str(i)) for i in range(ops.PAGE_SIZE + 4))
    ids = [str(job.job_id) for job in batch._jobs]
    client = client_on(conn)
    first = client.get(f"/batches/{batch.batch_id}").text
    assert [j for j, _ in job_rows(first)] == ids[: ops.PAGE_SIZE]
    following = re.search(r'href="([^"]*)">Next »', first)
    assert following is not None
    second = client.get(html.unescape(following.group(1))).text
    assert [j for j, _ in job_rows(second)] == ids[ops.PAGE_SIZE :]
    assert "End of the list." in second and "« First" in second
    # A page of one state looks at a bounded window of the batch's jobs, and says how far.
    for job in batch._jobs[-2:]:
        succeed(conn, job)
    info = read(conn, None, batch.batch_id)
    page = ops.jobs(conn, None, info, state="finished", limit=2, window=20)
    assert page.jobs == [] and page.searched == 20 and not page.exhausted
    seen = []
    while page.next is not None:
        page = ops.jobs(conn, None, info, state="finished", after=page.next, limit=2, window=20)
        seen += [str(job.job_id) for job in page.jobs]
    assert seen == ids[-2:] and page.exhausted


def test_unknown_batches_are_404(conn: psycopg.Connection) -> None:
    client = client_on(conn)
    page = client.get(f"/batches/{uuid.uuid4()}")
    assert page.status_code == 404 and "No batch or workflow" in page.text
    assert client.get("/batches/not-a-uuid").status_code == 404


# -- held jobs in the job lists and on the job page -----------------------------------------------


def test_held_jobs_are_listed_and_their_page_links_to_the_workflow(
    conn: psycopg.Connection,
) -> None:
    with pgjobs.workflow(description="report <b>7</b>", connection=conn) as wf:
        first = wf.add(Part.build("first"))
        second = wf.add(Part.build("second"))
        last = wf.add(Part.build("last"), after=[first, second])
    succeed(conn, first)
    client = client_on(conn)
    held = client.get("/jobs/held").text
    assert re.search(r'Held <span class="count">1</span>', held)
    assert re.findall(r'/job/([0-9a-f-]{36})" class="class">', held) == [str(last.job_id)]
    assert '<td class="detail">waiting for 1 job</td>' in held

    page = client.get(f"/job/{last.job_id}").text
    assert '<span class="badge state-held">held</span>' in page
    assert (
        "Held since" in page and "1 of the 2 jobs it runs after (below) is not resolved yet" in page
    )
    assert (
        f'<dt>Workflow</dt><dd><a href="/batches/{wf.batch_id}">report &lt;b&gt;7&lt;/b&gt;</a>'
        in page
    )
    runs_after = page.split("<h2>Runs after</h2>")[1].split("</ul>")[0]
    assert re.findall(r'href="/job/([0-9a-f-]{36})"', runs_after) == [
        str(first.job_id),
        str(second.job_id),
    ]
    assert "state-succeeded" in runs_after and "state-pending" in runs_after
    # Cancel is offered (pgjobs.cancel cancels a held job at once); discard is not.
    assert form_fields(page, "/job/cancel") == [
        {"csrf_token": form_fields(page, "/job/cancel")[0]["csrf_token"],
         "return_to": f"/job/{last.job_id}", "job_id": str(last.job_id)}
    ]  # fmt: skip
    assert form_fields(page, "/waiting/discard") == []
    # A job of a plain batch links to it; a job of no batch shows no such row.
    with pgjobs.batch(connection=conn) as batch:
        batch.add(Part.build("p"))
    plain = client.get(f"/job/{batch._jobs[0].job_id}").text
    assert f'<dt>Batch</dt><dd><a href="/batches/{batch.batch_id}">{batch.batch_id}</a>' in plain
    assert "Runs after" not in plain
    _, alone = add_job(conn, "ready")
    assert "/batches/" not in client.get(f"/job/{alone}").text.split("<main>")[1]


def test_cancel_a_held_job_from_its_page(conn: psycopg.Connection) -> None:
    with pgjobs.workflow(connection=conn) as wf:
        first = wf.add(Part.build("first"))
        middle = wf.add(Part.build("middle"), after=[first])
        last = wf.add(Part.build("last"), after=[middle])
    client = client_on(conn)
    message = flash(client, submit(client, f"/job/{middle.job_id}", "/job/cancel"))
    assert message == f"success: Cancelled job {middle.job_id}: it will not run."
    page = client.get(f"/batches/{wf.batch_id}").text
    assert dict(job_rows(page)) == {
        str(first.job_id): "ready",
        str(middle.job_id): "cancelled",
        str(last.job_id): "cancelled",  # downstream of it: cancelled by the workflow's policy
    }
    assert "2/3 ended: 0 succeeded, 0 failed, 0 discarded, 2 cancelled; 1 pending" in page


def test_read_only_shows_no_cancel_for_held_jobs(conn: psycopg.Connection) -> None:
    with pgjobs.workflow(connection=conn) as wf:
        first = wf.add(Part.build("first"))
        held = wf.add(Part.build("held"), after=[first])
    client = client_on(conn, read_only=True)
    assert 'method="post"' not in client.get(f"/job/{held.job_id}").text
    page = client.get("/jobs/held").text
    assert str(held.job_id) in page and 'method="post"' not in page


# -- security and mounting ----------------------------------------------------------------------


def test_batch_pages_need_credentials_and_escape_what_they_show(conn: psycopg.Connection) -> None:
    with pgjobs.batch(
        description="<script>alert(1)</script>",
        properties={"<img src=x>": "</pre><script>x()</script>"},
        connection=conn,
    ) as batch:
        batch.add(Part.build("<b>a</b>"))
    anonymous = TestClient(app_on(conn))
    for path in ("/batches", f"/batches/{batch.batch_id}"):
        assert anonymous.get(path).status_code == 401, path
    client = client_on(conn)
    for path in ("/batches", f"/batches/{batch.batch_id}"):
        page = client.get(path).text
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<img src=x>" not in page and "<script>x()" not in page


def test_batch_pages_under_a_prefix(conn: psycopg.Connection) -> None:
    with pgjobs.workflow(connection=conn) as wf:
        first = wf.add(Part.build("first"))
        wf.add(Part.build("second"), after=[first])
        wf.batch(description="inner").add(Part.build("x"))
    outer = Starlette(routes=[Mount("/admin/jobs", app=app_on(conn))])
    client = TestClient(outer, headers=basic(), follow_redirects=False)
    for path in ("/admin/jobs/batches", f"/admin/jobs/batches/{wf.batch_id}"):
        page = client.get(path).text
        links = re.findall(r'(?:href|action|src)="([^"]*)"', page)
        assert links and all(link.startswith("/admin/jobs/") for link in links), links
        for link in set(re.findall(r'href="([^"]*)"', page)):
            assert client.get(html.unescape(link)).status_code == 200, link


@pytest.mark.parametrize("state", ops.JOB_STATES)
def test_every_job_state_tab_renders(conn: psycopg.Connection, state: str) -> None:
    with pgjobs.batch(connection=conn) as batch:
        batch.add(Part.build("a"))
    page = client_on(conn).get(f"/batches/{batch.batch_id}", params={"state": state})
    assert page.status_code == 200 and 'aria-current="page" class="tab-' + state in page.text
