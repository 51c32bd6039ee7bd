"""The supervisor (``pgjobs start``): starts, watches and replaces pgjobs' processes.

Guarantees:

- Each configured worker (``processes: N`` copies) and dispatcher runs as a child process — a
  fresh interpreter started with ``python -m pgjobs.processes.child``, never a ``fork()`` of this
  threaded process.
- A child that dies (crash, OOM kill, SIGKILL) is replaced, and the jobs it held are recovered
  at once: back to ready with the interrupted attempt counted, or failed with
  ``ProcessExitError`` once interrupted ``max_interruptions`` times.
- Maintenance: processes anywhere whose heartbeat is older than ``process_alive_threshold``
  (a vanished host) are pruned and their jobs recovered the same way.  Pruning locks with
  ``SKIP LOCKED``, so several supervisors never recover the same process twice.
- SIGTERM/SIGINT: children get SIGTERM and ``shutdown_timeout`` to finish; any still alive after
  that (plus a second of grace) are killed and their jobs given back to ready.  SIGQUIT: children
  get SIGQUIT and the supervisor gives their jobs back.  The supervisor exits 0 within
  ``shutdown_timeout + 2`` seconds: set systemd's ``TimeoutStopSec`` above that.
- With ``Type=notify`` it tells systemd READY=1 once every child has registered, STOPPING=1 when
  it begins to stop, and WATCHDOG=1 while its database connection works.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pgjobs import clock, concurrency, events, hooks
from pgjobs.config import Config
from pgjobs.db.database import Database
from pgjobs.processes import systemd
from pgjobs.processes.base import Process, set_proctitle
from pgjobs.store import claimed as claimed_store
from pgjobs.store import processes as processes_store
from pgjobs.store.jobs import notify_channel

log = logging.getLogger("pgjobs")
GRACE = 1.0  # seconds past shutdown_timeout before stragglers are killed
READY_TIMEOUT = 30.0


@dataclass
class Child:
    kind: str
    index: int
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0
    spec: dict[str, Any] = field(default_factory=dict)


class Supervisor(Process):
    kind = "supervisor"

    def __init__(
        self,
        database: Database,
        config: Config,
        *,
        app: str | None = None,
        extra_children: list[tuple[str, int]] | None = None,
        recurring_schedule: str | None = None,
    ) -> None:
        super().__init__(database, config, metadata={"app": app})
        self.app = app
        self.recurring_schedule = recurring_schedule
        specs = [("worker", i) for i, w in enumerate(config.workers) for _ in range(w.processes)]
        specs += [("dispatcher", i) for i in range(len(config.dispatchers))]
        specs += extra_children or []
        self.children = [Child(kind, index) for kind, index in specs]
        self._last_prune = float("-inf")
        self._last_watchdog = float("-inf")

    # -- children -----------------------------------------------------------------------------

    def _spec(self, child: Child) -> dict[str, Any]:
        return {
            "kind": child.kind,
            "index": child.index,
            "supervisor_id": self.id,
            "database_url": self.database.url,
            "schema": self.database.schema,
            "config": str(self.config.path) if self.config.path else None,
            "env": self.config.env,
            "app": self.app,
            "recurring_schedule": self.recurring_schedule,
        }

    def spawn(self, child: Child) -> None:
        env = {**os.environ, "PGJOBS_CHILD": json.dumps(self._spec(child))}
        child.popen = subprocess.Popen(
            [sys.executable, "-m", "pgjobs.processes.child"], env=env, close_fds=True
        )
        child.started_at = time.monotonic()
        log.info("supervisor: started %s %s (pid %s)", child.kind, child.index, child.popen.pid)

    def reap(self) -> None:
        """Replace children that exited, recovering the jobs they held."""
        now = time.monotonic()
        for child in self.children:
            if child.popen is None:
                if now >= child.restart_at:
                    self.spawn(child)
                continue
            code = child.popen.poll()
            if code is None:
                continue
            pid = child.popen.pid
            log.error(
                "supervisor: %s %s (pid %s) exited with %s", child.kind, child.index, pid, code
            )
            self.recover_child(pid)
            child.quick_deaths = child.quick_deaths + 1 if now - child.started_at < 5 else 0
            child.restart_at = (
                now + min(30.0, 0.1 * 2**child.quick_deaths) if child.quick_deaths else now
            )
            child.popen = None
            if now >= child.restart_at:
                self.spawn(child)

    def _child_ids(self, pid: int) -> list[int]:
        rows = self.execute(processes_store.CHILDREN, {"id": self.id})
        return [int(r[0]) for r in rows if r[1] == pid]

    def recover_child(self, pid: int) -> None:
        ids = self._child_ids(pid)
        if ids:
            self.recover(ids)
            self.execute(processes_store.REMOVE, {"ids": ids})

    def recover(self, process_ids: list[int]) -> None:
        rows = self.execute(
            claimed_store.RECOVER,
            {
                "process_ids": process_ids,
                "max_interruptions": self.config.max_interruptions,
                "channel": notify_channel(self.database.schema),
            },
        )
        requeued, failed, _notified, keys = rows[0]
        if keys:  # jobs failed after too many interruptions gave their slots back
            concurrency.unblock(self.execute, keys, channel=notify_channel(self.database.schema))
        if requeued or failed:
            events.emit("recover", process_ids=process_ids, requeued=requeued, failed=failed)
            log.warning(
                "supervisor: recovered jobs of dead processes %s: %s re-queued, %s failed",
                process_ids,
                requeued,
                failed,
            )

    def prune(self) -> None:
        """Recover the jobs of processes anywhere whose heartbeat expired."""
        cutoff = clock.now().timestamp() - self.config.process_alive_threshold
        from datetime import UTC, datetime

        # Our own children are alive if their process runs, whatever their heartbeat says (it
        # lags after a database outage): only their exit, seen by reap(), recovers their jobs.
        running = {c.popen.pid for c in self.children if c.popen and c.popen.poll() is None}
        children = self.execute(processes_store.CHILDREN, {"id": self.id})
        alive = [int(r[0]) for r in children if r[1] in running]
        rows = self.execute(
            processes_store.CLAIM_DEAD,
            {"cutoff": datetime.fromtimestamp(cutoff, UTC), "alive": [*alive, self.id or 0]},
        )
        dead = [int(r[0]) for r in rows]
        if dead:
            events.emit("prune_processes", process_ids=dead, names=[r[2] for r in rows])
            log.warning("supervisor: pruning dead processes %s", [r[2] for r in rows])
            self.recover(dead)

    def _all_registered(self) -> bool:
        rows = self.execute(processes_store.CHILDREN, {"id": self.id})
        live = {c.popen.pid for c in self.children if c.popen is not None}
        return live <= {int(r[1]) for r in rows}

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        set_proctitle(f"pgjobs-supervisor: {len(self.children)} processes")
        self.install_signal_handlers()
        self.register()
        hooks.run("supervisor_start", self)
        for child in self.children:
            self.spawn(child)
        ready_deadline = time.monotonic() + READY_TIMEOUT
        announced = False
        try:
            while not self.stopping.is_set():
                self.reap()
                if not announced and (self._all_registered() or time.monotonic() > ready_deadline):
                    systemd.notify("READY=1", f"STATUS=running {len(self.children)} processes")
                    log.info("supervisor: all %s processes started", len(self.children))
                    announced = True
                self.maintain(watchdog=announced)
                self.wake.wait(0.5 if announced else 0.1)
                self.wake.clear()
        finally:
            systemd.notify("STOPPING=1")
            self.stop_children()
            hooks.run("supervisor_stop", self)
            self.deregister()
            self.close()
        return 0

    def maintain(self, *, watchdog: bool = True) -> None:
        now = time.monotonic()
        if now - self._last_prune >= min(self.config.heartbeat_interval, 60.0):
            self.prune()
            self._last_prune = now
        interval = systemd.watchdog_interval()
        if watchdog and interval is not None and now - self._last_watchdog >= interval:
            self.execute("SELECT 1")  # healthy means the database answers
            systemd.notify("WATCHDOG=1")
            self._last_watchdog = now

    def stop_children(self) -> None:
        sig = signal.SIGQUIT if self.exit_now else signal.SIGTERM
        running = [c for c in self.children if c.popen is not None and c.popen.poll() is None]
        for child in running:
            assert child.popen is not None
            child.popen.send_signal(sig)
        deadline = time.monotonic() + (
            0.5 if self.exit_now else self.config.shutdown_timeout + GRACE
        )
        for child in running:
            assert child.popen is not None
            try:
                child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "supervisor: %s %s did not stop in time; killing it", child.kind, child.index
                )
                child.popen.kill()
                child.popen.wait()
        # Whatever our children still hold (killed, or SIGQUIT) goes back to ready, uncounted.
        for row in self.execute(processes_store.CHILDREN, {"id": self.id}):
            released = self.execute(
                claimed_store.RELEASE,
                {
                    "process_id": row[0],
                    "job_ids": None,
                    "channel": notify_channel(self.database.schema),
                },
            )
            if released and released[0][0]:
                events.emit(
                    "release_claimed",
                    process_id=row[0],
                    process=row[2],
                    count=released[0][0],
                    reason="supervisor stopping",
                )
            self.execute(processes_store.DEREGISTER, {"id": row[0]})
