"""``--app`` that cannot be imported: one ``pgjobs: error:`` line, and the application's own
traceback (only its frames) when it is the application's code that failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_helpers import ROOT


def pgjobs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "pgjobs", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [["check"], ["web", "--no-auth"]])
def test_a_missing_module_is_one_line(tmp_path: Path, command: list[str]) -> None:
    done = pgjobs(*command, "--app", "does.not.exist", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "pgjobs: error: --app does.not.exist: there is no module 'does' (looked in the current "
        f"directory {tmp_path} and on PYTHONPATH): run pgjobs from your project's directory, or "
        "add that directory to PYTHONPATH"
    ]


def test_start_says_the_same(tmp_path: Path, test_database_url: str) -> None:
    done = pgjobs("start", "--app", "nowhere", "--database-url", test_database_url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("pgjobs: error: --app nowhere: there is no")
    assert "Traceback" not in done.stderr


def test_an_error_in_the_application_shows_only_its_own_frames(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "settings.py").write_text(
        "def load():\n    raise KeyError('SHOP_API_KEY')\n"
    )
    (tmp_path / "shop" / "jobs.py").write_text("from shop import settings\n\nsettings.load()\n")
    done = pgjobs("check", "--app", "shop.jobs", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert any("shop/jobs.py" in line for line in lines)
    assert any("shop/settings.py" in line and "in load" in line for line in lines)
    assert not any("importlib" in line or "/pgjobs/" in line for line in lines)
    assert lines[-2] == "KeyError: 'SHOP_API_KEY'"
    assert lines[-1] == (
        "pgjobs: error: --app shop.jobs: importing it raised KeyError: 'SHOP_API_KEY' "
        "(the application's traceback is above)"
    )


def test_a_missing_import_inside_the_application_is_the_applications_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "billing.py").write_text("import stripe_sdk_that_is_not_installed\n")
    done = pgjobs("check", "--app", "billing", cwd=tmp_path)
    assert done.returncode == 1
    assert "billing.py" in done.stderr  # its traceback: the module exists, its import failed
    assert done.stderr.splitlines()[-1].startswith(
        "pgjobs: error: --app billing: importing it raised ModuleNotFoundError"
    )
