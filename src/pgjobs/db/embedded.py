"""The embedded PostgreSQL server used when no database URL is configured.

It comes from the ``pgserver`` package (PostgreSQL binaries shipped in a wheel), keeps its data in
a directory (default ``.pgjobs/`` under the current directory), listens on a Unix socket only,
and is shared by every pgjobs process that names the same directory: the first one starts it,
the others reuse it, and it keeps running after they exit (stop it with ``pgjobs embedded
stop``).  It is the development default; production always names a URL.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from pgjobs.errors import DatabaseUnreachable

DEFAULT_DIRECTORY = ".pgjobs"
DATABASE = "pgjobs"


def data_directory(directory: str | os.PathLike[str] | None = None) -> Path:
    chosen = directory or os.environ.get("PGJOBS_EMBEDDED_DIR") or DEFAULT_DIRECTORY
    return (Path(chosen) / "pgdata").resolve()


def start(directory: str | os.PathLike[str] | None = None) -> str:
    """Start (or reuse) the embedded server; returns a URL to its ``pgjobs`` database."""
    path = data_directory(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(path.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

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


def stop(directory: str | os.PathLike[str] | None = None) -> bool:
    """Stop the embedded server if it runs; returns whether one was stopped."""
    path = data_directory(directory)
    if not (path / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(str(path), cleanup_mode="stop")  # type: ignore[attr-defined]
    server.cleanup()
    return True
