"""How a worker records an execution that ended with an error: retried, discarded or failed.

Each is ONE statement (:mod:`pgjobs.store.failed`) that deletes the job's claimed row — only if
this process still holds it — counts the attempt, appends the error to the job's history and
moves the job on, giving back its concurrency slot when it leaves for good or for later; the
keys whose slots came back are then unblocked.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from pgjobs import clock, events
from pgjobs.db.database import Database
from pgjobs.operations import concurrency
from pgjobs.processes.executor import Claimed, Outcome, error_name
from pgjobs.processes.floors import Floors
from pgjobs.store import claimed as claimed_store
from pgjobs.store import control as control_store
from pgjobs.store import failed as failed_store
from pgjobs.store.jobs import done_channel, notify_channel

_active = events.active


class Recording:
    """The worker's error-recording half (a mixin of :class:`pgjobs.processes.worker.Worker`)."""

    id: int | None
    floors: Floors
    hostname: str
    pid: int
    database: Database
    _discard_sql: str

    def execute(self, template: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # Process.execute

    def record(self, outcome: Outcome) -> None:
        """Record an execution that ended with an error, as its rules decided, or by job
        control (cancelled, snoozed, interrupted at a checkpoint)."""
        kind = outcome.kind
        if kind == "retry":
            self.retry(outcome)
        elif kind == "discard":
            self.discard(outcome)
        elif kind == "cancel":
            self.cancel(outcome)
        elif kind == "snooze":
            self.snooze(outcome)
        elif kind == "interrupt":
            self.give_back(outcome)
        else:
            self.fail(outcome)

    def _error_params(self, outcome: Outcome) -> dict[str, Any]:
        error = outcome.error
        assert error is not None
        return {
            "id": outcome.claimed.id,
            "process_id": self.id,
            # PostgreSQL's text cannot hold NUL: a message with one would fail the record and
            # the worker with it, and the job would be claimed again, for ever.
            "exception_class": error_name(error).replace("\0", "\\0"),
            "message": str(error).replace("\0", "\\0"),
            "backtrace": outcome.backtrace.replace("\0", "\\0"),
            "hostname": self.hostname,
            "pid": self.pid,
            "now": clock.now(),
            "done_channel": done_channel(self.database.schema),
        }

    @staticmethod
    def _fields(claimed: Claimed) -> dict[str, Any]:
        return events.job_fields(
            claimed.job_id, claimed.class_name, claimed.queue_name, claimed.executions + 1
        )

    def _error_fields(self, outcome: Outcome) -> dict[str, Any]:
        error = outcome.error
        return {
            **self._fields(outcome.claimed),
            "error_class": error_name(error) if error is not None else None,
            "error": str(error),
            "duration_ms": round(outcome.duration * 1000, 3),
        }

    def _unblock(self, keys: Iterable[str | None]) -> None:
        """After a statement that gave jobs' slots back: unblock their keys.  From the jobs,
        not from the statement's reply — a reply lost with the connection is retried and finds
        nothing, but the slots were given back all the same (unblocking twice is harmless)."""
        given = [key for key in keys if key is not None]
        if given:
            concurrency.unblock(self.execute, given, channel=notify_channel(self.database.schema))
            self.floors.notified("*", None)  # unblocked jobs keep their (old) ids

    def fail(self, outcome: Outcome) -> None:
        self.execute(failed_store.FAIL, self._error_params(outcome))
        self._unblock([outcome.claimed.concurrency_key])
        if "fail" in _active:
            events.emit("fail", **self._error_fields(outcome))

    def retry(self, outcome: Outcome) -> None:
        wait = outcome.wait or 0.0
        scheduled_at = clock.now() + timedelta(seconds=wait) if wait > 0 else None
        params = self._error_params(outcome)
        params.update(
            scheduled_at=scheduled_at,
            queue=outcome.queue,
            priority=outcome.priority,
            channel=notify_channel(self.database.schema),
        )
        self.execute(failed_store.RETRY, params)
        if scheduled_at is not None:  # retried later: its slot was given back
            self._unblock([outcome.claimed.concurrency_key])
        if scheduled_at is None:  # back in ready with its old id: below this worker's floors
            self.floors.notified(outcome.queue or outcome.claimed.queue_name, None)
        if "retry" in _active:
            claimed = outcome.claimed
            events.emit(
                "retry",
                **self._error_fields(outcome),
                wait=wait,
                scheduled_at=scheduled_at,
                retry_queue=outcome.queue or claimed.queue_name,
                retry_priority=claimed.priority if outcome.priority is None else outcome.priority,
            )

    def discard(self, outcome: Outcome) -> None:
        self.execute(self._discard_sql, self._error_params(outcome))
        self._unblock([outcome.claimed.concurrency_key])
        if "discard" in _active:
            events.emit("discard", **self._error_fields(outcome))

    # -- job control (pgjobs.jobs.control) --------------------------------------------------------

    def cancel(self, outcome: Outcome) -> None:
        """The job was cancelled (while it ran, or before it started): finished as cancelled."""
        claimed = outcome.claimed
        params = {
            "id": claimed.id,
            "process_id": self.id,
            "now": clock.now(),
            "done_channel": done_channel(self.database.schema),
            "ran": outcome.error is not None,  # else asked to stop before it was claimed
        }
        self.execute(control_store.CANCEL_RUNNING, params)
        self._unblock([claimed.concurrency_key])
        if "cancel" in _active:
            events.emit(
                "cancel",
                **self._fields(claimed),
                running=outcome.error is not None,
                duration_ms=round(outcome.duration * 1000, 3),
            )

    def snooze(self, outcome: Outcome) -> None:
        """The job snoozed: back to scheduled, the attempt not counted."""
        claimed = outcome.claimed
        scheduled_at = clock.now() + timedelta(seconds=outcome.wait or 0.0)
        params = {"id": claimed.id, "process_id": self.id, "now": clock.now()}
        self.execute(control_store.SNOOZE, {**params, "scheduled_at": scheduled_at})
        self._unblock([claimed.concurrency_key])
        if "snooze" in _active:
            events.emit("snooze", **self._fields(claimed), scheduled_at=scheduled_at)

    def give_back(self, outcome: Outcome) -> None:
        """A stepped job stopped at a checkpoint because this worker is stopping: back to
        ready with its position, the attempt not counted."""
        claimed = outcome.claimed
        self.execute(
            claimed_store.RELEASE,
            {
                "process_ids": [self.id],
                "job_ids": [claimed.id],
                "channel": notify_channel(self.database.schema),
            },
        )
        self.floors.notified(claimed.queue_name, None)  # back in ready with its old id
        if "interrupt" in _active:
            events.emit("interrupt", **self._fields(claimed))
