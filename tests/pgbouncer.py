"""A real PgBouncer in transaction mode in front of the test server (Debian's ``pgbouncer``).

:func:`start` writes a ``pgbouncer.ini`` into a directory, starts ``pgbouncer`` on a free port
(as the ``postgres`` user when run as root: PgBouncer refuses to run as root) and waits until it
answers.  Every database name is forwarded to the test server with the server's user, and any
client user name is accepted (``auth_type = any``): the tests run with trust authentication.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.engine_helpers import free_port

BINARIES = ("pgbouncer", "/usr/sbin/pgbouncer")

INI = """\
[databases]
* = host={host} port={port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
max_client_conn = 500
default_pool_size = {pool_size}
max_db_connections = {pool_size}
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
admin_users = {user}
"""


def binary() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def start(server_url: str, directory: Path, pool_size: int = 20) -> Iterator[str]:
    """Run PgBouncer in front of ``server_url``; yields a URL template with ``{dbname}``."""
    exe = binary()
    assert exe is not None, "pgbouncer is not installed (apt-get install pgbouncer)"
    target = conninfo_to_dict(server_url)
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        INI.format(
            host=target.get("host", "127.0.0.1"),
            port=target.get("port", 5432),
            user=target.get("user", "postgres"),
            listen_port=port,
            pool_size=pool_size,
            directory=directory,
        )
    )
    command = [exe, str(ini)]
    if os.geteuid() == 0:
        os.chmod(directory, 0o777)
        command = [exe, "-u", "postgres", str(ini)]
    output = (directory / "pgbouncer.out").open("w")
    proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(port, proc, directory)
        yield f"postgresql://{target.get('user', 'postgres')}@127.0.0.1:{port}/{{dbname}}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output.close()


def _wait_for(port: int, proc: subprocess.Popen[str], directory: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = [directory / name for name in ("pgbouncer.out", "pgbouncer.log")]
            raise RuntimeError(
                f"pgbouncer exited with {proc.returncode}: "
                + "".join(path.read_text() for path in said if path.exists())
            )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                try:
                    with psycopg.connect(
                        host="127.0.0.1", port=port, dbname="pgbouncer", user="postgres",
                        prepare_threshold=None, autocommit=True,
                    ) as admin:  # fmt: skip
                        admin.execute("SHOW VERSION")
                    return
                except psycopg.Error:
                    pass
        time.sleep(0.1)
    raise RuntimeError("pgbouncer did not start within 15 s")
