"""The supervisor (``pgjobs start``): starts, watches and replaces pgjobs' processes.

Guarantees:

- Each configured worker (``processes: N`` copies) runs as a child process — a fresh interpreter
  started with ``python -m pgjobs.processes.child``, never a ``fork()`` of this threaded process.
- The dispatchers and the scheduler run as threads of the supervisor (*residents*): their work is
  a few statements a second, and they share the supervisor's one connection (its
  :class:`~pgjobs.processes.base.Link`), each with its own process row and heartbeat.  One
  listener per host LISTENs and relays notifications to the workers (a pipe each).  A host with
  W worker processes holds W + 2 connections (docs/deployment.md).  A resident that fails is
  started again, like a child.
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
import threading
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
from pgjobs.processes.listener import Listener, Relay
from pgjobs.processes.poller import Poller
from pgjobs.store import processes as processes_store
from pgjobs.store.jobs import notify_channel

log = logging.getLogger("pgjobs")
GRACE = 1.0  # seconds past shutdown_timeout before stragglers are killed

READY_TIMEOUT = 30.0


def _exit_at_once(code: int) -> None:
    """End the process now, job threads and all (they cannot be stopped): the logs first."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


@dataclass(eq=False)  # keyed by identity (the relay's pipes)
class Child:
    kind: str
    index: int
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0
    spec: dict[str, Any] = field(default_factory=dict)

    def died(self, now: float) -> None:
        """Count a death and set when to start it again (backing off after quick deaths)."""
        self.quick_deaths = self.quick_deaths + 1 if now - self.started_at < 5 else 0
        self.restart_at = now + min(30.0, 0.1 * 2**self.quick_deaths) if self.quick_deaths else now


@dataclass(eq=False)
class Resident(Child):
    """A dispatcher or the scheduler, run as a thread of the supervisor on its link."""

    process: Poller | None = None
    thread: threading.Thread | None = None

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


RESIDENT_KINDS = ("dispatcher", "scheduler")


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
        # mode: async (Solid Queue's): the workers run as threads of this process too.
        threads = RESIDENT_KINDS if config.mode == "fork" else (*RESIDENT_KINDS, "worker")
        self.children = [Child(k, i) for k, i in specs if k not in threads]
        self.residents = [Resident(k, i) for k, i in specs if k in threads]
        # The host's listener relays to the workers; without LISTEN (off, or a pooled URL with
        # no direct one) each worker polls and says so itself.
        self.relay = Relay()
        workers = any(c.kind == "worker" for c in [*self.children, *self.residents])
        self.listening = bool(config.listen_notify and database.session_url is not None and workers)
        self._last_prune = float("-inf")
        self._ending: dict[int, bool] = {}  # pid of an exited child -> it exited cleanly
        self._last_watchdog = float("-inf")
        self._left_running: set[int] = set()  # rows of residents whose job threads still run
        self._stop_deadline = float("inf")  # set when stopping begins (signal_children)

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
        spec = self._spec(child)
        relay_fd = self.relay.pipe(child) if self.listening and child.kind == "worker" else None
        spec["relay_fd"] = relay_fd
        env = {**os.environ, "PGJOBS_CHILD": json.dumps(spec)}
        try:
            child.popen = subprocess.Popen(
                [sys.executable, "-m", "pgjobs.processes.child"],
                env=env,
                close_fds=True,
                pass_fds=() if relay_fd is None else (relay_fd,),
            )
        finally:
            if relay_fd is not None:
                os.close(relay_fd)  # the child's end
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
            self.relay.drop(child)
            if self.exporter is not None:
                self.exporter.process_exited(pid)
            child.died(now)
            child.popen = None
            if now >= child.restart_at:
                self.spawn(child)
        if self._ending:
            self.end_children()
        self.reap_residents(now)

    # -- residents ----------------------------------------------------------------------------

    def _build_resident(self, resident: Resident) -> Poller:
        if resident.kind == "worker":  # mode: async; a connection of its own, as a process's
            from pgjobs.processes.worker import Worker

            database = self.database.renamed("pgjobs-worker")
            worker = self.config.workers[resident.index]
            thread = Worker(database, self.config, worker, supervisor_id=self.id, resident=True)
            if self.listening:
                thread.relayed = True
                self.relay.direct(resident, thread._notified)
            return thread
        options: dict[str, Any] = {"supervisor_id": self.id, "link": self.link}
        made: Poller
        if resident.kind == "dispatcher":
            from pgjobs.processes.dispatcher import Dispatcher

            dispatcher = self.config.dispatchers[resident.index]
            made = Dispatcher(self.database, self.config, dispatcher, **options)
        else:
            from pgjobs.config.recurring import load_recurring
            from pgjobs.processes.scheduler import Scheduler

            tasks = load_recurring(self.recurring_schedule, env=self.config.env)
            scheduler = Scheduler(self.database, self.config, tasks, **options)
            # A tick runs the application's enqueue callbacks inside its transaction: on a
            # connection of its own, open only while ticks are enqueued, never on the link.
            scheduler.ticks_apart = True
            made = scheduler
        # On the shared link nobody may wait for a lock longer than the supervisor would: its
        # heartbeat, reaping and pruning come next.  A pass that gives up is done again.
        made.lock_timeout_ms = self.lock_timeout_ms
        return made

    def start_resident(self, resident: Resident) -> None:
        resident.process = process = self._build_resident(resident)
        resident.thread = threading.Thread(
            target=self._run_resident,
            args=(resident, process),
            name=f"pgjobs-{resident.kind}-{resident.index}",
            daemon=True,
        )
        resident.started_at = time.monotonic()
        resident.thread.start()
        log.info("supervisor: started %s %s (a thread)", resident.kind, resident.index)

    def _run_resident(self, resident: Resident, process: Poller) -> None:
        try:
            process.run()
        except Exception as exc:  # reported; the resident starts again
            if not self.stopping.is_set():
                events.thread_error(exc, f"{resident.kind} {resident.index}")

    def reap_residents(self, now: float) -> None:
        """Start residents not running: at first, and again after one ended on its own (an
        error it could not get past, or its row pruned) — it deregistered on the way out,
        recovering what it still held.  A worker thread that ended with jobs still running
        in its threads (``mode: async``) ends the whole process: those threads cannot be
        killed, and its jobs must not run elsewhere while they live."""
        if self.stopping.is_set():
            return
        for resident in self.residents:
            if resident.alive():
                continue
            if resident.process is not None and resident.process.runs_jobs():
                log.critical(
                    "supervisor: %s %s ended with jobs still running in its threads; exiting "
                    "so that they end too (they are recovered once its heartbeat expires)",
                    resident.kind,
                    resident.index,
                )
                _exit_at_once(1)
            if resident.thread is not None:
                self.relay.drop(resident)
                log.error(
                    "supervisor: %s %s stopped; starting it again", resident.kind, resident.index
                )
                resident.died(now)
                resident.thread = resident.process = None
            if now >= resident.restart_at:
                self.start_resident(resident)

    def stop_residents(self) -> None:
        for resident in self.residents:
            if resident.process is not None:
                resident.process.exit_now = self.exit_now
                resident.process.stop()
        deadline = self._stop_deadline
        for resident in self.residents:
            process, thread = resident.process, resident.thread
            if thread is None or process is None:
                continue
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("supervisor: %s %s did not stop in time", resident.kind, resident.index)
            # Jobs still running in our threads (mode: async; past shutdown_timeout, or on
            # SIGQUIT) may run elsewhere only once those threads are dead: their rows stay, we
            # exit at once, and recovery gives them back once the heartbeats have expired.
            if process.id is not None and (thread.is_alive() or process.runs_jobs()):
                self._left_running.add(process.id)

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
        ended.emit(why)
        if ended.requeued or ended.failed:
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
        residents = {r.process.id: r for r in self.residents if r.process is not None and r.alive()}
        for process_id, pid, name, stale in children:
            if int(process_id) in residents:  # a thread of ours: alive while it runs
                alive.append(int(process_id))
                if stale:
                    log.error("supervisor: the heartbeat of %s is older than %ss", name, threshold)
                continue
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
        residents = all(r.process is not None and r.process.id for r in self.residents)
        return residents and live <= {int(r[1]) for r in rows}

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        threads = "".join(f" + {r.kind}" for r in self.residents)
        set_proctitle(f"pgjobs-supervisor: {len(self.children)} processes{threads}")
        if self.exporter is not None:
            from pgjobs.observability import metrics

            self.exporter.start(self.database)  # a port in use stops us before anything runs
            # what the supervisor counts: pruned processes, recovered jobs
            recorder = metrics.instrument(directory=self.exporter.directory)
        self.install_signal_handlers()
        try:
            code = self._run()
        finally:
            if self.exporter is not None:
                recorder.close()
                self.exporter.close()
        if self._left_running:  # job threads still run: end them with the process, now
            log.warning(
                "supervisor: exiting with jobs still running in %s; they are recovered once "
                "their heartbeats expire",
                sorted(self._left_running),
            )
            _exit_at_once(code)
        return code

    def _run(self) -> int:
        self.register()
        hooks.run("supervisor_start", self)
        if self.listening:
            Listener(
                self.database,
                notify_channel(self.database.schema),
                self.relay.send,
                self._closed,
                application_name="pgjobs-listener",
            ).start()
        if self.residents:
            from pgjobs import runtime

            runtime.use(self.database)  # jobs enqueued by a tick's callbacks: the same database
        for child in self.children:
            self.spawn(child)
        self.reap_residents(time.monotonic())
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
            self.signal_children()
            self.stop_residents()
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

    def signal_children(self) -> None:
        """The first step of stopping: every child gets SIGTERM (SIGQUIT) at once, and the
        children and the residents share one deadline."""
        sig = signal.SIGQUIT if self.exit_now else signal.SIGTERM
        self._stop_deadline = time.monotonic() + (
            0.5 if self.exit_now else self.config.shutdown_timeout + GRACE
        )
        for child in self.children:
            if child.popen is not None and child.popen.poll() is None:
                child.popen.send_signal(sig)

    def stop_children(self) -> None:
        running = [c for c in self.children if c.popen is not None and c.popen.poll() is None]
        deadline = self._stop_deadline
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
                        ids=[int(row[0]) for row in rows if int(row[0]) not in self._left_running],
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
        self.relay.close()
