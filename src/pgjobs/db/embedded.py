"""The embedded PostgreSQL server used when no database URL is configured.

It comes from the ``pgserver`` package (PostgreSQL binaries shipped in a wheel), keeps its data in
a directory (default ``.pgjobs/`` in the project's directory: the first one, from the current
directory up, holding ``config/queue.yml`` or ``pyproject.toml``), listens on a Unix socket only,
and is shared by every pgjobs process that names the same directory: the first one starts it,
the others reuse it, and it keeps running after they exit (stop it with ``pgjobs embedded
stop``).  It is the development default; production always names a URL.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from pgjobs.errors import DatabaseUnreachable

DEFAULT_DIRECTORY = ".pgjobs"
DATABASE = "pgjobs"


#: What marks a project's directory (as git and pytest find theirs): the first directory, from
#: the current one up, that holds one of these.
PROJECT_MARKERS = ("config/queue.yml", "pyproject.toml")


def project_directory(start: Path | None = None) -> Path:
    """The project the current directory belongs to (see :data:`PROJECT_MARKERS`), else the
    current directory: ``pgjobs status`` from a subdirectory uses the project's server."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if any((candidate / marker).is_file() for marker in PROJECT_MARKERS):
            return candidate
    return here


def data_directory(directory: str | os.PathLike[str] | None = None) -> Path:
    """``directory``, else ``$PGJOBS_EMBEDDED_DIR``, else ``.pgjobs/`` in the project's
    directory; the server's data is in its ``pgdata``."""
    chosen = directory or os.environ.get("PGJOBS_EMBEDDED_DIR")
    base = Path(chosen) if chosen else project_directory() / DEFAULT_DIRECTORY
    return (base / "pgdata").resolve()


def start(directory: str | os.PathLike[str] | None = None) -> str:
    """Start (or reuse) the embedded server; returns a URL to its ``pgjobs`` database."""
    path = data_directory(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(path.parent))
    try:
        with warnings.catch_warnings():  # platformdirs' XDG_RUNTIME_DIR notice: noise here
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:  # no wheel for this Python (3.13 has none yet): not installed
        raise DatabaseUnreachable(
            "no database URL is set and the embedded PostgreSQL is not installed (the pgserver "
            f"package, which ships wheels for Python 3.11 and 3.12 only; this is "
            f"{sys.version_info.major}.{sys.version_info.minor}): set PGJOBS_DATABASE_URL to "
            "a PostgreSQL server"
        ) from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")

            server = pgserver.get_server(str(path), cleanup_mode=None)  # type: ignore[attr-defined]
    except Exception as exc:  # pgserver raises bare exceptions with the server's log
        raise DatabaseUnreachable(
            f"could not start the embedded PostgreSQL in {path}: {exc}. "
            "Set PGJOBS_DATABASE_URL to use an existing server."
        ) from exc
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE};")
    uri: str = server.get_uri(DATABASE)
    return uri


def running_pid(directory: str | os.PathLike[str] | None = None) -> int | None:
    """The embedded server's postmaster pid, or None when it is not running."""
    pid_file = data_directory(directory) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, IndexError, ValueError, ProcessLookupError):
        return None
    except PermissionError:  # alive, owned by the user pgserver runs it as
        return pid
    return pid


def stop(directory: str | os.PathLike[str] | None = None, *, timeout: float = 15.0) -> bool:
    """Stop the embedded server (PostgreSQL's fast shutdown); returns whether one was running."""
    pid = running_pid(directory)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)  # fast shutdown: roll back sessions, checkpoint, exit
    deadline = time.monotonic() + timeout
    while running_pid(directory) is not None:
        if time.monotonic() > deadline:
            raise DatabaseUnreachable(f"the embedded PostgreSQL (pid {pid}) did not stop")
        time.sleep(0.05)
    _forget(data_directory(directory))
    return True


def servers(project: Path | None = None) -> list[Path]:
    """The embedded servers' directories under the project's ``.pgjobs/`` (its own, the test
    suite's in ``.pgjobs/test``, …), whether they run or not."""
    base = (project or project_directory()) / DEFAULT_DIRECTORY
    found = [*base.glob("pgdata/PG_VERSION"), *base.glob("*/pgdata/PG_VERSION")]
    return sorted(version.parent.parent for version in found)


def _forget(path: Path) -> None:
    """Drop pgserver's cached handle, so a later start() starts the server again."""
    try:
        with warnings.catch_warnings():  # platformdirs' XDG_RUNTIME_DIR notice: noise here
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import PostgresServer

        instance = PostgresServer._instances.pop(path, None)
        if instance is not None:  # its exit handler would look for the entry we just removed
            atexit.unregister(instance._cleanup)
    except (ImportError, AttributeError):  # pragma: no cover - a pgserver without the cache
        pass
