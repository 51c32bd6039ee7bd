"""`pgjobs start` under systemd: Type=notify messages, process titles, lifecycle hooks."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from pgjobs.db.database import Database
from tests.engine_helpers import config_file, hook_lines, pgjobs_start, wait_for, worker_pids

pytestmark = [pytest.mark.committed, pytest.mark.slow]


def test_notify_socket_gets_ready_and_stopping_and_titles_and_hooks(
    db: Database, tmp_path: Path
) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(20)
    log = tmp_path / "log"
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
    try:
        with pgjobs_start(db.url, config_file(tmp_path), log, env=env) as proc:
            messages = [sock.recv(4096).decode()]
            assert messages[0].startswith("READY=1")
            (pid,) = wait_for(lambda: worker_pids(db.url))
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            assert title.startswith("pgjobs-worker: *")
            messages.append(sock.recv(4096).decode())
            assert messages[-1] == "WATCHDOG=1"  # every half WatchdogSec while healthy
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        while "STOPPING=1" not in messages:
            messages.append(sock.recv(4096).decode())
    finally:
        sock.close()
    hooks = hook_lines(log)
    assert hooks[0] == "hook supervisor_start"
    assert any(h.startswith("hook worker_start worker-") for h in hooks)
    assert any(h.startswith("hook worker_stop worker-") for h in hooks)
    assert hooks[-1] == "hook supervisor_stop"
