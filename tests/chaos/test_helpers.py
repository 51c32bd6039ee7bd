"""Fast tests of the chaos suite's own helpers (the proxy and the checks); no database needed."""

from __future__ import annotations

import random
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.chaos import batch_checks, checks
from tests.chaos.batch_checks import BatchRow, CallbackJob, Edge, Planned, World
from tests.chaos.checks import JobState
from tests.chaos.cluster import Host
from tests.chaos.driver import Driver
from tests.chaos.ledger import (
    CallbackSeen,
    Cancel,
    DependencySeen,
    Fault,
    Operation,
    Run,
    StepEvent,
)
from tests.chaos.proxy import Proxy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


@pytest.fixture
def echo_proxy() -> Iterator[Proxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = Proxy(lambda: f"127.0.0.1:{server.server_address[1]}")
    try:
        yield proxy
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()


def test_the_proxy_forwards_black_holes_while_partitioned_and_delivers_after_the_heal(
    echo_proxy: Proxy,
) -> None:
    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=5) as client:
        client.sendall(b"ping")
        assert client.recv(16) == b"ping"
        echo_proxy.partition()
        client.sendall(b"lost?")
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):  # half-open: no answer, no reset, no EOF
            client.recv(16)
        echo_proxy.heal()
        client.settimeout(5)
        assert client.recv(16) == b"lost?"  # delivered late, as TCP retransmits


def test_a_connection_opened_during_a_partition_hangs_until_the_heal(echo_proxy: Proxy) -> None:
    echo_proxy.partition()
    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=5) as client:
        client.sendall(b"hello")
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(16)
        echo_proxy.heal()
        client.settimeout(5)
        assert client.recv(16) == b"hello"


def run(
    id: int, start: float, end: float | None, *, job: str = "j1", pid: int = 1,
    host: str = "host-a", key: str | None = None, outcome: str | None = "ok",
) -> Run:  # fmt: skip
    return Run(id, job, "slow", key, host, pid, 1, at(start), None if end is None else at(end),
               outcome if end is not None else None)  # fmt: skip


def fault(kind: str, start: float, end: float, *, pids: tuple[int, ...] = (),
          host: str | None = None) -> Fault:  # fmt: skip
    return Fault(1, kind, host, pids, at(start), at(end), "")


def test_a_killed_run_ends_at_its_kill_and_never_overlaps_its_rerun() -> None:
    runs = [run(1, 0, None, pid=7), run(2, 1.1, 2)]
    faults = [fault("kill_worker", 1.0, 1.0, pids=(7,))]
    ends = checks.run_ends(runs, faults, {7: at(1.3)})
    assert ends.at[1] == at(1.0) and ends.source[1] == "kill"
    violations, excused = checks.check_overlaps(runs, ends, faults, 4.0, at(10))
    assert violations == [] and excused == set()


def test_overlapping_runs_are_a_violation_unless_the_older_was_frozen_past_the_threshold() -> None:
    runs = [run(1, 0, 8, pid=7), run(2, 6, 7, pid=8)]
    ends = checks.run_ends(runs, [], {})
    violations, _ = checks.check_overlaps(runs, ends, [], 4.0, at(10))
    assert [v.check for v in violations] == ["overlap"]
    short = [fault("freeze_worker", 1, 3, pids=(7,))]
    assert checks.check_overlaps(runs, ends, short, 4.0, at(10))[0] != []
    long = [fault("freeze_worker", 1, 6, pids=(7,))]
    assert checks.check_overlaps(runs, ends, long, 4.0, at(10)) == ([], {1})
    partition = [fault("partition", 1, 6, host="host-a")]
    assert checks.check_overlaps(runs, ends, partition, 4.0, at(10)) == ([], {1})


def test_limits_count_runs_of_a_key_at_once() -> None:
    runs = [
        run(1, 0, 5, job="a", key="limit:s"),
        run(2, 1, 5, job="b", key="limit:s"),
        run(3, 5, 6, job="c", key="limit:s"),  # starts as two end: fine
        run(4, 5.5, 7, job="d", key="limit:s"),
    ]
    ends = checks.run_ends(runs, [], {})
    assert checks.check_limits(runs, ends, set(), {"limit": 2}, at(10)) == []
    runs.append(run(5, 5.8, 6.5, job="e", key="limit:s"))
    ends = checks.run_ends(runs, [], {})
    assert [v.check for v in checks.check_limits(runs, ends, set(), {"limit": 2}, at(10))] == [
        "limit"
    ]


def test_order_is_the_enqueue_order_of_each_account() -> None:
    sequence = {"a": ("x", 0), "b": ("x", 1), "c": ("x", 2), "z": ("y", 0)}
    runs = [
        run(1, 0, 1, job="a", key="seq:x"),
        run(2, 1, 2, job="b", key="seq:x"),
        run(3, 2, 3, job="b", key="seq:x"),  # b's retry comes before c
        run(4, 0.5, 1, job="z", key="seq:y"),  # another account, in parallel
        run(5, 3, 4, job="c", key="seq:x"),
    ]
    assert checks.check_order(runs, sequence, set()) == []
    runs.append(run(6, 5, 6, job="a", key="seq:x"))  # a after c: out of order
    assert [v.check for v in checks.check_order(runs, sequence, set())] == ["order"]


def test_rates_count_starts_in_any_window() -> None:
    runs = [run(i, i * 0.4, i * 0.4 + 0.1, job=str(i), key="rate:a") for i in range(10)]
    # 0, 0.4, ... 3.6: 4 starts in any window of 1.6 s (2 s minus the slack)
    assert checks.check_rates(runs, {"rate": (4, 2.0)}, 0.4) == []
    assert [v.check for v in checks.check_rates(runs, {"rate": (3, 2.0)}, 0.4)] == ["rate"]


def test_final_states() -> None:
    runs = [
        run(1, 0, 1, job="ok"),
        run(2, 0, None, job="pill", pid=9),
        run(3, 0, 1, job="late", outcome="ok"),
        run(4, 0.5, None, job="late", pid=5),
    ]
    runs[1] = Run(2, "pill", "poison", None, "host-a", 9, 1, at(0), at(0.1), "poison")
    jobs = [
        JobState("ok", "tests.chaos.workload.Fast", "finished"),
        JobState("pill", "tests.chaos.workload.PoisonPill", "failed", checks.PROCESS_EXIT),
        JobState("late", "tests.chaos.workload.Slow", "finished"),
        JobState("stuck", "tests.chaos.workload.Slow", "claimed", None, None, 3, False),
        JobState("innocent", "tests.chaos.workload.Slow", "failed", checks.PROCESS_EXIT),
    ]
    ends = checks.run_ends(runs, [], {5: at(2)})
    found = checks.check_final_states(jobs, runs, ends, [], 4.0, 3, at(10))
    assert {(v.check, v.job_id) for v in found} == {
        ("final_state", "late"),  # finished, but its newest run was interrupted
        ("stranded", "stuck"),
        ("failed", "innocent"),
    }


def test_a_stale_run_after_a_long_partition_does_not_decide_the_final_state() -> None:
    runs = [
        run(1, 0, 2, job="j", pid=5, host="host-b"),  # the recovered copy, elsewhere
        run(2, 7.5, None, job="j", pid=3, host="host-a"),  # the cut-off worker's late start
    ]
    cut = [fault("partition", 1, 7, host="host-a")]
    jobs = [JobState("j", "tests.chaos.workload:Slow", "finished")]
    ends = checks.run_ends(runs, cut, {3: at(9)})
    assert checks.check_final_states(jobs, runs, ends, cut, 4.0, 3, at(10)) == []
    assert checks.check_final_states(jobs, runs, ends, [], 4.0, 3, at(10)) != []


# -- job control -------------------------------------------------------------------------------

W = "tests.chaos.workload:"


def call(job: str, asked: float, answered: float | None, answer: str | None) -> Cancel:
    return Cancel(1, job, "x", at(asked), None if answered is None else at(answered), answer)


def kind_run(
    id: int, job: str, kind: str, start: float, end: float | None, outcome: str | None,
    *, attempt: int = 1, pid: int = 1, host: str = "host-a",
) -> Run:  # fmt: skip
    return Run(id, job, kind, None, host, pid, attempt, at(start),
               None if end is None else at(end), outcome)  # fmt: skip


def test_cancels() -> None:
    runs = [
        kind_run(1, "waited", "slow", 0, 1, "raised"),  # an attempt before the cancel: fine
        kind_run(2, "ran", "slow", 6, 7, "ok"),  # started after "cancelled": a violation
        kind_run(3, "coop", "cooperative", 0, 9, "ok"),  # ran 8 s on after "cancelling"
        kind_run(4, "quick", "cooperative", 0, 3.5, "ok"),  # finished before it noticed: fine
        kind_run(5, "late", "slow", 5, 6, "ok"),  # claimed after it was asked to stop
        kind_run(6, "nap", "snoozer", 0.5, 1.5, "snoozed"),  # asked to stop as it ran: then
        kind_run(7, "nap", "snoozer", 1.8, 2, "ok"),  # claimed after the request: must not run
    ]
    cancels = [
        call("waited", 2, 2.1, "cancelled"),
        call("ran", 5, 5.2, "cancelled"),
        call("coop", 1, 1.1, "cancelling"),
        call("quick", 3, 3.1, "cancelling"),
        call("done", 3, 3.1, "finished"),
        call("late", 1, 1.1, "cancelling"),
        call("nap", 1, 1.1, "cancelling"),
    ]
    jobs = [
        JobState("waited", W + "Slow", "cancelled"),
        JobState("ran", W + "Slow", "finished"),
        JobState("coop", W + "Cooperative", "finished"),
        JobState("quick", W + "Cooperative", "finished"),
        JobState("done", W + "Fast", "finished"),
        JobState("nobody", W + "Fast", "cancelled"),
        JobState("late", W + "Slow", "finished"),
        JobState("nap", W + "Snoozer", "finished"),
    ]
    ends = checks.run_ends(runs, [], {})
    found = checks.check_cancels(jobs, runs, ends, [], 4.0, cancels, at(20))
    assert sorted((v.check, v.job_id) for v in found) == [
        ("cancel_state", "ran"),
        ("cancel_unheeded", "coop"),
        ("cancelled_ran", "ran"),
        ("ran_after_cancelling", "late"),
        ("ran_after_cancelling", "nap"),
        ("spontaneous_cancel", "nobody"),
    ]
    # A fault of its host while it ran on excuses the slow stop.
    outage = [fault("pg_outage", 2, 8)]
    found = checks.check_cancels(jobs, runs, ends, outage, 4.0, cancels, at(20))
    assert sorted((v.check, v.job_id) for v in found) == [
        ("cancel_state", "ran"),
        ("cancelled_ran", "ran"),
        ("ran_after_cancelling", "nap"),  # proven: claimed once its snoozing run had ended
        ("spontaneous_cancel", "nobody"),
    ]
    # A stale copy of a host cut off past the threshold may start after the cancel.
    cut = [fault("partition", 1, 6, host="host-a")]
    found = checks.check_cancels(jobs, runs, checks.run_ends(runs, cut, {}), cut, 4.0, cancels,
                                 at(20))  # fmt: skip
    assert "cancelled_ran" not in {v.check for v in found}


def event(id: int, run: int, step: str, name: str, value: int | None, t: float) -> StepEvent:
    return StepEvent(id, run, "s", step, name, value, at(t))


def test_steps() -> None:
    runs = [kind_run(1, "s", "stepped", 0, None, None, pid=7),
            kind_run(2, "s", "stepped", 5, 9, "ok", pid=8)]  # fmt: skip
    first = [
        event(1, 1, "-", "plan", 6, 0.1),
        event(2, 1, "prepare", "start", None, 0.2),
        event(3, 1, "prepare", "done", None, 0.4),
        event(4, 1, "prepare", "committed", None, 0.5),
        event(5, 1, "iterate", "start", None, 0.6),
        *[event(6 + i, 1, "iterate", "item", i, 0.7 + i / 10) for i in range(4)],
        event(20, 1, "iterate", "checkpoint", 4, 1.15),
    ]
    later = [
        event(30, 2, "-", "plan", 6, 5.1),
        event(31, 2, "iterate", "start", 4, 5.2),
        *[event(32 + i, 2, "iterate", "item", i, 5.3 + i / 10) for i in (4, 5)],
        event(40, 2, "iterate", "done", None, 5.6),
        event(41, 2, "iterate", "committed", None, 5.7),
        event(42, 2, "finalize", "start", None, 5.8),
        event(43, 2, "finalize", "done", None, 6),
        event(44, 2, "finalize", "committed", None, 6.1),
    ]
    cp = '{"completed":["prepare","iterate","finalize"],"step":null,"cursor":null}'
    jobs = [JobState("s", W + "Stepped", "finished", checkpoint=cp, result="6")]
    assert checks.check_steps(jobs, runs, first + later) == []
    behind = [e if e.id != 31 else event(31, 2, "iterate", "start", 2, 5.2) for e in later]
    assert [v.check for v in checks.check_steps(jobs, runs, first + behind)] == ["resume_behind"]
    ahead = [e if e.id != 31 else event(31, 2, "iterate", "start", 5, 5.2) for e in later]
    ahead = [e for e in ahead if e.id != 36]  # item 4: never run
    found = {v.check for v in checks.check_steps(jobs, runs, first + ahead)}
    assert found == {"resume_ahead", "items_lost"}  # item 4 never ran
    again = [event(29, 2, "prepare", "start", None, 5.15), *later]
    assert [v.check for v in checks.check_steps(jobs, runs, first + again)] == ["step_rerun"]
    # Its completion not proven written (the process died after the step returned): may rerun.
    unproven = [e for e in first if e.id != 4]
    assert checks.check_steps(jobs, runs, unproven + again) == []
    wrong = [JobState("s", W + "Stepped", "finished", checkpoint=cp, result=None)]
    assert [v.check for v in checks.check_steps(wrong, runs, first + later)] == ["result"]


def test_attempts_do_not_count_snoozes() -> None:
    runs = [
        kind_run(1, "z", "snoozer", 0, 0.1, "snoozed", pid=7),
        kind_run(2, "z", "snoozer", 1, 1.1, "snoozed", pid=7),
        kind_run(3, "z", "snoozer", 2, 2.1, "ok", pid=7),
    ]
    jobs = [JobState("z", W + "Snoozer", "finished", executions=1)]
    ends = checks.run_ends(runs, [], {})
    assert checks.check_attempts(jobs, runs, ends, [], 4.0, {}, at(10)) == []
    counted = [*runs[:2], kind_run(3, "z", "snoozer", 2, 2.1, "ok", pid=7, attempt=2)]
    jobs = [JobState("z", W + "Snoozer", "finished", executions=2)]
    found = checks.check_attempts(jobs, counted, ends, [], 4.0, {}, at(10))
    assert [v.check for v in found] == ["attempts"]
    # Its process was killed after it snoozed, before the snooze was recorded: recovery counted it.
    kill = [fault("kill_worker", 1.5, 1.5, pids=(7,))]
    assert checks.check_attempts(jobs, counted, ends, kill, 4.0, {}, at(10)) == []
    jobs = [JobState("z", W + "Snoozer", "finished", executions=3)]
    found = checks.check_attempts(jobs, counted, ends, kill, 4.0, {}, at(10))
    assert [v.check for v in found] == ["executions"]


def test_a_poison_neighbour_and_a_kill_after_a_run_ended_count_as_interruptions() -> None:
    runs = [
        kind_run(1, "pill", "poison", 0, 0.01, "poison", pid=5, host="host-c"),
        kind_run(2, "j", "limited", 0.005, None, None, pid=5, host="host-c"),  # its neighbour
        kind_run(3, "j", "limited", 2, None, None, attempt=2, pid=6, host="host-b"),  # killed
        kind_run(4, "j", "limited", 4, 6, "ok", attempt=3, pid=7),  # cut off before its finish
        kind_run(5, "k", "slow", 4, 4.5, "ok", attempt=1, pid=8, host="host-b"),  # killed after
    ]
    kill = fault("kill_worker", 3, 3, pids=(6,))
    cut = fault("partition", 5, 11.6, host="host-a")
    after = fault("kill_worker", 4.6, 4.6, pids=(8,))
    failed = ("failed", checks.PROCESS_EXIT)
    jobs = [JobState("j", W + "Limited", *failed), JobState("k", W + "Slow", *failed)]
    ends = checks.run_ends(runs, [kill, cut, after], {})
    found = checks.check_final_states(jobs, runs, ends, [kill, cut, after], 4.0, 3, at(20))
    assert [(v.check, v.job_id) for v in found] == [("failed", "k")]  # k: once, not 3 times
    found = checks.check_final_states(jobs, runs, ends, [kill, cut, after], 4.0, 1, at(20))
    assert found == []  # k's run ended in the ledger, then its process was killed: counted
    ends = checks.run_ends(runs, [kill], {})
    found = checks.check_final_states(jobs, runs, ends, [kill], 4.0, 3, at(20))
    assert {v.job_id for v in found} == {"j", "k"}  # without the cut: two interruptions of j


# -- batches and workflows ---------------------------------------------------------------------


def batch(
    id: int, *, total: int, pending: int = 0, succeeded: int = 0, failed: int = 0,
    discarded: int = 0, cancelled: int = 0, finished: float | None = None,
    success: float | None = None, discard: float | None = None, kind: str = "batch",
    policy: str | None = None, parent: int | None = None, callbacks: dict[str, str] | None = None,
) -> BatchRow:  # fmt: skip
    def t(x: float | None) -> datetime | None:
        return None if x is None else at(x)

    return BatchRow(id, f"b{id}", kind, parent, policy, total, pending, succeeded, failed,
                    discarded, cancelled, t(finished), t(success), t(discard),
                    callbacks if callbacks is not None else {"finish": f"fin{id}",
                                                             "success": f"ok{id}"})  # fmt: skip


def member(job_id: str, state: str, batch: int = 1, kind: str = "Node", **kw: object) -> JobState:
    return JobState(job_id, W + kind, state, batch=batch, **kw)  # type: ignore[arg-type]


def cb_run(id: int, job: str, start: float, end: float | None, *, pid: int = 3) -> Run:
    return kind_run(id, job, "callback", start, end, "ok" if end is not None else None, pid=pid)


def test_callbacks_are_written_once_and_run_once_unless_a_fault_cut_the_first_run_short() -> None:
    batches = [batch(1, total=2, succeeded=2, finished=2, success=2)]
    jobs = [member("a", "finished"), member("b", "finished"),
            JobState("fin1", W + "BatchCallback", "finished"),
            JobState("ok1", W + "BatchCallback", "finished")]  # fmt: skip
    written = [CallbackJob("fin1", "b1", "finish"), CallbackJob("ok1", "b1", "success")]
    runs = [
        kind_run(1, "a", "node", 0, 1.9, "ok", pid=1),
        kind_run(2, "b", "node", 0, 1.95, "ok", pid=2),  # the last two end together
        cb_run(3, "fin1", 2.1, 2.2),
        cb_run(4, "ok1", 2.1, 2.2),
    ]
    world = World(batches, jobs, [], [])
    ends = checks.run_ends(runs, [], {})

    def found(runs: list[Run] = runs, written: list[CallbackJob] = written,
              faults: tuple[Fault, ...] = (),
              views: tuple[CallbackSeen, ...] = ()) -> list[str]:  # fmt: skip
        ends = checks.run_ends(runs, list(faults), {})
        return sorted(v.check for v in batch_checks.check_callbacks(
            world, written, runs, ends, list(faults), 4.0, {}, list(views), at(20)))  # fmt: skip

    assert found() == []
    assert batch_checks.check_batch_counts(world, {}) == []
    # A second on_finish job row (another id), or the prepared one missing.
    assert found(written=[*written, CallbackJob("x", "b1", "finish")]) == [
        "callback_stray",
        "callback_twice",
    ]
    assert found(written=written[1:]) == []  # (the job rows are read from the jobs: still there)
    gone = World(batches, jobs[:3], [], [])
    missing = batch_checks.check_callbacks(gone, written[:1], runs, ends, [], 4.0, {}, [], at(20))
    assert [v.check for v in missing] == ["callback_missing"]
    # A second run: a violation, unless a fault cut the first short.
    again = [*runs, cb_run(5, "fin1", 3, 3.1, pid=4)]
    assert found(again) == ["callback_rerun"]
    assert found(again, faults=(fault("kill_worker", 2.3, 2.3, pids=(3,)),)) == []
    assert found(again, faults=(fault("pg_restart", 2.5, 2.8),)) == []
    assert found(again, faults=(fault("freeze_worker", 0, 1, pids=(3,)),)) == ["callback_rerun"]
    # on_finish started while a job of its batch still ran.
    early = [*runs[:1], kind_run(2, "b", "node", 0, 2.15, "ok", pid=2), *runs[2:]]
    assert found(early) == ["callback_early", "callback_early"]
    # A stale copy (its host cut off past the threshold) may still run.
    cut = [fault("partition", 0.5, 6, host="host-b")]
    stale = [*runs[:1], kind_run(2, "b", "node", 0, 2.15, "ok", pid=2, host="host-b"), *runs[2:]]
    assert found(stale, faults=tuple(cut)) == []
    # A callback job that failed (say, reading its batch) never ran.
    lost = World(batches, [*jobs[:3], JobState("ok1", W + "BatchCallback", "failed", "X")], [], [])
    found_lost = batch_checks.check_callbacks(lost, written, runs[:3], ends, [], 4.0, {}, [], at(9))
    assert [v.check for v in found_lost] == ["callback_lost"]
    # What the callbacks received.
    view = CallbackSeen(1, 3, "fin1", "finish", "b1", "succeeded", 2, 0, 2, 0, 0, 0, at(2.1))
    bad = CallbackSeen(2, 4, "ok1", "success", "b1", "failed", 2, 0, 1, 1, 0, 0, at(2.1))
    assert found(views=(view,)) == []
    assert found(views=(view, bad)) == ["callback_view"]


def test_a_job_may_run_again_after_it_succeeded_only_when_a_fault_excuses_it() -> None:
    def found(
        runs: list[Run], faults: tuple[Fault, ...] = (), skip: tuple[str, ...] = ()
    ) -> list[str]:
        ends = checks.run_ends(runs, list(faults), {})
        return [v.check for v in batch_checks.check_reruns(
            runs, ends, list(faults), 4.0, {}, at(20), set(skip))]  # fmt: skip

    ok = kind_run(1, "a", "fast", 0, 1, "ok", pid=1, host="host-b")
    raised = kind_run(1, "a", "fast", 0, 1, "raised", pid=1, host="host-b")
    stale = kind_run(2, "a", "fast", 3, 3.1, "ok", attempt=1, pid=2, host="host-a")
    assert found([ok]) == []
    assert found([raised, stale]) == []  # a retry
    assert found([ok, stale]) == ["rerun"]  # seed 982991: a stale claim ran it again
    assert found([ok, stale], skip=("a",)) == []  # callbacks: callback_rerun's
    assert found([ok, stale], faults=(fault("terminate_backends", 1.05, 1.05),)) == []
    assert found([ok, stale], faults=(fault("kill_worker", 1.2, 1.2, pids=(1,)),)) == []
    # A cut of the other host does not excuse it: the succeeded run's end was not lost.
    assert found([ok, stale], faults=(fault("partition", 0, 2.8, host="host-a"),)) == ["rerun"]


def test_batch_counts_are_the_jobs_final_states() -> None:
    batches = [
        batch(1, total=5, succeeded=2, failed=1, discarded=1, cancelled=0, pending=1,
              finished=None, discard=1,
              callbacks={"finish": "fin1", "discard": "dis1"}),
        batch(2, total=1, succeeded=1, finished=2, success=2, parent=1, callbacks={}),
    ]  # fmt: skip
    jobs = [
        member("a", "finished"),
        member("b", "failed", kind="Doomed"),
        member("c", "ready"),
        member("d", "finished", batch=2),
        JobState("dis1", W + "BatchCallback", "finished"),
    ]
    plans = [Planned("b1", "batch", "nested", members=["a", "b", "c", "gone"])]
    discard = Operation(1, "gone", "discard", at(1), at(1.1), "done")
    world = World(batches, jobs, plans, [discard])
    assert batch_checks.check_batch_counts(world, {}) == []
    # Kept, stamped discarded (a job of a batch is kept until clear_finished): the same.
    kept = [*jobs, member("gone", "discarded", kind="Doomed")]
    assert batch_checks.check_batch_counts(World(batches, kept, plans, [discard]), {}) == []
    found = batch_checks.check_batch_counts(World(batches, kept, plans, []), {})
    assert [v.check for v in found] == ["job_discarded"]
    assert checks.check_final_states(kept[-1:], [], checks.run_ends([], [], {}), [], 4.0, 3,
                                     at(9)) == []  # fmt: skip
    # Gone though nobody discarded it.
    world = World(batches, jobs, plans, [])
    assert {v.check for v in batch_checks.check_batch_counts(world, {})} == {
        "job_lost",
        "batch_counts",
    }
    # Every job ended: finished_at must be set (and on_finish written), discarded_at too.
    ended = [member("c", "cancelled") if j.job_id == "c" else j for j in jobs]
    counted = [batch(1, total=5, succeeded=2, failed=1, discarded=1, cancelled=1, discard=1,
                     callbacks={"finish": "fin1", "discard": "dis1"}), batches[1]]  # fmt: skip
    world = World(counted, ended, plans, [discard])
    assert [v.check for v in batch_checks.check_batch_counts(world, {})] == ["batch_unfinished"]
    assert [v.check for v in batch_checks.check_callbacks(
        world, [], [], checks.run_ends([], [], {}), [], 4.0, {}, [], at(20))] == []  # fmt: skip


def test_a_dependent_starts_only_after_its_dependencies_succeeded() -> None:
    jobs = [member("a", "finished"), member("b", "finished"), member("c", "finished"),
            member("d", "finished")]  # fmt: skip
    edges = [Edge("b", "a", True), Edge("c", "a", True), Edge("d", "b", True),
             Edge("d", "c", True)]  # fmt: skip
    plan = Planned("b1", "workflow", "diamond", policy="cancel", members=["a", "b", "c", "d"],
                   edges=[(e.job_id, e.depends_on) for e in edges])  # fmt: skip
    runs = [
        kind_run(1, "a", "node", 0, None, None, pid=5),  # killed, then run again
        kind_run(2, "a", "node", 1, 2, "ok", pid=6),
        kind_run(3, "b", "node", 2.1, 3, "ok"),
        kind_run(4, "c", "node", 2.1, 4, "ok"),
        kind_run(5, "d", "node", 4.2, 5, "ok"),
    ]
    kill = [fault("kill_worker", 0.5, 0.5, pids=(5,))]

    def found(runs: list[Run] = runs, edges: list[Edge] = edges, jobs: list[JobState] = jobs,
              reads: tuple[DependencySeen, ...] = (),
              policy: str = "cancel") -> list[str]:  # fmt: skip
        rows = [batch(1, total=4, kind="workflow", policy=policy, callbacks={})]
        world = World(rows, jobs, [plan], [])
        ends = checks.run_ends(runs, kill, {})
        return sorted(v.check for v in batch_checks.check_workflows(
            world, edges, runs, ends, kill, 4.0, list(reads), at(20))[0])  # fmt: skip

    assert found() == []
    assert found(edges=edges[:3]) == ["dependency_lost"]
    # d started before c's run ended.
    early = [*runs[:4], kind_run(5, "d", "node", 3.5, 5, "ok")]
    assert found(early) == ["early_start"]
    # b started while a's first run was dead and its second not started.
    assert found([*runs[:2], kind_run(3, "b", "node", 0.8, 3, "ok"), *runs[3:]]) == ["early_start"]
    # on_failure "run": a dependency that failed for good counts once its runs are over.
    failed = [member("a", "failed", kind="Doomed"), *jobs[1:]]
    ran = [kind_run(1, "a", "doomed", 0, 1, "raised"), *runs[2:]]
    assert found(ran, jobs=failed, policy="run") == []
    assert found(ran, jobs=failed, policy="cancel") == ["early_start", "early_start"]
    # What a running dependent read of its dependencies.
    ok = DependencySeen(1, 5, "d", "b", "finished", at(4.3))
    pending = DependencySeen(2, 5, "d", "c", "pending", at(4.3))
    error = DependencySeen(3, 5, "d", None, "error:OperationalError", at(4.3))
    assert found(reads=(ok, error)) == []
    assert found(reads=(ok, pending)) == ["dependency_state"]


def test_held_jobs_wait_only_behind_a_failed_job_and_policy_cancels_are_not_spontaneous() -> None:
    def world(policy: str, a: str) -> tuple[World, list[Edge]]:
        rows = [batch(1, total=3, kind="workflow", policy=policy, callbacks={})]
        jobs = [member("a", a, kind="Stumbles"), member("b", "held"), member("c", "held")]
        return World(rows, jobs, [], []), [Edge("b", "a", False), Edge("c", "b", False)]

    ends = checks.run_ends([], [], {})
    w, edges = world("wait", "failed")
    _, waiting, why_held, _ = batch_checks.check_workflows(w, edges, [], ends, [], 4.0, [], at(9))
    assert set(waiting) == {"b", "c"} and why_held == {}
    assert checks.check_final_states(w.jobs, [], ends, [], 4.0, 3, at(9), waiting) == [
        checks.Violation("failed", v.message, "a")
        for v in checks.check_final_states(w.jobs[:1], [], ends, [], 4.0, 3, at(9))
    ]  # only a (no DoomedError recorded here): b and c may wait
    w, edges = world("cancel", "failed")  # should have been cancelled
    _, waiting, why_held, _ = batch_checks.check_workflows(w, edges, [], ends, [], 4.0, [], at(9))
    assert waiting == {} and set(why_held) == {"b", "c"}
    found = checks.check_final_states(w.jobs[1:], [], ends, [], 4.0, 3, at(9), waiting, why_held)
    assert [v.check for v in found] == ["stranded", "stranded"]
    # Cancelled by the policy: not spontaneous.
    rows = [batch(1, total=3, kind="workflow", policy="cancel", callbacks={})]
    jobs = [member("a", "failed", kind="Doomed", failure="tests.chaos.workload.DoomedError"),
            member("b", "cancelled"), member("c", "cancelled")]  # fmt: skip
    w = World(rows, jobs, [], [])
    *_, by_policy = batch_checks.check_workflows(w, edges, [], ends, [], 4.0, [], at(9))
    assert by_policy == {"b", "c"}
    assert checks.check_cancels(jobs, [], ends, [], 4.0, [], at(9), by_policy) == []
    assert checks.check_final_states(jobs, [], ends, [], 4.0, 3, at(9)) == []
    *_, by_policy = batch_checks.check_workflows(
        World([batch(1, total=3, kind="workflow", policy="run", callbacks={})], jobs, [], []),
        edges, [], ends, [], 4.0, [], at(9),
    )  # fmt: skip
    assert by_policy == set()  # "run" never cancels


def test_restarting_one_exited_host_leaves_hosts_stopped_at_the_end_alone(tmp_path: Path) -> None:
    """At the end the hosts are SIGTERMed one by one; restarting one found exited must not
    restart (and report as an unexpected exit) those already stopped on purpose."""
    started: list[str] = []

    class Quiet(Host):
        def start(self) -> None:
            started.append(self.name)
            self.popen = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
            )
            self.generations.append(self.popen)

    hosts = [
        Quiet(name, None, "", tmp_path, tmp_path / name, "")  # type: ignore[arg-type]
        for name in ("host-a", "host-b")
    ]
    for host in hosts:
        host.start()
    driver = Driver(random.Random(0), hosts, None, "")  # type: ignore[arg-type]
    try:
        for host in hosts:
            host.terminate(10)  # host-a stopped on purpose; host-b "exited by itself"
        started.clear()
        driver.ensure_host(hosts[1])
        assert started == ["host-b"]
        assert [e["host"] for e in driver.unexpected_exits] == ["host-b"]
        assert not hosts[0].running()
    finally:
        for host in hosts:
            host.cleanup()
