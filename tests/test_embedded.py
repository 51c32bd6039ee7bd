"""The embedded development server: start (or reuse), status, stop, restart — a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psycopg
import pytest

from pgjobs.cli.main import main
from pgjobs.db import embedded

pytestmark = pytest.mark.slow
pytest.importorskip("pgserver", reason="the embedded server has no wheel for this Python")


def test_start_reuse_stop_and_restart(capsys: pytest.CaptureFixture[str]) -> None:
    # Under the repository, not pytest's tmp_path: as root, pgserver runs PostgreSQL as another
    # user, who cannot enter /tmp/pytest-of-root (mode 700).
    directory = Path(__file__).resolve().parent.parent / ".pgjobs" / f"embedded-test-{os.getpid()}"
    url = embedded.start(directory)
    assert embedded.start(directory) == url  # a second start reuses the running server
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("pgjobs",)
    assert main(["embedded", "status", "--directory", str(directory)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0].startswith("running (pid") and status[1] == f"url: {url}"
    assert main(["embedded", "url", "--directory", str(directory)]) == 0
    assert capsys.readouterr().out == f"{url}\n"  # what the README's snippet connects to
    assert main(["embedded", "stop", "--directory", str(directory)]) == 0
    assert "stopped" in capsys.readouterr().out
    assert embedded.running_pid(directory) is None
    assert not embedded.stop(directory)
    url = embedded.start(directory)  # the data survives a restart
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert embedded.stop(directory)
    shutil.rmtree(directory, ignore_errors=True)


def test_the_data_directory_is_the_projects_from_any_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGJOBS_EMBEDDED_DIR", raising=False)
    project = tmp_path / "shop"
    (project / "config").mkdir(parents=True)
    (project / "config" / "queue.yml").write_text("workers: []\n")
    deep = project / "shop" / "billing"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert embedded.data_directory() == (project / ".pgjobs" / "pgdata").resolve()
    monkeypatch.chdir(tmp_path)  # outside any project: the current directory
    assert embedded.data_directory() == (tmp_path / ".pgjobs" / "pgdata").resolve()
    monkeypatch.setenv("PGJOBS_EMBEDDED_DIR", str(tmp_path / "elsewhere"))  # still wins
    monkeypatch.chdir(deep)
    assert embedded.data_directory() == (tmp_path / "elsewhere" / "pgdata").resolve()


def test_the_projects_servers_are_found_for_stop_all(tmp_path: Path) -> None:
    for name in ("pgdata", "test/pgdata", "embedded-test-1/pgdata"):
        (tmp_path / ".pgjobs" / name).mkdir(parents=True)
        (tmp_path / ".pgjobs" / name / "PG_VERSION").write_text("15\n")
    (tmp_path / ".pgjobs" / "empty").mkdir()  # no server there
    base = tmp_path / ".pgjobs"
    assert embedded.servers(tmp_path) == [base, base / "embedded-test-1", base / "test"]
