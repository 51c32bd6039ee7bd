"""The fault driver, the enqueuer and the watcher of a chaos run.

- :class:`Driver` injects one fault at a time, chosen by a seeded ``random.Random``: the first
  faults are every kind once in a shuffled order (so even a one-minute run sees each), then kinds
  are drawn by weight.  Each fault is written to the ledger with its interval and the pids or host
  it hit.  Between faults it restarts any supervisor that exited without being killed, and
  records that exit (a violation).
- :class:`Enqueuer` enqueues a mixed workload on a direct connection (the application is never
  partitioned), and a poison pill every 15-25 seconds (half of them in a batch).  Among the
  workload: batches (plain, of jobs that end together, nested, with a job adding jobs to its own
  batch; a third with a job that fails for good) and workflows (chains, diamonds, fan-out/fan-in,
  random DAGs, each with an ``on_failure`` policy drawn; some with a job that fails for good),
  each with callbacks, written in the enqueuer's transaction; what was committed is kept
  (:class:`~tests.chaos.batch_checks.Planned`) for the checks.
- :class:`Canceller` calls ``pgjobs.cancel`` on a random sample of the enqueued jobs (a few
  seconds after their enqueue: some still wait, some run), most of the cooperative ones, and
  records each call and its answer in the ledger.  As the operator, it also retries or discards
  (:class:`pgjobs.FailedJobs`) some of the batches' and workflows' jobs that fail for good, once
  they have failed, recording each call in the ledger.
- :class:`Watcher` records when a process with an open run dies (a run's end when the process
  was not killed by the driver), and samples the live database for claimed rows without a
  process row and blocked jobs with a free slot, reporting those that persist past a grace.

Every loop ends at a deadline or when its ``stop`` event is set.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

import pgjobs
from tests.chaos import ledger, workload
from tests.chaos.batch_checks import Planned
from tests.chaos.cluster import ALIVE_THRESHOLD, Host, Server, alive
from tests.chaos.proxy import Proxy

KINDS = {  # fault kind: weight
    "kill_worker": 3.0,
    "kill_host": 1.5,
    "freeze_worker": 2.0,
    "terminate_backends": 2.0,
    "pg_restart": 1.0,
    "pg_outage": 1.0,
    "partition": 1.5,
}
ORPHAN_GRACE = 10.0  # seconds a claimed row may outlive its process row (recovery in progress)
FREE_SLOT_GRACE = 10.0  # seconds a blocked job may wait while its key has a free slot
WORKLOAD = {  # job kind: weight (and a poison pill every 15-25 s)
    "fast": 30,
    "slow": 16,
    "limited": 13,
    "unique": 9,
    "scheduled": 9,
    "fails_once": 8,
    "stepped": 6,
    "snoozer": 4,
    "cooperative": 5,
    "sequenced": 6,
    "rated": 5,
    "batch": 4,  # a batch of 2-6 jobs (and its callbacks)
    "workflow": 4,  # a workflow of 3-7 jobs (and its callbacks)
}
POLICIES = ("cancel", "run", "wait")  # a workflow's on_failure, drawn evenly
FAILING = 0.35  # the share of batches and workflows with a job that fails for good
OPERATED = 0.5  # the share of those jobs the operator retries or discards once failed
OPERATOR_DELAY = (3.0, 8.0)  # seconds after the enqueue of its first try
OPERATOR_TRIES = 12  # tries, 2 s apart, while the job has not failed yet
# The share of each kind the canceller cancels, and the delay after its enqueue (seconds).
CANCEL_PLAN: dict[str, tuple[float, float, float]] = {
    "cooperative": (0.7, 0.5, 4.0),  # mostly while it runs
    "stepped": (0.35, 0.3, 2.5),  # mostly while it runs
    "snoozer": (0.3, 0.0, 4.0),  # running, snoozing (scheduled) or blocked
    "scheduled": (0.3, 0.0, 1.5),  # before it is due: "cancelled"
    "limited": (0.15, 0.0, 2.0),  # blocked, or running
    "fast": (0.1, 0.0, 0.3),  # racing its claim
    "poison": (0.0, 0.0, 0.0),  # it must end failed
    "member": (0.05, 0.0, 3.0),  # a job of a batch
    "node": (0.06, 0.0, 6.0),  # a job of a workflow: often held (cancelled at once)
    "doomed": (0.0, 0.0, 0.0),  # fails for good: the operator's (a retry drops a cancel)
}
CANCEL_OTHERS = (0.05, 0.0, 3.0)
CANCEL_POOL_TIMEOUT = 10.0  # seconds a cancel waits for a connection (the server may be down)


class Driver:
    def __init__(
        self, rng: random.Random, hosts: list[Host], server: Server, ledger_url: str
    ) -> None:
        self.rng = rng
        self.hosts = hosts
        self.server = server
        self.ledger_url = ledger_url
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()  # drawn, but found no worker to hit
        self.killed: set[int] = set()  # supervisor pids the driver killed
        self.unexpected_exits: list[dict[str, Any]] = []
        self.last_fault: dict[str, str] = {}
        self.cut: set[str] = set()  # hosts partitioned past the threshold since they started
        self.log: list[str] = []

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        first = list(KINDS)
        self.rng.shuffle(first)
        with ledger.connect(self.ledger_url) as conn:
            while time.monotonic() < deadline:
                self.ensure_hosts()
                time.sleep(min(self.rng.uniform(1.0, 4.0), max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= deadline:
                    break
                kind = first.pop(0) if first else self._draw()
                getattr(self, kind)(conn)
        self.ensure_hosts()

    def _draw(self) -> str:
        return self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]

    def _record(self, conn: psycopg.Connection[Any], kind: str, host: str | None,
                pids: list[int], detail: str = "") -> int:  # fmt: skip
        self.counts[kind] += 1
        if host is not None:
            self.last_fault[host] = f"{kind} {detail} from {time.strftime('%H:%M:%S')}".strip()
        self.log.append(f"{time.strftime('%H:%M:%S')} {kind} {host or ''} {pids} {detail}")
        return ledger.start_fault(conn, kind, host, pids, detail)

    def _host(self) -> Host:
        return self.rng.choice([h for h in self.hosts if h.running()] or self.hosts)

    def ensure_hosts(self) -> None:
        """Start a replacement for every supervisor that exited; note those nobody killed."""
        for host in self.hosts:
            self.ensure_host(host)

    def ensure_host(self, host: Host) -> None:
        """Start a replacement for ``host``'s supervisor if it exited; note it if nobody killed
        it.  Only for this host: at the end, hosts already SIGTERMed must stay stopped."""
        if host.popen is not None and not host.running():
            if host.pid not in self.killed:
                self.unexpected_exits.append(
                    {"host": host.name, "pid": host.pid, "code": host.popen.returncode,
                     "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                     "last_fault_on_host": self.last_fault.get(host.name, "none"),
                     "after_partition": host.name in self.cut}
                )  # fmt: skip
            self.cut.discard(host.name)
            host.start()

    # -- the faults -----------------------------------------------------------------------------

    def kill_worker(self, conn: psycopg.Connection[Any]) -> None:
        host = self._host()
        workers = host.workers()
        if not workers:
            self.skipped["kill_worker"] += 1  # the host is between workers (restarting them)
            return
        pid = self.rng.choice(workers)
        fault = self._record(conn, "kill_worker", host.name, [pid])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        ledger.end_fault(conn, fault)

    def kill_host(self, conn: psycopg.Connection[Any]) -> None:
        host = self._host()
        fault = self._record(conn, "kill_host", host.name, host.pids())
        self.killed.add(host.pid)
        host.kill()
        self.cut.discard(host.name)
        ledger.end_fault(conn, fault)
        time.sleep(self.rng.uniform(0.0, 2.0))
        host.start()  # the replacement: the run goes on with three hosts

    def freeze_worker(self, conn: psycopg.Connection[Any]) -> None:
        host = self._host()
        workers = host.workers()
        if not workers:
            self.skipped["freeze_worker"] += 1
            return
        pid = self.rng.choice(workers)
        long = self.rng.random() < 0.5
        seconds = ALIVE_THRESHOLD + self.rng.uniform(1, 3) if long else self.rng.uniform(0.3, 2)
        fault = self._record(conn, "freeze_worker", host.name, [pid], f"{seconds:.1f}s")
        try:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(seconds)
        except ProcessLookupError:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            ledger.end_fault(conn, fault)

    def terminate_backends(self, conn: psycopg.Connection[Any]) -> None:
        fault = self._record(conn, "terminate_backends", None, [])
        try:
            with psycopg.connect(self.server.url, autocommit=True, connect_timeout=5) as pg:
                row = pg.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity"
                    " WHERE application_name LIKE 'pgjobs-%%' AND random() < 0.5"
                ).fetchone()
            self.log.append(f"  terminated {row[0] if row else 0} connections")
        except psycopg.Error as exc:
            self.log.append(f"  terminate_backends failed: {exc}")
        ledger.end_fault(conn, fault)

    def pg_restart(self, conn: psycopg.Connection[Any]) -> None:
        fault = self._record(conn, "pg_restart", None, [])
        self.server.stop()
        self.server.start()
        ledger.end_fault(conn, fault)

    def pg_outage(self, conn: psycopg.Connection[Any]) -> None:
        seconds = ALIVE_THRESHOLD + self.rng.uniform(1, 3)
        fault = self._record(conn, "pg_outage", None, [], f"{seconds:.1f}s")
        self.server.stop()
        try:
            time.sleep(seconds)
        finally:
            self.server.start()
            ledger.end_fault(conn, fault)

    def partition(self, conn: psycopg.Connection[Any]) -> None:
        host = self._host()
        long = self.rng.random() < 0.75
        seconds = ALIVE_THRESHOLD + self.rng.uniform(1, 3) if long else self.rng.uniform(0.5, 2)
        fault = self._record(conn, "partition", host.name, host.pids(), f"{seconds:.1f}s")
        if long:
            self.cut.add(host.name)
        host.proxy.partition()
        try:
            time.sleep(seconds)
        finally:
            host.proxy.heal()
            ledger.end_fault(conn, fault)

    def heal_all(self, proxies: list[Proxy]) -> None:
        for proxy in proxies:
            proxy.heal()
        for host in self.hosts:
            for pid in host.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        if not self.server.running:
            self.server.start()
        self.ensure_hosts()


class Enqueuer:
    """Enqueues jobs until stopped; ``not_before`` maps scheduled jobs to their due time."""

    def __init__(
        self,
        rng: random.Random,
        url: str,
        rate: float = 4.0,
        canceller: Canceller | None = None,
    ) -> None:
        self.rng = rng
        self.url = url
        self.canceller = canceller
        self.interval = 1.0 / rate
        self.counts: Counter[str] = Counter()
        self.errors = 0
        self.error_kinds: Counter[str] = Counter()
        self.not_before: dict[str, datetime] = {}
        # Sequenced jobs: job_id -> (account, its place in the account's enqueue order).
        self.sequence: dict[str, tuple[str, int]] = {}
        self._next_seq: Counter[str] = Counter()
        self.stop = threading.Event()
        self._next_poison = 0.0
        # Batches and workflows committed, and those of the transaction in progress (with the
        # cancels and operations to plan once it commits).
        self.groups: list[Planned] = []
        self._uncommitted: list[tuple[Any, list[Planned], list[tuple[str, str]],
                                      list[tuple[str, str]]]] = []  # fmt: skip

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self._next_poison = time.monotonic() + self.rng.uniform(5, 15)
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, connect_timeout=3)
                self._uncommitted.clear()
                kind, handle = self.enqueue_one(conn)
                conn.commit()
                if self.canceller is not None and handle is not None and handle.enqueued:
                    self.canceller.consider(str(handle.job_id), kind)
                self._committed()
            except Exception as exc:  # psycopg's errors, or pgjobs' wrapping of them
                self._uncommitted.clear()
                self.errors += 1
                self.error_kinds[type(exc).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
                self.stop.wait(0.5)
            self.stop.wait(self.rng.expovariate(1.0 / self.interval))
        if conn is not None:
            conn.close()

    def enqueue_one(self, conn: psycopg.Connection[Any]) -> tuple[str, pgjobs.EnqueuedJob | None]:
        """Enqueue one job (not committed); its kind and handle."""
        rng = self.rng
        if time.monotonic() >= self._next_poison:
            self._next_poison = time.monotonic() + rng.uniform(15, 25)
            self.counts["poison"] += 1
            if rng.random() < 0.5:
                self.batch(conn, shape="poison")
                return "poison", None
            return "poison", workload.PoisonPill.set(connection=conn).perform_later()
        kind = rng.choices(list(WORKLOAD), weights=list(WORKLOAD.values()))[0]
        self.counts[kind] += 1
        if kind == "fast":
            handle = workload.Fast.set(connection=conn).perform_later(rng.randrange(10**6))
        elif kind == "slow":
            handle = workload.Slow.set(connection=conn).perform_later(round(rng.uniform(1, 5), 2))
        elif kind == "limited":
            store = f"store-{rng.randrange(4)}"
            handle = workload.Limited.set(connection=conn).perform_later(
                store, round(rng.uniform(1, 3), 2)
            )
        elif kind == "unique":
            name = f"index-{rng.randrange(5)}"
            handle = workload.Unique.set(connection=conn).perform_later(
                name, round(rng.uniform(0.5, 2), 2)
            )
        elif kind == "fails_once":
            handle = workload.FailsOnce.set(connection=conn).perform_later(
                round(rng.uniform(0, 1), 2)
            )
        elif kind == "stepped":
            handle = workload.Stepped.set(connection=conn).perform_later(
                rng.randint(10, 30), round(rng.uniform(0.05, 0.2), 3)
            )
        elif kind == "snoozer":
            handle = workload.Snoozer.set(connection=conn).perform_later(
                f"nap-{rng.randrange(3)}", rng.randint(1, 2), round(rng.uniform(1.5, 3), 2)
            )
        elif kind == "cooperative":
            handle = workload.Cooperative.set(connection=conn).perform_later(rng.randint(15, 45))
        elif kind == "sequenced":
            account = f"acct-{rng.randrange(3)}"
            seq = self._next_seq[account]
            self._next_seq[account] += 1
            handle = workload.Sequenced.set(connection=conn).perform_later(
                account, seq, round(rng.uniform(0.05, 0.6), 2), rng.random() < 0.2
            )
            self.sequence[str(handle.job_id)] = (account, seq)
        elif kind == "rated":
            handle = workload.Rated.set(connection=conn).perform_later(
                f"acct-{rng.randrange(2)}", rng.randrange(10**6)
            )
        elif kind == "batch":
            self.batch(conn)
            handle = None
        elif kind == "workflow":
            self.workflow(conn)
            handle = None
        else:
            wait = round(rng.uniform(1, 8), 2)
            job = workload.Slow.set(connection=conn, wait=timedelta(seconds=wait))
            handle = job.perform_later(round(rng.uniform(0.1, 1), 2))
            self.not_before[str(handle.job_id)] = datetime.now(UTC) + timedelta(seconds=wait)
        return kind, handle

    # -- batches and workflows ------------------------------------------------------------------

    def _committed(self) -> None:
        """The transaction committed: keep its batches, plan its cancels and operations."""
        for written, groups, cancels, operations in self._uncommitted:
            done = {str(h.job_id) for h in written if h.enqueued}
            for group in groups:
                group.members = [j for j in group.members if j in done]
                self.groups.append(group)
            if self.canceller is not None:
                for job_id, kind in cancels:
                    if job_id in done:
                        self.canceller.consider(job_id, kind)
                for job_id, action in operations:
                    if job_id in done:
                        self.canceller.operate(job_id, action)
        self._uncommitted.clear()

    def _callbacks(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Callback options (on_finish always, on_success and on_discard mostly) and their jobs'
        ids by kind."""
        rng = self.rng
        options: dict[str, Any] = {"on_finish": workload.BatchCallback.build("finish")}
        if rng.random() < 0.85:
            options["on_success"] = workload.BatchCallback.build("success")
        if rng.random() < 0.75:
            options["on_discard"] = workload.BatchCallback.build("discard")
        return options, {k[3:]: str(job.job_id) for k, job in options.items()}

    def _failing(self, stumbles: bool) -> pgjobs.Job:
        tag = f"f{self.rng.randrange(10**6)}"
        return workload.Stumbles.build(tag) if stumbles else workload.Doomed.build(tag)

    def _member(self) -> tuple[pgjobs.Job, str]:
        """A job of a plain batch, and its kind for the canceller."""
        rng = self.rng
        pick = rng.choices(
            ["node", "fails_once", "limited", "unique", "slow"], [55, 12, 12, 11, 10]
        )[0]
        if pick == "fails_once":
            return workload.FailsOnce.build(round(rng.uniform(0, 0.5), 2)), "member"
        if pick == "limited":
            seconds = round(rng.uniform(0.3, 1.5), 2)
            return workload.Limited.build(f"store-{rng.randrange(4)}", seconds), "member"
        if pick == "unique":
            return workload.Unique.build(f"index-{rng.randrange(5)}", 0.3), "member"
        if pick == "slow":
            return workload.Slow.build(round(rng.uniform(0.5, 2), 2)), "member"
        return workload.Node.build(
            f"m{rng.randrange(10**6)}", round(rng.uniform(0.02, 1), 2)
        ), "member"

    def batch(self, conn: psycopg.Connection[Any], shape: str | None = None) -> None:
        """A batch (not committed): plain, a pair of jobs that end together, nested, with a
        fan-out job, or with a poison pill."""
        rng = self.rng
        shape = shape or rng.choices(["plain", "pair", "nested", "fan_out"], [45, 25, 15, 15])[0]
        self.counts[f"batch: {shape}"] += 1
        options, callbacks = self._callbacks()
        cancels: list[tuple[str, str]] = []
        operations: list[tuple[str, str]] = []
        top = pgjobs.batch(connection=conn, description=f"chaos {shape}", **options)
        planned = [Planned(str(top.batch_id), "batch", shape, callbacks=callbacks)]

        def add(batch: pgjobs.Batch, plan: Planned, job: pgjobs.Job, kind: str) -> None:
            batch.add(job)
            plan.members.append(str(job.job_id))
            cancels.append((str(job.job_id), kind))

        if shape == "pair":  # same length, claimed together: they end within a few ms
            seconds = round(rng.uniform(0.2, 0.6), 2)
            for i in range(rng.randint(2, 3)):
                add(top, planned[0], workload.Node.build(f"pair-{i}", seconds), "member")
        elif shape == "poison":
            add(top, planned[0], workload.PoisonPill.build(), "poison")
            for _ in range(rng.randint(1, 3)):
                add(top, planned[0], *self._member())
        else:
            for _ in range(rng.randint(2, 5)):
                add(top, planned[0], *self._member())
            if shape == "fan_out":
                add(top, planned[0], workload.FanOut.build(rng.randint(2, 4)), "member")
        if shape == "nested":
            child_options, child_callbacks = self._callbacks()
            child = top.batch(description="chaos nested", **child_options)
            planned.append(
                Planned(str(child.batch_id), "batch", "child", parent=planned[0].batch_id,
                        callbacks=child_callbacks)
            )  # fmt: skip
            for _ in range(rng.randint(1, 3)):
                add(child, planned[1], *self._member())
        if shape != "poison" and rng.random() < FAILING:
            plan = rng.choice(planned)
            failing = self._failing(stumbles=rng.random() < 0.5)
            add(top if plan is planned[0] else child, plan, failing, "doomed")
            if rng.random() < OPERATED:
                operations.append((str(failing.job_id), rng.choice(["retry", "discard"])))
        written = top.enqueue()
        self._uncommitted.append((written, planned, cancels, operations))

    def workflow(self, conn: psycopg.Connection[Any]) -> None:
        """A workflow (not committed): a chain, a diamond, a fan-out/fan-in or a random DAG,
        with an on_failure policy drawn, and maybe a job that fails for good."""
        rng = self.rng
        shape = rng.choice(["chain", "diamond", "fan", "dag"])
        policy = rng.choice(POLICIES)
        self.counts[f"workflow: {shape} {policy}"] += 1
        options, callbacks = self._callbacks()
        # The graph: for each node, the earlier nodes it runs after.
        if shape == "chain":
            after: list[list[int]] = [[]] + [[i] for i in range(rng.randint(2, 4))]
        elif shape == "diamond":
            after = [[], [0], [0], [1, 2]]
        elif shape == "fan":
            width = rng.randint(2, 4)
            after = [[]] + [[0]] * width + [list(range(1, width + 1))]
        else:
            after = [[]]
            for i in range(1, rng.randint(4, 7)):
                after.append(sorted(rng.sample(range(i), rng.randint(0, min(i, 2)))))
        # The job that fails for good: mostly one that others wait for (the policy then acts).
        upstream = sorted({d for deps in after for d in deps})
        failing = None
        if rng.random() < FAILING:
            pool = upstream if upstream and rng.random() < 0.8 else range(len(after))
            failing = rng.choice(list(pool))
        jobs: list[pgjobs.Job] = []
        kinds: list[str] = []
        for i in range(len(after)):
            if i == failing:
                jobs.append(self._failing(stumbles=policy == "wait"))
                kinds.append("doomed")
                continue
            pick = rng.choices(["node", "fails_once", "limited", "scheduled"], [75, 10, 8, 7])[0]
            if pick == "fails_once":
                jobs.append(workload.FailsOnce.build(round(rng.uniform(0, 0.3), 2)))
            elif pick == "limited":
                jobs.append(workload.Limited.build(f"store-{rng.randrange(4)}", 0.5))
            elif pick == "scheduled":
                wait = round(rng.uniform(1, 4), 2)
                jobs.append(workload.Node.set(wait=timedelta(seconds=wait)).build(f"s{i}", 0.1))
                self.not_before[str(jobs[-1].job_id)] = datetime.now(UTC) + timedelta(seconds=wait)
            else:
                jobs.append(workload.Node.build(f"n{i}", round(rng.uniform(0.02, 0.8), 2)))
            kinds.append("node")
        config = {"on_failure": policy, "description": f"chaos {shape}", **options}
        if shape == "chain":  # each after the one before
            wf = pgjobs.chain(*jobs, connection=conn, **config)
            written = wf.enqueued
        else:
            wf = pgjobs.workflow(connection=conn, **config)
            for job, deps in zip(jobs, after, strict=True):
                wf.add(job, after=[jobs[d] for d in deps])
            written = wf.enqueue()
        ids = [str(j.job_id) for j in jobs]
        plan = Planned(str(wf.batch_id), "workflow", shape, policy=policy, members=list(ids),
                       edges=[(ids[i], ids[d]) for i, deps in enumerate(after) for d in deps],
                       callbacks=callbacks)  # fmt: skip
        operations = []
        if failing is not None and policy != "run" and rng.random() < OPERATED:
            action = rng.choice(["retry", "retry", "discard"] if policy == "wait" else ["discard"])
            operations.append((ids[failing], action))
        self._uncommitted.append((written, [plan], list(zip(ids, kinds, strict=True)), operations))


class Canceller:
    """Cancels a sample of the enqueued jobs (:data:`CANCEL_PLAN`) with ``pgjobs.cancel``, on a
    direct connection (never partitioned; the server may be down), in a thread of its own: a
    call may wait for the server.  Each call is recorded in the ledger before it is made, and
    its answer after."""

    def __init__(self, rng: random.Random, url: str, ledger_url: str) -> None:
        self.rng = rng
        self.url = url
        self.ledger_url = ledger_url
        self.stop = threading.Event()
        self.answers: Counter[str] = Counter()  # "kind: answer"
        self._planned: list[tuple[float, str, str]] = []  # (due, job id, kind)
        self._operations: list[tuple[float, str, str, int]] = []  # (due, job id, action, tries)
        self.operated: Counter[str] = Counter()  # "action: answer"
        self._lock = threading.Lock()

    def consider(self, job_id: str, kind: str) -> None:
        """Called by the enqueuer once a job is committed: cancel it later, maybe."""
        share, low, high = CANCEL_PLAN.get(kind, CANCEL_OTHERS)
        if self.rng.random() < share:
            due = time.monotonic() + self.rng.uniform(low, high)
            with self._lock:
                self._planned.append((due, job_id, kind))

    def operate(self, job_id: str, action: str) -> None:
        """Retry or discard the job once it has failed (tried from a few seconds on)."""
        due = time.monotonic() + self.rng.uniform(*OPERATOR_DELAY)
        with self._lock:
            self._operations.append((due, job_id, action, OPERATOR_TRIES))

    def _due_operations(self) -> list[tuple[float, str, str, int]]:
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._operations if p[0] <= now]
            self._operations = [p for p in self._operations if p[0] > now]
        return sorted(due)

    def _due(self) -> list[tuple[float, str, str]]:
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._planned if p[0] <= now]
            self._planned = [p for p in self._planned if p[0] > now]
        return sorted(due)

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        database = pgjobs.Database(self.url, pool_size=1, application_name="chaos-canceller")
        try:
            with ledger.connect(self.ledger_url) as conn:
                while not self.stop.is_set() and time.monotonic() < deadline:
                    for _, job_id, kind in self._due():
                        if self.stop.is_set():
                            break
                        self.cancel(conn, database, job_id, kind)
                    for _, job_id, action, tries in self._due_operations():
                        if self.stop.is_set():
                            break
                        self.operation(conn, database, job_id, action, tries)
                    self.stop.wait(0.05)
        finally:
            database.close()

    def cancel(
        self, conn: psycopg.Connection[Any], database: pgjobs.Database, job_id: str, kind: str
    ) -> None:
        call = ledger.start_cancel(conn, job_id, kind)
        try:
            if database._pool is None:
                database.pool.timeout = CANCEL_POOL_TIMEOUT  # not psycopg_pool's 30 s
            answer: str = pgjobs.cancel(job_id, database=database)
        except Exception as exc:  # the server is down, or restarting: it may or may not have taken
            answer = f"error:{type(exc).__name__}"
        ledger.end_cancel(conn, call, answer)
        self.answers[f"{kind}: {answer}"] += 1

    def operation(self, conn: psycopg.Connection[Any], database: pgjobs.Database, job_id: str,
                  action: str, tries: int) -> None:  # fmt: skip
        """The operator's retry or discard; tried again 2 s later while the job has not failed
        (``not_failed`` calls are recorded too: they change nothing)."""
        call = ledger.start_operation(conn, job_id, action)
        try:
            if database._pool is None:
                database.pool.timeout = CANCEL_POOL_TIMEOUT
            failed = pgjobs.FailedJobs(database)
            done = failed.retry(job_id) if action == "retry" else failed.discard(job_id)
            answer = "done" if done else "not_failed"
        except Exception as exc:  # it may or may not have taken
            answer = f"error:{type(exc).__name__}"
        ledger.end_operation(conn, call, answer)
        if answer != "done" and tries > 1:
            with self._lock:
                self._operations.append((time.monotonic() + 2.0, job_id, action, tries - 1))
        else:
            self.operated[f"{action}: {answer}"] += 1


ORPHANS = """
SELECT j.job_id::text, c.process_id FROM pgjobs_claimed_executions c
JOIN pgjobs_jobs j ON j.id = c.job_id
WHERE NOT EXISTS (SELECT 1 FROM pgjobs_processes p WHERE p.id = c.process_id)
"""

FREE_SLOTS = """
SELECT j.job_id::text, b.concurrency_key FROM pgjobs_blocked_executions b
JOIN pgjobs_jobs j ON j.id = b.job_id
LEFT JOIN pgjobs_semaphores s ON s.key = b.concurrency_key
WHERE coalesce(s.value, 0) < j.concurrency_limit
"""


class Watcher:
    """Death watch (every 0.1 s) and live-database samples (every second)."""

    def __init__(self, ledger_url: str, server: Server) -> None:
        self.ledger_url = ledger_url
        self.server = server
        self.stop = threading.Event()
        self.persisting: dict[str, list[dict[str, Any]]] = {"orphan_claim": [], "free_slot": []}
        self._first_seen: dict[tuple[str, str], tuple[float, Any]] = {}
        self._reported: set[tuple[str, str]] = set()
        self._ledger: psycopg.Connection[Any] | None = None
        self.errors = 0

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        last_sample = 0.0
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self.sweep()
            except psycopg.Error:  # the ledger's server is not faulted; retry anyway
                self.errors += 1
                self._ledger = None
            if time.monotonic() - last_sample >= 1.0:
                last_sample = time.monotonic()
                self.sample()
            self.stop.wait(0.1)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    def sweep(self) -> None:
        """Record the death of every process that had a run open and is gone."""
        if self._ledger is None or self._ledger.closed:
            self._ledger = ledger.connect(self.ledger_url)
        for pid in ledger.open_run_pids(self._ledger):
            if not alive(pid):
                ledger.record_death(self._ledger, pid)

    def sample(self) -> None:
        try:
            with psycopg.connect(self.server.url, autocommit=True, connect_timeout=2) as pg:
                orphans = pg.execute(ORPHANS).fetchall()
                free = pg.execute(FREE_SLOTS).fetchall()
        except psycopg.Error:
            self.errors += 1
            return  # the server is down: keep what was seen
        self._track("orphan_claim", orphans, ORPHAN_GRACE)
        self._track("free_slot", free, FREE_SLOT_GRACE)

    def _track(self, check: str, rows: list[tuple[Any, ...]], grace: float) -> None:
        now = time.monotonic()
        seen = {(check, str(r[0])): r[1] for r in rows}
        for key in [k for k in self._first_seen if k[0] == check and k not in seen]:
            del self._first_seen[key]
        for key, detail in seen.items():
            first, _ = self._first_seen.setdefault(key, (now, detail))
            if now - first > grace and key not in self._reported:
                self._reported.add(key)
                self.persisting[check].append(
                    {"job_id": key[1], "detail": str(detail), "for_seconds": round(now - first, 1)}
                )


def in_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
