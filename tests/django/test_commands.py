"""`manage.py migrate` creates pgjobs' tables; `manage.py pgjobs ...` is the pgjobs command line
on the project's database, with Django set up in every process `start` runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from pgjobs.contrib.django import conf
from pgjobs.contrib.django.management.commands.pgjobs import WORKER_APP, pgjobs_argv
from pgjobs.db.migrate import current_revisions, head_revisions
from tests.django.conftest import count
from tests.django.shop.jobs import MarkPaid, record
from tests.django.shop.models import Event, Order
from tests.engine_helpers import wait_for

MANAGE = Path(__file__).with_name("manage.py")


@pytest.mark.django_db
def test_migrate_created_pgjobs_tables_with_pgjobs_own_history() -> None:
    assert current_revisions(conf.conninfo("default")) == head_revisions()
    call_command("migrate", verbosity=0)  # again: nothing to do, nothing fails


def test_the_command_line_is_completed_from_the_settings() -> None:
    argv = pgjobs_argv(["status", "--json", "--settings=tests.django.project.settings"])
    assert argv[:2] == ["status", "--json"]
    assert "--settings=tests.django.project.settings" not in argv
    assert argv[argv.index("--database-url") + 1] == conf.conninfo("default")
    assert argv[argv.index("--config") + 1].endswith("queue.yml")
    start = pgjobs_argv(["start", "--skip-recurring"])
    assert start[start.index("--app") + 1] == WORKER_APP
    given = pgjobs_argv(["migrate", "--database-url", "postgresql:///elsewhere"])
    assert given.count("--database-url") == 1
    assert "--database-url" not in pgjobs_argv(["check"])  # check takes no database options
    recurring = pgjobs_argv(["recurring", "list"])
    assert "--database-url" in recurring


def test_start_refuses_an_app_of_its_own() -> None:
    with pytest.raises(CommandError, match=r"define your jobs in an app's jobs\.py"):
        pgjobs_argv(["start", "--app", "myproject.jobs"])


@pytest.mark.django_db
def test_status_and_migrate_run_on_the_projects_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    call_command("pgjobs", "migrate")
    assert "is up to date" in capsys.readouterr().err
    call_command("pgjobs", "status", "--json")
    assert '"processes": []' in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        call_command("pgjobs", "pause")  # pgjobs' own usage error: QUEUE is required
    assert exited.value.code == 2


def test_check_reports_queue_yml_problems_through_django(tmp_path: Path) -> None:
    from django.core import checks
    from django.test import override_settings

    bad = tmp_path / "queue.yml"
    bad.write_text("workers:\n  - threads: many\n")
    with override_settings(PGJOBS={"CONFIG": str(bad)}):
        errors = [m for m in checks.run_checks(tags=["pgjobs"]) if m.id == "pgjobs.E001"]
    assert errors and "threads" in errors[0].msg


@pytest.mark.slow
def test_manage_py_pgjobs_start_runs_jobs_with_django_set_up(url: str, tmp_path: Path) -> None:
    order = Order.objects.create(email="ada@example.com")
    MarkPaid.perform_later(order)
    record.perform_later("from the worker")
    env = {
        **os.environ,
        "PGJOBS_DJANGO_DATABASE": connections["default"].settings_dict["NAME"],
        "PYTHONPATH": "",  # the command makes the project importable itself
    }
    log = tmp_path / "start.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(MANAGE), "pgjobs", "start", "--skip-recurring"],
            cwd=tmp_path,  # not the repository: the children still import the project
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: Event.objects.count() == 2 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, log.read_text()
        order.refresh_from_db()
        assert order.status == "paid"
        assert sorted(Event.objects.values_list("name", flat=True)) == sorted(
            [f"paid {order.pk}", "from the worker"]
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM pgjobs_processes").fetchone() == (0,)
    assert count(url, "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NULL") == 0
