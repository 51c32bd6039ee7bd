"""The dashboard in a real browser: Playwright for Python driving Debian's Chromium.

Each test serves the dashboard for real (``python -m pgjobs web`` in a subprocess, with basic-auth
credentials in its environment) and, where a job must run, a real ``pgjobs start`` (see
:func:`tests.engine_helpers.pgjobs_start`); the browser clicks the pages' own links, buttons and
confirmation dialogs, and each action's flash message is checked.

Nothing here downloads a browser: the ``playwright`` package (``pip install playwright``, in the
``dev`` extra) drives ``/usr/bin/chromium`` (``apt-get install chromium``; ``$PGJOBS_CHROMIUM``
names another).  Without either, the module is skipped, unless ``PGJOBS_REQUIRE_BROWSER=1``
(CI) makes that an error.  ``PGJOBS_SCREENSHOTS=1`` makes :func:`test_screenshots` write the
documentation's screenshots to ``docs/images/`` (otherwise it writes them to a temporary
directory, so an ordinary run does not rewrite committed files).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.engine_helpers import (
    ROOT,
    config_file,
    free_port,
    log_lines,
    pgjobs_start,
    states,
    wait_for,
)

REQUIRE_BROWSER = os.environ.get("PGJOBS_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("PGJOBS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
IMAGES = ROOT / "docs" / "images"
USER, PASSWORD = "admin", "browser-s3cret"


def _missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


_WHY = _missing()
if _WHY is not None:
    if REQUIRE_BROWSER:
        pytest.fail(f"PGJOBS_REQUIRE_BROWSER=1, but {_WHY}", pytrace=False)
    pytest.skip(f"browser tests: {_WHY}", allow_module_level=True)

from playwright.sync_api import (  # noqa: E402  (after the check that it is installed)
    Browser,
    BrowserContext,
    Dialog,
    Locator,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError  # noqa: E402

import pgjobs  # noqa: E402
from pgjobs.db.database import Database  # noqa: E402
from pgjobs.operations.recurring import schedule_recurring  # noqa: E402
from tests.control_jobs import Cooperative  # noqa: E402
from tests.sample_jobs import (  # noqa: E402
    BuildSalesReport,
    ChargeCard,
    DeliverWebhook,
    FailsFirstTime,
    ImportCatalog,
    OneAtATime,
    Record,
    ReindexProduct,
    SendReceiptEmail,
    SyncInventory,
)
from tests.web_helpers import set_control  # noqa: E402

pytestmark = [pytest.mark.committed, pytest.mark.slow]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


# -- the dashboard, the browser --------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """The dashboard served by ``pgjobs web`` on the test database."""

    url: str  # http://127.0.0.1:<port>, no trailing slash
    database_url: str
    config: Path  # the queue.yml both the dashboard and the tests' workers read


def _answers(url: str) -> bool:
    """Whether the server answers (401: it is up and closed without credentials)."""
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def served(test_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("web")
    config = config_file(tmp)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PGJOBS_WEB_USERNAME": USER,
        "PGJOBS_WEB_PASSWORD": PASSWORD,
        "PYTHONPATH": str(ROOT),  # "Run now" resolves the recurring tasks' tests.sample_jobs
    }
    output = tmp / "web.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgjobs", "web", "--host", "127.0.0.1", "--port", str(port),
             "--database-url", test_database_url, "--config", str(config),
             "--log-level", "warning"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pgjobs web did not start:\n{output.read_text()}")
            time.sleep(0.1)
        yield Served(url, test_database_url, config)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as found:
        yield found


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    yield launched
    launched.close()


@pytest.fixture
def context(browser: Browser, served: Served) -> Iterator[BrowserContext]:
    """A browser profile logged in with the dashboard's credentials."""
    found = browser.new_context(
        base_url=served.url,
        http_credentials={"username": USER, "password": PASSWORD},
        viewport=VIEWPORT,
    )
    found.set_default_timeout(10_000)
    yield found
    found.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def flash(page: Page) -> Locator:
    """The message an action leaves on the page it redirects to."""
    return page.locator("main > .flash")


def row_of(page: Page, text: str) -> Locator:
    """The table row that contains ``text``."""
    return page.locator("tbody tr").filter(has_text=text)


def challenged(page: Page, url: str) -> bool:
    """Whether opening ``url`` is answered 401 with a basic-auth challenge.  (Chromium, without
    credentials or with refused ones, then abandons the page: ERR_INVALID_AUTH_CREDENTIALS.)"""
    with page.expect_response(url) as answer, contextlib.suppress(PlaywrightError):
        page.goto(url)
    response = answer.value
    return response.status == 401 and response.headers["www-authenticate"].startswith("Basic ")


def job_ids(url: str, sql: str) -> list[uuid.UUID]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(sql).fetchall()]


# -- retry, pause, bulk discard ------------------------------------------------------------------


def test_failed_job_shows_its_traceback_and_retry_runs_it_again(
    db: Database, page: Page, served: Served, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    job = FailsFirstTime.perform_later(7).job_id
    with pgjobs_start(served.database_url, served.config, log):
        wait_for(lambda: states(served.database_url) == {"failed": 1}, timeout=20)

        # The Failed page lists it with its error; its page shows the traceback.
        page.goto("/jobs/failed")
        expect(page.get_by_role("heading", level=1)).to_have_text("Failed jobs")
        row = row_of(page, str(job))
        expect(row).to_contain_text("PaymentDeclinedError: card declined for order 63")
        row.get_by_role("link", name="tests.sample_jobs:FailsFirstTime").click()
        expect(page).to_have_url(f"{served.url}/job/{job}")
        expect(page.locator("h1 .badge")).to_have_text("failed")
        traceback = page.locator("pre.traceback").first
        expect(traceback).to_contain_text("Traceback (most recent call last)")
        expect(traceback).to_contain_text("in perform")
        expect(traceback).to_contain_text("in _authorize_card")
        expect(traceback).to_contain_text("PaymentDeclinedError: card declined for order 63")

        # Retry: the running worker picks it up again, and this time it finishes.
        page.get_by_role("button", name="Retry", exact=True).click()
        expect(page).to_have_url(f"{served.url}/job/{job}")
        # The worker may claim it (or even finish it) before the action reads its state back.
        expect(flash(page)).to_have_text(
            re.compile(
                rf"Retried job {job}: it is (ready|in progress|finished) now\.\s*Show the job"
            )
        )
        wait_for(lambda: states(served.database_url) == {"finished": 1}, timeout=20)
        page.reload()
        expect(flash(page)).to_have_count(0)  # shown once
        expect(page.locator("h1 .badge")).to_have_text("finished")
        expect(page.get_by_role("button", name="Retry", exact=True)).to_have_count(0)
        expect(page.get_by_role("heading", name="Attempts that raised (1)")).to_be_visible()
    assert log_lines(log) == [f"{job} 1 fails-first-time", f"{job} 2 fails-first-time"]


def test_pausing_a_queue_stops_workers_claiming_from_it_and_resuming_restarts_them(
    db: Database, page: Page, served: Served, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    held = [Record.set(queue="reports").perform_later(f"report {i}").job_id for i in range(3)]
    page.goto("/queues")
    reports = row_of(page, "reports")
    expect(reports).to_contain_text("no")
    reports.get_by_role("button", name="Pause").click()
    expect(flash(page)).to_have_text("Paused queue reports: workers skip it until it is resumed.")
    expect(reports.locator(".badge")).to_have_text("paused")

    with pgjobs_start(served.database_url, served.config, log):
        others = [Record.set(queue="mailers").perform_later(f"mail {i}").job_id for i in range(3)]
        wait_for(lambda: len(log_lines(log)) == 3, timeout=20)
        time.sleep(1.0)  # five more polls of the worker (polling_interval 0.2)
        assert sorted(line.split()[0] for line in log_lines(log)) == sorted(map(str, others))
        assert states(served.database_url) == {"ready": 3, "finished": 3}
        page.reload()
        expect(reports.locator("td").nth(1)).to_have_text("3")  # still 3 ready

        reports.get_by_role("button", name="Resume").click()
        expect(flash(page)).to_have_text("Resumed queue reports.")
        wait_for(lambda: len(log_lines(log)) == 6, timeout=20)
    ran = {uuid.UUID(line.split()[0]) for line in log_lines(log)}
    assert ran == set(held) | set(others)
    assert states(served.database_url) == {"finished": 6}
    page.reload()
    expect(reports).to_have_count(0)  # no ready jobs and no pause: the queue is not listed


def test_discard_every_failed_job_of_one_class(
    db: Database, page: Page, served: Served, tmp_path: Path
) -> None:
    for order in (9, 18, 27, 36):
        ChargeCard.perform_later(order, 1999)
    for _ in range(3):
        SyncInventory.perform_later("eu-west-2")
    with pgjobs_start(served.database_url, served.config, tmp_path / "jobs.log"):
        wait_for(lambda: states(served.database_url) == {"failed": 7}, timeout=20)

    page.goto("/jobs/failed")
    page.get_by_label("Job class").fill("ChargeCard")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/jobs/failed\?.*class=ChargeCard"))
    expect(page.locator(".bulk")).to_contain_text("These filters match 4 failed jobs")
    expect(page.locator("tbody tr")).to_have_count(4)
    discard = page.get_by_role("button", name="Discard all 4 failed jobs matching these filters")

    # The confirmation comes first: dismissing it does nothing.
    questions: list[str] = []

    def answer(accept: bool) -> None:
        def handle(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", handle)

    answer(accept=False)
    discard.click()
    assert questions == [
        "Discard all 4 failed jobs matching these filters? They are deleted with their error "
        "history."
    ]
    expect(flash(page)).to_have_count(0)
    assert states(served.database_url) == {"failed": 7}

    answer(accept=True)
    discard.click()
    expect(flash(page)).to_have_text("Discarded 4 failed jobs matching class ChargeCard.")
    expect(page.locator("p.empty")).to_have_text("No failed jobs match these filters.")
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    expect(page.locator("tbody tr a.class")).to_have_text(["SyncInventory"] * 3)
    assert states(served.database_url) == {"failed": 3}
    with psycopg.connect(served.database_url) as conn:
        classes = conn.execute("SELECT DISTINCT class_name FROM pgjobs_jobs").fetchall()
    assert classes == [("SyncInventory",)]


def test_run_scheduled_jobs_now_and_discard_waiting_ones(
    db: Database, page: Page, served: Served
) -> None:
    later = [Record.set(wait=3600).perform_later(f"digest {i}").job_id for i in range(3)]
    holder = OneAtATime.perform_later().job_id
    blocked = OneAtATime.perform_later().job_id

    # One scheduled job, run now from its row: it is ready (no worker runs here).
    page.goto("/jobs/scheduled")
    expect(page.locator("tbody tr")).to_have_count(3)
    row_of(page, str(later[0])).get_by_role("button", name="Run now").click()
    expect(flash(page)).to_contain_text(f"Dispatched job {later[0]}: it is ready now.")
    expect(page.locator("tbody tr")).to_have_count(2)

    # The rest in bulk, through the filter and the confirmation.
    page.get_by_label("Arguments contain").fill("digest")
    page.get_by_role("button", name="Filter").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Discard all scheduled jobs matching these filters").click()
    expect(flash(page)).to_have_text("Discarded 2 scheduled jobs matching arguments with digest.")
    expect(page.locator("p.empty")).to_have_text("No scheduled jobs match these filters.")

    # The blocked job's page says what it waits for, linking the job holding the slot.
    page.goto(f"/job/{blocked}")
    waiting = page.locator("section.waiting-for")
    expect(waiting).to_contain_text("1 of 1 taken")
    expect(waiting.get_by_role("link", name=str(holder))).to_have_count(0)  # ready, not running
    expect(waiting).to_contain_text("no running job")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Discard", exact=True).click()
    expect(flash(page)).to_contain_text(f"Discarded job {blocked}.")
    expect(page.locator("h1 .badge")).to_have_text("discarded")
    assert states(served.database_url) == {"ready": 2, "finished": 3}


def test_run_all_scheduled_jobs_now_and_discard_ready_and_blocked_ones(
    db: Database, page: Page, served: Served
) -> None:
    digests = [Record.set(wait=3600).perform_later(f"digest {i}").job_id for i in range(3)]
    welcome = Record.set(wait=3600).perform_later("welcome").job_id
    questions: list[str] = []

    def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    # Every scheduled job matching a filter, run now in bulk, after the confirmation.
    page.goto("/jobs/scheduled")
    page.get_by_label("Arguments contain").fill("digest")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    page.once("dialog", accept)
    page.get_by_role("button", name="Run all scheduled jobs matching these filters now").click()
    assert questions == ["Run all scheduled jobs matching these filters now?"]
    expect(flash(page)).to_have_text("Dispatched 3 scheduled jobs matching arguments with digest.")
    expect(page.locator("p.empty")).to_have_text("No scheduled jobs match these filters.")
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("tbody tr")).to_have_count(1)  # the one the filter left out
    expect(row_of(page, str(welcome))).to_have_count(1)

    # One ready job discarded from its row: it is finished without running.
    page.goto("/jobs/ready")
    expect(page.locator("tbody tr")).to_have_count(3)
    page.once("dialog", accept)
    row_of(page, str(digests[0])).get_by_role("button", name="Discard").click()
    assert questions[-1] == "Discard this ready job?"
    expect(flash(page)).to_contain_text(f"Discarded job {digests[0]}.")
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(row_of(page, str(digests[0]))).to_have_count(0)

    # Every blocked job discarded in bulk; the job holding the slot stays ready.
    holder = OneAtATime.perform_later().job_id
    blocked = [OneAtATime.perform_later().job_id for _ in range(2)]
    page.goto("/jobs/blocked")
    expect(page.locator("tbody tr")).to_have_count(2)
    page.once("dialog", accept)
    page.get_by_role("button", name="Discard all blocked jobs").click()
    assert questions[-1] == "Discard all blocked jobs? They are finished without running."
    expect(flash(page)).to_have_text("Discarded 2 blocked jobs.")
    expect(page.locator("p.empty")).to_have_text("No blocked jobs.")
    with psycopg.connect(served.database_url) as conn:
        discarded = conn.execute(
            "SELECT job_id FROM pgjobs_jobs WHERE discarded_at IS NOT NULL ORDER BY id"
        ).fetchall()
    assert [row[0] for row in discarded] == [digests[0], *blocked]
    page.goto("/jobs/ready")
    expect(row_of(page, str(holder))).to_have_count(1)
    assert states(served.database_url) == {"ready": 3, "scheduled": 1, "finished": 3}


def test_cancel_a_running_job_and_waiting_ones(
    db: Database, page: Page, served: Served, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    later = [Record.set(wait=3600).perform_later(f"digest {i}").job_id for i in range(2)]
    job = Cooperative.perform_later("coop").job_id
    with pgjobs_start(served.database_url, served.config, log):
        wait_for(lambda: "coop start" in log_lines(log), timeout=20)
        # Its progress, as the job would report it (this one reports none of its own).
        with psycopg.connect(served.database_url, autocommit=True) as conn:
            at = datetime.now(UTC).isoformat()
            progress = {"done": 30, "total": 120, "message": "page 30", "at": at}
            set_control(conn, job, progress=progress)

        # The in-progress list shows its bar; its row's Cancel asks it to stop.
        page.goto("/jobs/in_progress")
        row = row_of(page, str(job))
        expect(row.locator("progress")).to_have_attribute("value", "0.25")
        expect(row.locator(".progress-text")).to_have_text("30 / 120 25% · page 30")
        questions: list[str] = []

        def accept(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        row.get_by_role("button", name="Cancel", exact=True).click()
        expect(flash(page)).to_contain_text(f"Asked job {job} to stop: it is running")
        assert questions == ["Ask this running job to stop?"]
        with psycopg.connect(served.database_url) as conn:
            query = "SELECT cancelled_at IS NOT NULL FROM pgjobs_jobs WHERE job_id = %s"
            wait_for(lambda: conn.execute(query, [job]).fetchone() == (True,), timeout=10)

        # Its page: cancelled, its last progress kept, nothing left to cancel.
        flash(page).get_by_role("link", name="Show the job").click()
        expect(page.locator("h1 .badge")).to_have_text("cancelled")
        expect(page.locator("section.job-progress")).to_contain_text("its last report")
        expect(page.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
    assert log_lines(log) == ["coop start", "coop after_cancel"]

    # The scheduled ones in bulk, through the confirmation: they never run.
    page.goto("/jobs/scheduled")
    page.once("dialog", accept)
    page.get_by_role("button", name="Cancel all scheduled jobs", exact=True).click()
    assert questions[-1] == (
        "Cancel all scheduled jobs? They are finished as cancelled without running."
    )
    expect(flash(page)).to_have_text("Cancelled 2 scheduled jobs.")
    page.goto("/jobs/finished")
    expect(page.locator("tbody .badge.state-cancelled")).to_have_count(3)
    cancelled = job_ids(
        served.database_url, "SELECT job_id FROM pgjobs_jobs WHERE cancelled_at IS NOT NULL"
    )
    assert sorted(cancelled) == sorted([*later, job])


# -- the doors: credentials and CSRF -------------------------------------------------------------


def test_credentials_are_required_and_forged_posts_are_refused(
    db: Database, browser: Browser, page: Page, served: Served
) -> None:
    Record.set(queue="reports").perform_later("x")

    # Without credentials, or with wrong ones: 401 with a challenge, static files included.
    for credentials in (None, {"username": USER, "password": "guess"}):
        stranger = browser.new_context(base_url=served.url, http_credentials=credentials)
        assert challenged(stranger.new_page(), f"{served.url}/")
        assert stranger.request.get("/static/pgjobs.css").status == 401
        assert stranger.request.post("/queues/pause", form={"queue": "reports"}).status == 401
        stranger.close()

    # Logged in, with the page's CSRF cookie, but a POST without the form's token: 403.
    response = page.goto("/queues")
    assert response is not None and response.status == 200
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    refused = "Invalid or missing CSRF token: reload the page and try again."
    without = page.request.post("/queues/pause", form={"queue": "reports", "return_to": "/"})
    assert (without.status, without.text()) == (403, refused)
    wrong_token = page.request.post(
        "/queues/pause", form={"queue": "reports", "csrf_token": "0" * 64}
    )
    assert (wrong_token.status, wrong_token.text()) == (403, refused)
    # A script on the dashboard's own page that does not send the token.
    status = page.evaluate(
        """() => fetch("/queues/pause", {method: "POST",
             body: new URLSearchParams({queue: "reports"})}).then(r => r.status)"""
    )
    assert status == 403
    # The page's token with another session's cookie.
    other = browser.new_context(
        base_url=served.url, http_credentials={"username": USER, "password": PASSWORD}
    )
    other.new_page().goto("/queues")
    stolen = other.request.post("/queues/pause", form={"queue": "reports", "csrf_token": token})
    assert (stolen.status, stolen.text()) == (403, refused)
    other.close()
    # A form on another site that posts to the dashboard (the browser holds the credentials;
    # the SameSite=Strict cookie does not go with a cross-site POST).
    attacker = page.context.new_page()
    attacker.set_content(
        f'<form method="post" action="{served.url}/queues/pause">'
        '<input name="queue" value="reports"><input name="csrf_token" value="forged">'
        '<button type="submit">Win a prize</button></form>'
    )
    with attacker.expect_navigation() as navigation:
        attacker.get_by_role("button", name="Win a prize").click()
    forged = navigation.value
    assert forged is not None and forged.status == 403
    attacker.close()
    with psycopg.connect(served.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgjobs_pauses").fetchone() == (0,)

    # The page's own form, with its token, works.
    page.reload()
    row_of(page, "reports").get_by_role("button", name="Pause").click()
    expect(flash(page)).to_have_text("Paused queue reports: workers skip it until it is resumed.")


# -- screenshots on a realistic data set ---------------------------------------------------------

SCREENSHOT_WORKERS = """  - queues: [payments, webhooks, default, imports]
    threads: 6
    polling_interval: 0.2"""

RECURRING = """\
nightly_sales_report:
  class: tests.sample_jobs:BuildSalesReport
  args: ["yesterday"]
  schedule: every day at 2am
  description: "Yesterday's sales, per region"
purge_expired_tokens:
  command: "tests.sample_jobs:purge_expired_tokens"
  kwargs: {batch_size: 500}
  schedule: every 15 minutes
  description: Delete expired API tokens
weekly_cleanup:
  class: tests.sample_jobs:CleanupJob
  args: [90]
  schedule: every sunday at 4am Europe/Paris
"""

PAGES = {
    "overview": "/",
    "queues": "/queues",
    "jobs": "/jobs/ready",
    "blocked": "/jobs/blocked",
    "failed": "/jobs/failed",
    "processes": "/processes",
    "recurring": "/recurring",
}


Segment = tuple[int, float, float]  # jobs, enqueued from ... to ... minutes ago


def _backlog(rng: random.Random) -> list[Segment]:
    """Ready jobs in queues no worker of the screenshots serves, and scheduled jobs.  Returns
    the ready ones' segments, in the order of their ids (see _spread_over_the_last_hour)."""
    regions = ["eu", "us", "apac", "latam"]
    days = [f"2025-05-{d:02d}" for d in range(1, 13)]
    reports: list[pgjobs.Job] = [BuildSalesReport(day, r) for day in days for r in regions]
    receipts = [SendReceiptEmail(40_000 + i, f"customer{i}@example.com") for i in range(340)]
    mixed: list[pgjobs.Job] = [
        *receipts[260:],
        *(ReindexProduct(rng.randrange(1, 90_000)) for _ in range(620)),
    ]
    rng.shuffle(mixed)
    scheduled = [
        SendReceiptEmail.set(wait=timedelta(hours=2 + i)).build(50_000 + i, f"late{i}@example.com")
        for i in range(36)
    ]
    scheduled += [BuildSalesReport.set(wait=timedelta(hours=20)).build("today", r) for r in regions]
    pgjobs.perform_all_later([*reports, *receipts[:260], *mixed, *scheduled])
    return [(len(reports), 58, 20), (260, 14, 4), (len(mixed), 4, 0)]


def _traffic(rng: random.Random) -> None:
    """An hour's worth of payments, webhooks and inventory syncs, some of which fail."""
    jobs: list[pgjobs.Job] = []
    jobs += [ChargeCard(1000 + i, rng.randrange(500, 25_000)) for i in range(360)]
    hosts = ["hooks.acme.io", "api.globex.com", "crm.umbrella.org"]
    events = ["order.paid", "order.shipped", "refund.created"]
    for i in range(140):
        host = "legacy.initech.net" if i % 16 == 0 else rng.choice(hosts)  # refused
        jobs.append(DeliverWebhook(f"https://{host}/pgjobs/{i}", rng.choice(events)))
    warehouses = ["eu-west-1", "eu-west-2", "us-east-1", "ap-south-1"]
    jobs += [SyncInventory(warehouses[i % 4], rng.randrange(50, 900)) for i in range(24)]
    rng.shuffle(jobs)
    pgjobs.perform_all_later(jobs)


def _spread_over_the_last_hour(url: str, backlog: list[Segment], rng: random.Random) -> None:
    """Move the jobs the worker just ran into the last hour, so the chart and the ages look like
    a queue that has been running for a while (ids keep growing with created_at)."""
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM pgjobs_jobs WHERE finished_at IS NOT NULL "
                "OR id IN (SELECT job_id FROM pgjobs_failed_executions) ORDER BY id"
            )
        ]
        minutes = 57
        weights = [3 + 2 * math.sin(m / 7) + rng.random() for m in range(minutes)]
        per_minute = [w * len(ids) / sum(weights) for w in weights]
        moments: list[datetime] = []
        planned = 0.0
        for minute, amount in enumerate(per_minute):
            planned += amount
            start = now - timedelta(minutes=minutes + 2 - minute)
            count = round(planned) - len(moments)
            moments += sorted(start + timedelta(seconds=rng.uniform(0, 60)) for _ in range(count))
        assert len(moments) == len(ids)
        took = [timedelta(seconds=rng.uniform(0.05, 2.5)) for _ in ids]
        params = {"ids": ids, "at": moments, "took": took}
        shift = "FROM unnest(%(ids)s::bigint[], %(at)s::timestamptz[], %(took)s::interval[]) "
        shift += "AS s(id, at, took) WHERE {table}.{column} = s.id"
        conn.execute(
            "UPDATE pgjobs_jobs SET created_at = s.at, finished_at = CASE WHEN finished_at "
            "IS NOT NULL THEN s.at + s.took END " + shift.format(table="pgjobs_jobs", column="id"),
            params,
        )
        for table in ("pgjobs_failed_executions", "pgjobs_job_errors"):
            conn.execute(
                f"UPDATE {table} SET created_at = s.at + s.took "
                + shift.format(table=table, column="job_id"),
                params,
            )
        # The backlog, ordered by id like the segments _backlog enqueued.
        ready = [
            row[0]
            for row in conn.execute(
                "SELECT job_id FROM pgjobs_ready_executions "
                "WHERE queue_name IN ('reports', 'mailers', 'search') ORDER BY job_id"
            )
        ]
        at: list[datetime] = []
        for count, oldest, newest in backlog:
            step = (oldest - newest) / max(count - 1, 1)
            at += [now - timedelta(minutes=oldest - i * step) for i in range(count)]
        assert len(at) == len(ready)
        conn.execute(
            "UPDATE pgjobs_jobs SET created_at = s.at "
            "FROM unnest(%(ids)s::bigint[], %(at)s::timestamptz[]) AS s(id, at) "
            "WHERE pgjobs_jobs.id = s.id",
            {"ids": ready, "at": at},
        )
        conn.execute(
            "UPDATE pgjobs_ready_executions r SET created_at = j.created_at FROM pgjobs_jobs j "
            "WHERE j.id = r.job_id"
        )


def test_screenshots(db: Database, browser: Browser, served: Served, tmp_path: Path) -> None:
    """The main pages on a realistic data set, at 1280x800: to ``docs/images/`` with
    ``PGJOBS_SCREENSHOTS=1``, else to a temporary directory (each page must still render)."""
    out = IMAGES if os.environ.get("PGJOBS_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2025)
    url = served.database_url
    schedule = tmp_path / "recurring.yml"
    schedule.write_text(RECURRING)
    config = config_file(tmp_path, SCREENSHOT_WORKERS)

    backlog = _backlog(rng)
    _traffic(rng)
    schedule_recurring(
        "sync_inventory_eu", "every 30 minutes", SyncInventory, ["eu-west-1"], queue="default",
        description="Pull stock levels from the EU warehouse",
    )  # fmt: skip
    args = ("--recurring-schedule", str(schedule))
    with pgjobs_start(url, config, tmp_path / "jobs.log", *args):
        served_queues = "('payments', 'webhooks', 'default')"
        wait_for(
            lambda: (
                states(url).get("claimed", 0) == 0
                and not job_ids(
                    url,
                    "SELECT job_id FROM pgjobs_ready_executions "
                    f"WHERE queue_name IN {served_queues}",
                )
            ),
            timeout=30,
        )
        _spread_over_the_last_hour(url, backlog, rng)
        # Imports: at most two at once per supplier; the others wait, blocked.
        for supplier in ("acme", "globex"):
            for _ in range(4):
                ImportCatalog.perform_later(supplier, 600.0)
        wait_for(lambda: states(url).get("claimed") == 4, timeout=20)

        context = browser.new_context(
            base_url=served.url,
            http_credentials={"username": USER, "password": PASSWORD},
            viewport=VIEWPORT,
        )
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        # An operator paused the reports and ran the nightly report by hand.
        page.goto("/queues")
        row_of(page, "reports").get_by_role("button", name="Pause").click()
        expect(flash(page)).to_contain_text("Paused queue reports")
        page.goto("/recurring")
        expect(page.locator("tbody tr")).to_have_count(4)
        row_of(page, "nightly_sales_report").get_by_role("button", name="Run now").click()
        expect(flash(page)).to_contain_text("Enqueued task nightly_sales_report now: job ")

        shots: dict[str, Path] = {}
        for name, path in PAGES.items():
            response = page.goto(path)
            assert response is not None and response.status == 200, path
            expect(page.locator("main h1")).to_be_visible()
            shots[name] = out / f"dashboard-{name}.png"
            page.screenshot(path=shots[name])
        # A failed payment's page: its error, traceback and attempts.
        page.goto("/jobs/failed?class=ChargeCard")
        page.locator("tbody tr a.class").first.click()
        expect(page.locator("pre.traceback").first).to_contain_text("PaymentDeclinedError")
        # Scrolled to its arguments: the error and its traceback below them fill the view.
        page.get_by_role("heading", name="Arguments").evaluate("h => h.scrollIntoView()")
        shots["job"] = out / "dashboard-job.png"
        page.screenshot(path=shots["job"])
        context.close()

    for name, shot in shots.items():
        assert shot.stat().st_size > 10_000, f"{name}: an empty-looking screenshot"
