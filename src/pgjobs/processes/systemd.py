"""systemd's notify protocol (``Type=notify``): READY=1, STOPPING=1, WATCHDOG=1, STATUS=…

A datagram to ``$NOTIFY_SOCKET``; a no-op when not started by systemd.  The protocol is four
lines of code, so pgjobs speaks it directly rather than adding a dependency.
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall("\n".join(states).encode())
    return True


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd asked for (``WatchdogSec=``), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
