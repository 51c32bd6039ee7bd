"""The dashboard is closed by default: authentication, CSRF, read-only mode, escaping, headers,
and ``pgjobs web``'s refusals."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from pgjobs.cli import main as cli
from pgjobs.config.queue import Config, WebConfig, load_config
from pgjobs.errors import ConfigurationError
from pgjobs.web import create_app
from pgjobs.web.pinned import PinnedDatabase
from pgjobs.web.security import BasicAuth
from tests.web_helpers import (
    add_job,
    app_on,
    basic,
    client_on,
    flash,
    form_fields,
    set_control,
    state_of,
    submit,
)


@pytest.fixture(autouse=True)
def no_web_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGJOBS_WEB_USERNAME", "PGJOBS_WEB_PASSWORD", "PGJOBS_CONFIG"):
        monkeypatch.delenv(name, raising=False)


# -- authentication ----------------------------------------------------------------------------


def test_closed_by_default(conn: psycopg.Connection) -> None:
    with pytest.raises(ConfigurationError, match="closed by default"):
        create_app(PinnedDatabase(conn), config=Config())
    with pytest.raises(ConfigurationError, match="both a username and a password"):
        create_app(PinnedDatabase(conn), username="admin", config=Config())


def test_basic_auth_is_required_on_every_path(conn: psycopg.Connection) -> None:
    client = TestClient(app_on(conn))
    for path in ("/", "/jobs/failed", "/static/pgjobs.css", f"/job/{uuid.uuid4()}"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith('Basic realm="pgjobs"')
    assert client.get("/", headers=basic(password="wrong")).status_code == 401
    assert client.get("/", headers=basic(user="root")).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer x"}).status_code == 401
    assert client.get("/", headers=basic()).status_code == 200
    assert client.get("/static/pgjobs.css", headers=basic()).status_code == 200
    # No credentials on a POST either: 401 before anything else.
    assert client.post("/failed/retry", data={"job_id": str(uuid.uuid4())}).status_code == 401


def test_basic_auth_header_parsing() -> None:
    auth = BasicAuth("admin", "pa:ss")
    assert auth.accepts(basic("admin", "pa:ss")["Authorization"])
    for header in (
        None,
        "",
        "Basic",
        "Basic !!!",
        "Basic YWRtaW4=",
        basic("admin", "pa")["Authorization"],
    ):
        assert not auth.accepts(header), header
    assert "pa:ss" not in repr(auth)


def test_credentials_from_the_environment(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGJOBS_WEB_USERNAME", "ops")
    monkeypatch.setenv("PGJOBS_WEB_PASSWORD", "env-secret")
    client = TestClient(create_app(PinnedDatabase(conn), config=Config()))
    assert client.get("/").status_code == 401
    assert client.get("/", headers=basic("ops", "env-secret")).status_code == 200


def test_credentials_from_queue_yml(
    conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "queue.yml"
    path.write_text("web:\n  username: yml\n  password: ${WEB_PASSWORD}\n  read_only: true\n")
    monkeypatch.setenv("WEB_PASSWORD", "from-env")
    monkeypatch.setenv("PGJOBS_CONFIG", str(path))
    assert load_config().web == WebConfig("yml", "from-env", read_only=True)
    client = TestClient(create_app(PinnedDatabase(conn)))
    assert client.get("/", headers=basic("yml", "wrong")).status_code == 401
    page = client.get("/queues", headers=basic("yml", "from-env"))
    assert page.status_code == 200 and "read-only" in page.text


def test_web_section_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "queue.yml"
    path.write_text("web:\n  usernme: a\n  password: b\n  read_only: maybe\n")
    with pytest.raises(ConfigurationError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "web.usernme: unknown key; did you mean 'username'?" in text
    assert "web.read_only: must be true or false" in text
    assert "give both username and password" in text


@pytest.mark.parametrize("asynchronous", [False, True])
def test_authorize_callable(conn: psycopg.Connection, asynchronous: bool) -> None:
    def allowed(request: Request) -> bool:
        return request.headers.get("x-user") == "alice"

    async def allowed_async(request: Request) -> bool:
        return allowed(request)

    client = TestClient(app_on(conn, authorize=allowed_async if asynchronous else allowed))
    assert client.get("/").status_code == 403
    assert client.get("/", headers=basic()).status_code == 403  # basic auth is not used
    assert client.get("/", headers={"x-user": "alice"}).status_code == 200


def test_no_auth_is_explicit(conn: psycopg.Connection) -> None:
    assert TestClient(app_on(conn, no_auth=True)).get("/").status_code == 200


def test_security_headers(conn: psycopg.Connection) -> None:
    client = client_on(conn)
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert client.get("/static/pgjobs.js").headers["cache-control"].startswith("private")
    assert "<script>" not in page.text.replace(
        '<script src="/static/pgjobs.js" defer></script>', ""
    )


# -- CSRF ----------------------------------------------------------------------------------------


def test_forged_posts_are_refused(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "failed")
    client = client_on(conn)
    assert client.post("/failed/retry", data={"job_id": str(job)}).status_code == 403
    page = client.get("/jobs/failed")  # now the client has a CSRF cookie
    assert client.post("/failed/retry", data={"job_id": str(job)}).status_code == 403
    bad = {"job_id": str(job), "csrf_token": "0" * 64}
    assert client.post("/failed/retry", data=bad).status_code == 403
    # A token is only good with the cookie it was made for.
    token = form_fields(page.text, "/failed/retry")[0]["csrf_token"]
    other = client_on(conn)
    other.get("/")
    response = other.post("/failed/retry", data={"job_id": str(job), "csrf_token": token})
    assert response.status_code == 403
    assert state_of(conn, job) == "failed"
    # GET never acts.
    assert client.get(f"/failed/retry?job_id={job}&csrf_token={token}").status_code == 405
    assert state_of(conn, job) == "failed"
    assert flash(client, submit(client, "/jobs/failed", "/failed/retry")).startswith("success")
    assert state_of(conn, job) == "ready"


def test_every_form_carries_the_token(conn: psycopg.Connection) -> None:
    add_job(conn, "failed")
    conn.execute("INSERT INTO pgjobs_pauses (queue_name) VALUES ('default')")
    client = client_on(conn)
    for path in ("/jobs/failed", "/queues"):
        page = client.get(path).text
        forms = page.count('<form method="post"')
        assert forms >= 1 and page.count('name="csrf_token"') == forms, path


def test_redirects_stay_in_the_dashboard(conn: psycopg.Connection) -> None:
    add_job(conn, "ready", queue="q1")
    client = client_on(conn)
    fields = form_fields(client.get("/queues").text, "/queues/pause")[0]
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/ok\r\nX: y"):
        response = client.post("/queues/pause", data={**fields, "return_to": target})
        assert response.status_code == 303
        assert response.headers["location"] == "/", target


def test_forged_flash_cookie_is_ignored(conn: psycopg.Connection) -> None:
    client = client_on(conn)
    client.cookies.set("pgjobs_flash", "eyJraW5kIjogInN1Y2Nlc3MiLCAibWVzc2FnZSI6ICJoaSJ9.bad")
    assert 'class="flash' not in client.get("/").text


# -- read-only -----------------------------------------------------------------------------------


def test_read_only_hides_and_refuses_every_action(conn: psycopg.Connection) -> None:
    _, job = add_job(conn, "failed", queue="payments")
    conn.execute(
        "INSERT INTO pgjobs_recurring_tasks (key, schedule, class_name) "
        "VALUES ('nightly', 'every day at 3am', 'tests.sample_jobs:SendWelcomeEmail')"
    )
    writable = client_on(conn)
    paths = ("/", "/queues", "/jobs/failed", f"/job/{job}", "/recurring", "/processes")
    assert any('method="post"' in writable.get(p).text for p in paths)
    client = client_on(conn, read_only=True)
    for path in paths:
        page = client.get(path)
        assert page.status_code == 200 and 'method="post"' not in page.text, path
        assert "read-only" in page.text
    token = form_fields(writable.get("/jobs/failed").text, "/failed/retry")[0]
    client.cookies.update(writable.cookies)
    _, ready = add_job(conn, "ready", queue="payments")
    for action in ("/failed/retry", "/failed/discard", "/failed/retry-all", "/failed/discard-all",
                   "/queues/pause", "/queues/resume", "/recurring/run", "/job/cancel",
                   "/waiting/cancel-all", "/running/cancel-all"):  # fmt: skip
        response = client.post(
            action, data={**token, "queue": "payments", "key": "nightly", "state": "ready",
                          "job_id": str(ready)}
        )  # fmt: skip
        assert response.status_code == 403, action
    assert state_of(conn, job) == "failed" and state_of(conn, ready) == "ready"
    assert conn.execute("SELECT count(*) FROM pgjobs_pauses").fetchone() == (0,)


# -- escaping ------------------------------------------------------------------------------------


def test_everything_from_the_database_is_escaped(conn: psycopg.Connection) -> None:
    evil = "<script>alert(1)</script>"
    _, job = add_job(conn, "failed", queue=f"q{evil}", class_name=f"C{evil}", args=[evil],
                     error=f"E{evil}", message=f"m{evil}")  # fmt: skip
    add_job(conn, "ready", queue=f"q{evil}", args=[evil])
    conn.execute(
        "INSERT INTO pgjobs_recurring_tasks (key, schedule, class_name, description) "
        "VALUES (%s, 'every day at 3am', %s, %s)",
        [f"k{evil}", f"C{evil}", f"d{evil}"],
    )
    conn.execute(
        "INSERT INTO pgjobs_processes (kind, name, hostname, pid, metadata) "
        "VALUES ('worker', %s, %s, 1, %s)",
        [f"n{evil}", f"h{evil}", f'{{"queues": ["{evil}"], "threads": 1}}'],
    )
    # What a running job reports: its progress message, step names, cursor, result.
    _, running = add_job(conn, "in_progress", args=[evil])
    set_control(
        conn,
        running,
        progress={"done": 1, "total": 2, "message": evil, "at": None},
        checkpoint={"completed": [evil], "step": evil, "cursor": evil},
        result=evil,
    )
    client = client_on(conn)
    for path in ("/", "/queues", "/jobs/failed", "/jobs/ready", f"/job/{job}", "/recurring",
                 "/processes", f"/jobs/failed?q={evil}&queue={evil}", "/jobs/in_progress",
                 f"/job/{running}"):  # fmt: skip
        page = client.get(path)
        assert page.status_code == 200, path
        assert evil not in page.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path


def test_filters_are_bound_parameters(conn: psycopg.Connection) -> None:
    add_job(conn, "failed", args=["it's 100% _real_"])
    client = client_on(conn)
    for injection in ("' OR 1=1 --", "'; DROP TABLE pgjobs_jobs; --", "%", "_"):
        page = client.get("/jobs/failed", params={"q": injection, "queue": injection})
        assert page.status_code == 200 and "No failed jobs match" in page.text
    assert "100% _real_" in client.get("/jobs/failed", params={"q": "100% _r"}).text
    assert conn.execute("SELECT count(*) FROM pgjobs_jobs").fetchone() == (1,)


# -- pgjobs web ----------------------------------------------------------------------------------


def test_cli_refuses_to_start_without_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["web"]) == 1
    err = capsys.readouterr().err
    assert "pgjobs web needs credentials" in err and "--no-auth" in err


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_cli_refuses_no_auth_on_other_hosts(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["web", "--no-auth", "--host", host]) == 1
    assert f"--no-auth is refused on {host}" in capsys.readouterr().err


def test_cli_serves_the_dashboard(
    test_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    argv = ["web", "--database-url", test_database_url, "--no-auth", "--host", "::1",
            "--port", "9999", "--read-only", "--config", "/nonexistent.yml"]  # fmt: skip
    assert cli.main(argv) == 1  # a config file that does not exist is an error
    assert cli.main(argv[:-2]) == 0
    assert (served["host"], served["port"], served["root_path"]) == ("::1", 9999, "")
    with TestClient(served["app"]) as client:
        page = client.get("/")
    served["app"].state.dashboard.database.close()
    assert page.status_code == 200 and "read-only" in page.text
    assert "dashboard of" in capsys.readouterr().err


def test_cli_without_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    assert cli.main(["web", "--no-auth"]) == 1
    assert 'pip install "pgjobs[web]"' in capsys.readouterr().err


def test_cli_with_credentials_from_the_environment(
    test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app))
    monkeypatch.setenv("PGJOBS_WEB_USERNAME", "ops")
    monkeypatch.setenv("PGJOBS_WEB_PASSWORD", "pw")
    assert cli.main(["web", "--database-url", test_database_url, "--host", "0.0.0.0"]) == 0
    with TestClient(served["app"]) as client:
        assert client.get("/").status_code == 401
        assert client.get("/", headers=basic("ops", "pw")).status_code == 200
    served["app"].state.dashboard.database.close()


def test_public_surface() -> None:
    import pgjobs.web

    assert sorted(pgjobs.web.__all__) == ["Authorize", "INSTALL_HINT", "create_app"]
    assert all(hasattr(pgjobs.web, name) for name in pgjobs.web.__all__)
