"""The pool: a connection that sat idle is tested before use, one in steady use is not.

Every connection: a connect timeout and TCP keepalives, so a database host that vanished without
closing its sockets fails a statement or a wait within a bound instead of hanging it for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgjobs.db import database as database_module
from pgjobs.db.database import (
    CONNECT_TIMEOUT,
    KEEPALIVES_COUNT,
    KEEPALIVES_IDLE,
    KEEPALIVES_INTERVAL,
    TCP_USER_TIMEOUT,
    Database,
    connection_defaults,
)
from pgjobs.db.urls import to_url
from pgjobs.errors import DatabaseUnreachable


def _kill(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_an_idle_connection_killed_by_the_server_is_replaced(
    test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(test_database_url, pool_size=1)
    try:
        with db.connection() as conn:
            pid = conn.info.backend_pid
        _kill(test_database_url, pid)
        monkeypatch.setattr(database_module, "CHECK_AFTER_IDLE", 0.0)  # it has been idle "long"
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != pid
    finally:
        db.close()


def test_a_connection_in_steady_use_is_not_tested(
    test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(test_database_url, pool_size=1)
    checks: list[object] = []
    monkeypatch.setattr(
        database_module.ConnectionPool, "check_connection", staticmethod(checks.append)
    )
    try:
        for _ in range(5):
            with db.connection() as conn:
                conn.execute("SELECT 1")
        assert len(checks) == 1  # the first checkout only: it had never been used
    finally:
        db.close()


def test_the_async_pool_replaces_a_killed_idle_connection(
    test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> tuple[int, int]:
        db = Database(test_database_url, pool_size=1)
        try:
            async with db.async_connection() as conn:
                pid = conn.info.backend_pid
            _kill(test_database_url, pid)
            monkeypatch.setattr(database_module, "CHECK_AFTER_IDLE", 0.0)
            async with db.async_connection() as conn:
                await conn.execute("SELECT 1")
                return pid, conn.info.backend_pid
        finally:
            await db.close_async()

    before, after = asyncio.run(scenario())
    assert before != after


# --- Connect timeout and keepalives --------------------------------------------------------------

EXPECTED = {
    "keepalives": 1,
    "keepalives_idle": KEEPALIVES_IDLE,
    "keepalives_interval": KEEPALIVES_INTERVAL,
    "keepalives_count": KEEPALIVES_COUNT,
    "tcp_user_timeout": TCP_USER_TIMEOUT,
    "connect_timeout": CONNECT_TIMEOUT,
}
CLONE_NEWNET = 0x40000000  # <sched.h>: setns() into a network namespace


def _settings(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """What the kernel holds for the connection's socket, and the connect timeout libpq used."""
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        return {
            "keepalives": int(bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))),
            "keepalives_idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "keepalives_interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "keepalives_count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "tcp_user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            "connect_timeout": int(conn.info.get_parameters()["connect_timeout"]),
        }


def _server(url: str) -> tuple[str, int]:
    """Where the server behind ``url`` listens: a host, or the directory of its Unix socket."""
    with psycopg.connect(url) as conn:
        return conn.info.host, conn.info.port


def _dial(host: str, port: int) -> socket.socket:
    if not host.startswith("/"):
        return socket.create_connection((host, port))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(os.path.join(host, f".s.PGSQL.{port}"))
    except OSError:
        sock.close()
        raise
    return sock


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # shut down by _Proxy.close()


class _Proxy:
    """Forwards every connection accepted on ``listener`` to the server, byte for byte."""

    def __init__(self, listener: socket.socket, server: tuple[str, int]) -> None:
        self.listener, self.server = listener, server
        self.sockets: list[socket.socket] = []
        self.pumps: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def url(self, database_url: str) -> str:
        host, port = self.listener.getsockname()[:2]
        return to_url(database_url, host=host, port=str(port))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # shut down by close()
            self.sockets.append(client)
            try:
                server = _dial(*self.server)
            except OSError:
                continue
            self.sockets.append(server)
            for source, target in ((client, server), (server, client)):
                self.pumps.append(threading.Thread(target=_pump, args=(source, target)))
                self.pumps[-1].start()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.acceptor.join()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps, even one stuck in sendall()
            sock.close()
        for pump in self.pumps:
            pump.join()


@pytest.fixture
def tcp_url(test_database_url: str) -> Iterator[str]:
    """The test database over TCP: directly, or through a local proxy when the server listens
    on a Unix socket only (the embedded one)."""
    server = _server(test_database_url)
    if not server[0].startswith("/"):
        yield test_database_url
        return
    proxy = _Proxy(socket.create_server(("127.0.0.1", 0)), server)
    try:
        yield proxy.url(test_database_url)
    finally:
        proxy.close()


def test_every_connection_gets_a_connect_timeout_and_keepalives(tcp_url: str) -> None:
    db = Database(tcp_url)

    async def async_connections() -> list[dict[str, int]]:
        try:
            conn = await db.connect_async()
            async with conn:
                dedicated = _settings(conn)
            async with db.async_connection() as pooled:
                return [dedicated, _settings(pooled)]
        finally:
            await db.close_async()

    try:
        with db.connect() as dedicated, db.connection() as pooled:
            seen = [_settings(dedicated), _settings(pooled)]
        seen += asyncio.run(async_connections())
    finally:
        db.close()
    assert seen == [EXPECTED] * 4


def test_a_setting_in_the_url_wins_over_the_default(tcp_url: str) -> None:
    ours = {"keepalives_idle": 42, "tcp_user_timeout": 5000, "connect_timeout": 3}
    db = Database(to_url(tcp_url, **{key: str(value) for key, value in ours.items()}))
    try:
        with db.connect() as dedicated, db.connection() as pooled:
            seen = [_settings(dedicated), _settings(pooled)]
    finally:
        db.close()
    assert seen == [{**EXPECTED, **ours}] * 2


def test_the_defaults_leave_out_what_the_url_or_environment_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert connection_defaults("postgresql://db.example/app") == {
        key: str(value) for key, value in EXPECTED.items()
    }
    assert "keepalives_idle" not in connection_defaults("host=db.example keepalives_idle=5")
    assert "tcp_user_timeout" not in connection_defaults("postgres://db/app?tcp_user_timeout=0")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "3")  # libpq reads it: it wins too
    assert "connect_timeout" not in connection_defaults("postgresql://db.example/app")


def _unix_url(test_database_url: str) -> str:
    host, port = _server(test_database_url)
    if host.startswith("/"):
        return test_database_url  # the embedded server
    with psycopg.connect(test_database_url) as conn:
        row = conn.execute("SHOW unix_socket_directories").fetchone()
    for directory in str(row[0] if row else "").split(","):
        url = to_url(test_database_url, host=directory.strip(), port=str(port))
        try:
            psycopg.connect(url).close()
        except psycopg.OperationalError:
            continue  # not on this machine, or its authentication differs
        return url
    pytest.skip("the test server has no Unix socket this test can use")


def test_a_unix_socket_connection_accepts_the_keepalive_settings(test_database_url: str) -> None:
    # libpq applies keepalives and tcp_user_timeout to TCP only; a Unix socket ignores them.
    db = Database(_unix_url(test_database_url))
    try:
        with db.connect() as dedicated, db.connection() as pooled:
            for conn in (dedicated, pooled):
                assert conn.info.host.startswith("/")
                assert conn.info.get_parameters()["keepalives_idle"] == str(KEEPALIVES_IDLE)
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_server_that_never_answers_fails_within_the_connect_timeout(kind: str) -> None:
    # The kernel completes the handshake into the listening socket's backlog; nobody ever reads
    # or answers, as with a hung server or a proxy whose upstream is black-holed.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        # connect_timeout=1 is libpq's minimum, 2 s; the default (CONNECT_TIMEOUT) is longer.
        db = Database(f"postgresql://pgjobs@127.0.0.1:{port}/pgjobs?connect_timeout=1")
        started = time.monotonic()
        with pytest.raises(DatabaseUnreachable, match=f"127.0.0.1:{port}.*timeout"):
            if kind == "sync":
                db.connect()
            else:
                asyncio.run(db.connect_async())
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 4


class _Severable:
    """A TCP path to the test database through a network namespace whose link can be cut.

    The proxy listens inside the namespace, behind a veth pair.  ``cut()`` takes the namespace's
    end of the link down: packets to it vanish, nothing answers or resets, every socket stays
    open -- what a client sees when the database host dies or a partition starts.
    """

    def __init__(self, url: str, cut: Callable[[], None]) -> None:
        self.url, self.cut = url, cut


def _listen_in(namespace: str, host: str) -> socket.socket:
    """A listening socket inside ``namespace``, made on a thread that enters it (a socket stays
    in the namespace it was made in; the test's own threads stay where they are)."""
    made: list[socket.socket | Exception] = []

    def enter_and_listen() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{namespace}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {namespace}")
            made.append(socket.create_server((host, 0)))
        except Exception as exc:
            made.append(exc)

    thread = threading.Thread(target=enter_and_listen)
    thread.start()
    thread.join()
    if isinstance(made[0], Exception):
        raise made[0]
    return made[0]


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def _remove(link: str, namespace: str) -> None:
    _ip("link", "del", link, check=False)  # its peer goes with it
    _ip("netns", "del", namespace, check=False)


@pytest.fixture
def severable(test_database_url: str) -> Iterator[_Severable]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    pid = os.getpid()
    namespace, outer, inner = f"pgjobs-test-{pid}", f"pgj{pid}o", f"pgj{pid}i"
    block = pid % 16384 * 4  # a /30 of 10.231.0.0/16 per test run
    prefix = f"10.231.{block // 256}."
    host_ip, proxy_ip = f"{prefix}{block % 256 + 1}", f"{prefix}{block % 256 + 2}"
    _remove(outer, namespace)  # left by a killed run of this pid, if any
    try:
        _ip("netns", "add", namespace)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace: {exc.stderr.decode().strip()}")
    proxy = None
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
        _ip("addr", "add", f"{host_ip}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", namespace, "addr", "add", f"{proxy_ip}/30", "dev", inner)
        _ip("-n", namespace, "link", "set", inner, "up")
        proxy = _Proxy(_listen_in(namespace, proxy_ip), _server(test_database_url))
        yield _Severable(
            proxy.url(test_database_url), lambda: _ip("-n", namespace, "link", "set", inner, "down")
        )
    finally:
        if proxy is not None:
            proxy.close()
        _remove(outer, namespace)


def test_a_statement_to_a_vanished_server_fails_within_tcp_user_timeout(
    severable: _Severable,
) -> None:
    # tcp_user_timeout alone: the keepalives keep their defaults, far longer than this test.
    db = Database(to_url(severable.url, tcp_user_timeout="1000"))
    with db.connect() as conn:
        conn.execute("SELECT 1")
        severable.cut()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # sent, never acknowledged
        elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 4


def test_a_wait_on_a_vanished_server_fails_within_the_keepalive_bound(
    severable: _Severable, test_database_url: str
) -> None:
    # Keepalives alone (tcp_user_timeout=0 turns the default off): while the client waits for a
    # result nothing is unacknowledged, so only the probes can tell that the server is gone.
    url = to_url(
        severable.url,
        keepalives_idle="1",
        keepalives_interval="1",
        keepalives_count="1",
        tcp_user_timeout="0",
    )
    with Database(url).connect() as conn:
        pid = conn.info.backend_pid
        cut = threading.Timer(0.5, severable.cut)  # once the query is sent and acknowledged
        cut.start()
        started = time.monotonic()
        try:
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT pg_sleep(30)")
            elapsed = time.monotonic() - started
        finally:
            cut.join()
            _kill(test_database_url, pid)  # its backend is still asleep behind the proxy
    assert 1 < elapsed < 4


def test_transaction_pooling_settings_come_from_the_environment_or_queue_yml() -> None:
    from pgjobs.config import settings

    url, direct = "postgresql://app@bouncer:6432/app", "postgresql://app@db:5432/app"
    plain = settings.resolve(url, environ={})
    assert plain is not None and not plain.transaction_pooling and plain.session_url == url
    pooled = settings.resolve(url, environ={"PGJOBS_TRANSACTION_POOLING": "1"})
    assert pooled is not None and pooled.transaction_pooling and pooled.session_url is None
    both = settings.resolve(
        url,
        environ={"PGJOBS_TRANSACTION_POOLING": "true", "PGJOBS_DIRECT_DATABASE_URL": direct},
    )
    assert both is not None and both.session_url == direct
    from_yml = settings.resolve(
        url, environ={}, config_transaction_pooling=True, config_direct_url=direct
    )
    assert from_yml is not None and (from_yml.transaction_pooling, from_yml.direct_url) == (
        True,
        direct,
    )
    off = settings.resolve(
        url, environ={"PGJOBS_TRANSACTION_POOLING": "0"}, config_transaction_pooling=True
    )
    assert off is not None and not off.transaction_pooling  # the environment comes first
    database = both.open(application_name="pgjobs-test")
    assert database.session_url == direct and database.transaction_pooling
    assert database._kwargs()["prepare_threshold"] is None
    assert "prepare_threshold" not in database._kwargs(direct)  # the direct URL prepares
