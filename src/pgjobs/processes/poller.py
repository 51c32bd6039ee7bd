"""A process whose work is a loop of ``poll()`` passes (Solid Queue's Poller).

``poll()`` does one unit of work and returns how long to sleep; the loop only sleeps, wakes
(on a notification, a finished job or a signal) and stops.  Tests call ``poll()`` directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from pgjobs import hooks
from pgjobs.db.database import GAVE_UP
from pgjobs.processes.base import Process, set_proctitle
from pgjobs.processes.listener import Listener, read_relay
from pgjobs.store.jobs import notify_channel

log = logging.getLogger("pgjobs")


class Poller(Process):
    listens = True
    # Notifications come from the host's listener instead of our own (see listener.Relay):
    # through this pipe for a worker process, by direct calls for a process that runs as a
    # thread of its supervisor (``relayed`` True, no pipe).
    relay_fd: int | None = None
    relayed = False

    def poll(self) -> float:
        raise NotImplementedError

    def wanted(self, payload: str) -> bool:
        """Whether a notification with this payload (a queue name, or ``*``) concerns us."""
        return True

    def _notified(self, payload: str) -> None:
        if self.wanted(payload):
            self.wake.set()

    def start_listener(self) -> None:
        if not self.listens:
            return
        if self.relay_fd is not None:
            threading.Thread(
                target=read_relay,
                args=(self.relay_fd, self._notified, self.stopping),
                name="pgjobs-relay",
                daemon=True,
            ).start()
            return
        if self.relayed:
            return
        if not self.config.listen_notify:
            log.info("%s: listen_notify is off; relying on polling", self.kind)
            return
        if self.database.session_url is None:
            log.info(
                "%s: the database URL is pooled per transaction and no direct_database_url is "
                "set, so LISTEN cannot work; relying on polling",
                self.kind,
            )
            return
        Listener(
            self.database, notify_channel(self.database.schema), self._notified, self.stopping
        ).start()

    def title(self) -> str:
        return f"pgjobs-{self.kind}"

    def run(self) -> None:
        """Register, loop until stopped, shut down, deregister."""
        if not self.resident:  # a thread of the supervisor leaves it its title
            set_proctitle(self.title())
        self.register()
        try:  # from here on, whatever happens, the row is deregistered (or left on purpose)
            self.start_listener()
            self.on_start()
            hooks.run(f"{self.kind}_start", self)
            while not self.stopping.is_set():
                try:
                    delay = self.poll()
                except GAVE_UP as exc:
                    # A statement gave up on a lock (lock_timeout) or was cancelled: it rolled
                    # back whole, and the pass is simply done again.
                    log.warning("%s: %s; trying again", self.kind, str(exc).strip())
                    delay = 1.0
                if delay > 0 and not self.stopping.is_set():
                    self.wake.wait(delay)
                self.wake.clear()
        except BaseException:
            # An error the loop could not get past: what we still hold is recovered as after
            # a crash (counted), so a job that brings us down every time ends up failed.
            self.crashed = True
            raise
        finally:
            self.shutdown()
            hooks.run(f"{self.kind}_stop", self)
            if not self.exit_now:  # on SIGQUIT the row stays: the supervisor releases our jobs
                self.deregister()
            self.close()

    def runs_jobs(self) -> bool:
        """Whether jobs of ours still run in our threads (a worker's ``in_flight``)."""
        return False

    def on_start(self) -> None:
        """Hook for subclasses: runs once registered."""

    def shutdown(self) -> None:
        """Hook for subclasses: finish or give back work before deregistering."""


def matches(queue: str, patterns: Iterable[str]) -> bool:
    """Whether ``queue`` is selected by worker queue patterns (``*``, ``name``, ``prefix*``)."""
    for pattern in patterns:
        if pattern in ("*", queue):
            return True
        if pattern.endswith("*") and queue.startswith(pattern[:-1]):
            return True
    return False
