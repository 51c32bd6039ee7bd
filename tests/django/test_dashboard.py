"""The dashboard in an ASGI Django deployment, behind Django's login: staff only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.asgi import get_asgi_application
from django.test import Client
from starlette.testclient import TestClient

from pgjobs.contrib.django import dashboard_app, with_dashboard
from tests.django.shop.jobs import record


def session_of(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.fixture
def app(url: str) -> TestClient:
    return TestClient(with_dashboard(get_asgi_application()), follow_redirects=False)


def test_an_anonymous_visitor_is_sent_to_the_login_page(app: TestClient) -> None:
    response = app.get("/jobs/queues?page=2")
    assert response.status_code == 302
    assert response.headers["location"] == "/login/?next=%2Fjobs%2Fqueues%3Fpage%3D2"


def test_a_user_who_is_not_staff_is_refused(app: TestClient) -> None:
    user = User.objects.create_user("visitor", password="x")
    app.cookies.set("sessionid", session_of(user))
    assert app.get("/jobs/").status_code == 403


def test_staff_see_the_dashboard_on_the_projects_database(app: TestClient) -> None:
    record.perform_later("shown")
    staff = User.objects.create_user("operator", password="x", is_staff=True)
    app.cookies.set("sessionid", session_of(staff))
    page = app.get("/jobs/")
    assert page.status_code == 200, page.text
    assert 'href="/jobs/' in page.text  # links carry the prefix
    assert app.get("/jobs/static/does-not-exist.css").status_code == 404


def test_an_inactive_staff_member_is_refused(app: TestClient) -> None:
    staff = User.objects.create_user("former", password="x", is_staff=True)
    cookie = session_of(staff)
    User.objects.filter(pk=staff.pk).update(is_active=False)
    app.cookies.set("sessionid", cookie)
    assert app.get("/jobs/").status_code in (302, 403)  # the session no longer logs them in


def test_everything_else_goes_to_django(app: TestClient) -> None:
    assert app.get("/no-such-page/").status_code == 404
    assert "text/html" in app.get("/no-such-page/").headers["content-type"]


def test_who_may_enter_is_configurable(url: str) -> None:
    user = User.objects.create_user("auditor", password="x")
    client = TestClient(
        dashboard_app(allow=lambda u: u.username == "auditor", read_only=True),
        follow_redirects=False,
    )
    client.cookies.set("sessionid", session_of(user))
    assert client.get("/").status_code == 200


def test_a_bad_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix must look like '/jobs'"):
        with_dashboard(get_asgi_application(), prefix="jobs/")
