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

import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from pgjobs import events, hooks
from pgjobs.config.queue import Config
from pgjobs.db.database import GAVE_UP, Database

if TYPE_CHECKING:
    from pgjobs.observability.metrics import HostExporter
from pgjobs.processes import recovery, systemd
from pgjobs.processes.base import Process, set_proctitle
from pgjobs.store import processes as processes_store

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
    # Never stall behind an application transaction (a semaphore row it holds): a pass that
    # gives up is done again later, and reaping, pruning and the watchdog go on.
    lock_timeout_ms = 2000

    def __init__(
        self,
        database: Database,
        config: Config,
        *,
        app: str | None = None,
        extra_children: list[tuple[str, int]] | None = None,
        recurring_schedule: str | None = None,
        exporter: HostExporter | None = None,
    ) -> None:
        super().__init__(database, config, metadata={"app": app})
        self.exporter = exporter  # /metrics for the host (pgjobs.observability.metrics)
        self.app = app
        self.recurring_schedule = recurring_schedule
        specs = [("worker", i) for i, w in enumerate(config.workers) for _ in range(w.processes)]
        specs += [("dispatcher", i) for i in range(len(config.dispatchers))]
        specs += extra_children or []
        self.children = [Child(kind, index) for kind, index in specs]
        self._last_prune = float("-inf")
        self._ending: dict[int, bool] = {}  # pid of an exited child -> it exited cleanly
        self._last_watchdog = float("-inf")

    # -- children -----------------------------------------------------------------------------

    def _spec(self, child: Child) -> dict[str, Any]:
        return {
            "kind": child.kind,
            "index": child.index,
            "supervisor_id": self.id,
            "database_url": self.database.url,
            "schema": self.database.schema,
            "direct_database_url": self.database.direct_url,
            "transaction_pooling": self.database.transaction_pooling,
            "config": str(self.config.path) if self.config.path else None,
            "env": self.config.env,
            "app": self.app,
            "recurring_schedule": self.recurring_schedule,
            "metrics": self.exporter is not None,
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
            if code == 0:  # a clean stop (SIGTERM to it alone, or it found itself pruned)
                log.warning("supervisor: %s %s (pid %s) stopped", child.kind, child.index, pid)
            else:
                log.error(
                    "supervisor: %s %s (pid %s) exited with %s", child.kind, child.index, pid, code
                )
            self._ending[pid] = code == 0
            if self.exporter is not None:
                self.exporter.process_exited(pid)
            child.quick_deaths = child.quick_deaths + 1 if now - child.started_at < 5 else 0
            child.restart_at = (
                now + min(30.0, 0.1 * 2**child.quick_deaths) if child.quick_deaths else now
            )
            child.popen = None
            if now >= child.restart_at:
                self.spawn(child)
        if self._ending:
            self.end_children()

    def _children(self) -> list[tuple[Any, ...]]:
        """Our children's rows: (id, pid, name, heartbeat older than the alive threshold)."""
        params = {"id": self.id, "threshold": self.config.process_alive_threshold}
        return self.execute(processes_store.CHILDREN, params)

    def end_children(self) -> None:
        """Remove the rows of children that exited, with their jobs: released (uncounted) after
        a clean exit — a stopping worker leaves its unfinished jobs to us so that they are given
        back only once their threads are dead — recovered (counted) after a crash.  A row still
        locked by a claim the dead child left running on the server is retried next pass."""
        by_pid = {int(row[1]): int(row[0]) for row in self._children()}
        for pid, clean in list(self._ending.items()):
            process_id = by_pid.get(pid)
            if process_id is None:  # it deregistered, or was pruned: nothing of it is left
                del self._ending[pid]
                continue
            end = functools.partial(
                recovery.end,
                database=self.database,
                ids=[process_id],
                recover=not clean,
                max_interruptions=self.config.max_interruptions,
                wait=False,
            )
            try:
                ended = self.with_retry(self.kind, end)
            except GAVE_UP:
                continue  # tried again next pass
            if ended.ids:
                del self._ending[pid]
                self._report(ended, "child exited" if clean else "child died")

    def recover(self, process_ids: list[int]) -> recovery.Recovered:
        """End dead processes (their rows locked first), recovering their jobs."""
        ended = self.with_retry(
            self.kind,
            functools.partial(
                recovery.end,
                database=self.database,
                ids=process_ids,
                recover=True,
                max_interruptions=self.config.max_interruptions,
            ),
        )
        self._report(ended, "recovered")
        return ended

    def _report(self, ended: recovery.Recovered, why: str) -> None:
        if ended.released:
            events.emit(
                "release_claimed",
                process_id=ended.ids[0] if len(ended.ids) == 1 else ended.ids,
                process=", ".join(str(row[2]) for row in ended.processes),
                count=ended.released,
                reason=why,
            )
        if ended.requeued or ended.failed:
            events.emit(
                "recover",
                process_ids=ended.ids,
                requeued=ended.requeued,
                failed=ended.failed,
                interrupted=ended.interrupted,
            )
            log.warning(
                "supervisor: recovered jobs of dead processes %s (%s): %s re-queued, %s failed",
                ended.ids,
                why,
                ended.requeued,
                ended.failed,
            )

    def prune(self) -> None:
        """Recover the jobs of processes anywhere whose heartbeat expired (on the database's
        clock), and kill our own children whose heartbeat expired while their process runs.

        Only while we are in contact with the database (see :meth:`in_contact`), checked again
        after each statement that may have waited out an outage, and right before the prune
        statement itself (each retry included): a stale heartbeat seen across an outage is the
        outage's doing, not its process's."""
        threshold = self.config.process_alive_threshold
        if not self.in_contact(threshold):
            return
        running = {c.popen.pid: c for c in self.children if c.popen and c.popen.poll() is None}
        alive: list[int] = []
        children = self._children()
        if not self.in_contact(threshold):  # the query waited out an outage: judge nothing
            return
        for process_id, pid, name, stale in children:
            child = running.get(int(pid))
            if child is None:
                continue
            alive.append(int(process_id))
            if stale and child.popen is not None:
                # Alive but silent (a wedged heartbeat thread, SIGSTOP, a hung interpreter):
                # it is killed, and its jobs are recovered as a crash's are, by reap().
                log.error(
                    "supervisor: %s %s (pid %s) has not beaten for over %ss; killing it",
                    child.kind,
                    child.index,
                    pid,
                    self.config.process_alive_threshold,
                )
                events.emit("kill_silent", process_id=process_id, process=name, pid=pid)
                child.popen.kill()

        def prune(conn: psycopg.Connection[Any]) -> recovery.Recovered:
            if not self.in_contact(threshold):  # lost contact (this is a retry): not now
                return recovery.Recovered()
            return recovery.prune_dead(
                conn,
                self.database,
                threshold=threshold,
                alive=[*alive, self.id or 0],
                max_interruptions=self.config.max_interruptions,
            )

        try:
            ended = self.with_retry(self.kind, prune)
        except GAVE_UP:
            return  # tried again next pass
        if ended.processes:
            names = [row[2] for row in ended.processes]
            events.emit("prune_processes", process_ids=ended.ids, names=names)
            log.warning("supervisor: pruning dead processes %s", names)
            self._report(ended, "heartbeat expired")

    def sweep(self) -> None:
        """Recover jobs claimed under a process row that no longer exists."""
        sweep = functools.partial(
            recovery.sweep_orphans,
            database=self.database,
            max_interruptions=self.config.max_interruptions,
        )
        with contextlib.suppress(*GAVE_UP):  # tried again next pass
            self.with_retry(self.kind, sweep)

    def _all_registered(self) -> bool:
        rows = self._children()
        live = {c.popen.pid for c in self.children if c.popen is not None}
        return live <= {int(r[1]) for r in rows}

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        set_proctitle(f"pgjobs-supervisor: {len(self.children)} processes")
        if self.exporter is not None:
            from pgjobs.observability import metrics

            self.exporter.start(self.database)  # a port in use stops us before anything runs
            # what the supervisor counts: pruned processes, recovered jobs
            recorder = metrics.instrument(directory=self.exporter.directory)
        self.install_signal_handlers()
        try:
            return self._run()
        finally:
            if self.exporter is not None:
                recorder.close()
                self.exporter.close()

    def _run(self) -> int:
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
        if self.pruned:  # another host judged us dead: exit non-zero so systemd restarts us
            log.error("supervisor: exiting 1 after being pruned as dead")
            return 1
        return 0

    def maintain(self, *, watchdog: bool = True) -> None:
        now = time.monotonic()
        if now - self._last_prune >= min(self.config.heartbeat_interval, 60.0):
            # Heartbeats are judged only after a threshold of unbroken contact of our own: after
            # an outage (or a stall of ours) every other process gets that long to beat again.
            if self.in_contact(self.config.process_alive_threshold):
                self.prune()
            self.sweep()
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
                code = child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "supervisor: %s %s did not stop in time; killing it", child.kind, child.index
                )
                child.popen.kill()
                child.popen.wait()
                continue
            if code != 0:  # it crashed while stopping: its jobs are recovered, counted
                self._ending[child.popen.pid] = False
        # Children that crashed (before or while stopping) first, counted; then whatever our
        # children still hold (unfinished at their shutdown_timeout, killed, or SIGQUIT) goes
        # back to ready, uncounted, now that their threads are dead.
        for _ in range(10):
            try:
                if self._ending:
                    self.end_children()
                rows = self._children()
                ended = self.with_retry(
                    self.kind,
                    functools.partial(
                        recovery.end,
                        database=self.database,
                        ids=[int(row[0]) for row in rows],
                        recover=False,
                        max_interruptions=self.config.max_interruptions,
                    ),
                )
            except GAVE_UP as exc:  # an application transaction holds a row we need
                log.warning("supervisor: %s; trying again", str(exc).strip())
                time.sleep(0.5)
                continue
            self._report(ended, "supervisor stopping")
            break
        self._ending.clear()
