"""The scheduler: enqueues the ticks of recurring tasks, exactly once however many run.

Several schedulers (one per ``pgjobs start``, on any number of hosts) may run the same tasks.
Each tick is enqueued by :func:`enqueue_run` in one transaction that first claims the tick's
``(task_key, run_at)`` row in ``pgjobs_recurring_executions``: the unique constraint lets exactly
one transaction win, and the others write nothing (see :mod:`pgjobs.store.recurring`).

Each ``poll()``: reload the dynamic tasks every ``reload_interval`` seconds; for every task find
where it stands (its latest scheduled run, or when its row was created) and enqueue the ticks due
under its missed-tick policy (:func:`due_ticks`); then sleep until the next tick of any task
(at most ``MAX_SLEEP`` seconds, and no later than the next reload).  Hourly, runs older than
``executions_retention`` are pruned (each task's latest scheduled run is always kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from pgjobs import clock
from pgjobs.config.queue import Config
from pgjobs.config.recurring import RecurringTask
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError, DatabaseUnreachable
from pgjobs.operations.recurring import enqueue_run, sync_static, task_from_row
from pgjobs.processes.poller import Poller
from pgjobs.store import recurring as store

log = logging.getLogger("pgjobs")
SKIP_GRACE = timedelta(seconds=10)  # missed: skip still fires a tick this late
RELOAD_INTERVAL = 5.0  # seconds between reloads of the dynamic tasks
MAX_SLEEP = 60.0
PRUNE_INTERVAL = 3600.0
EXECUTIONS_RETENTION = timedelta(days=7)
PRUNE_BATCH = 1000
_TINY = timedelta(microseconds=1)


def due_ticks(
    task: RecurringTask, since: datetime, now: datetime, grace: timedelta = SKIP_GRACE
) -> list[datetime]:
    """The ticks of ``task`` to enqueue at ``now``, oldest first, when it last ran (or was
    created) at ``since``: under ``skip`` the latest tick if it is at most ``grace`` old; under
    ``latest`` the latest tick; under ``catch_up`` the latest ``catch_up_limit`` ticks."""
    latest = task.schedule.previous_at_or_before(now)
    if latest is None or latest <= since:
        return []
    if task.missed == "skip":
        return [latest] if now - latest <= grace else []
    ticks = [latest]
    while task.missed == "catch_up" and len(ticks) < task.catch_up_limit:
        tick = task.schedule.previous_at_or_before(ticks[-1] - _TINY)
        if tick is None or tick <= since:
            break
        ticks.append(tick)
    if task.missed == "catch_up" and len(ticks) == task.catch_up_limit:
        earlier = task.schedule.previous_at_or_before(ticks[-1] - _TINY)
        if earlier is not None and earlier > since:
            log.warning(
                "scheduler: %s missed more than catch_up_limit=%s ticks; the older ones are "
                "skipped, catching up from %s",
                task.key,
                task.catch_up_limit,
                ticks[-1].isoformat(),
            )
    return ticks[::-1]


def prune_recurring_executions(
    database: Database, older_than: timedelta = EXECUTIONS_RETENTION, *, batch: int = PRUNE_BATCH
) -> int:
    """Delete recurring runs older than ``older_than``, keeping each task's latest scheduled run
    (where its scheduler resumes); returns how many were deleted."""
    params = {"cutoff": clock.now() - older_than, "limit": batch}
    deleted = 0
    with database.connection() as conn:
        while True:
            row = conn.execute(database.sql(store.PRUNE), params).fetchone()
            deleted += row[0] if row else 0
            if not row or row[0] < batch:
                return deleted


class Scheduler(Poller):
    """Runs the static ``tasks`` (from recurring.yml) and the dynamic tasks in the table."""

    kind = "scheduler"
    listens = False
    # Enqueue ticks on a connection of their own, opened for a poll that has ticks due and
    # closed after it (a thread of the supervisor: its link must not wait for the application's
    # enqueue callbacks, which run inside a tick's transaction).
    ticks_apart = False

    def __init__(
        self,
        database: Database,
        config: Config,
        tasks: Sequence[RecurringTask],
        *,
        reload_interval: float = RELOAD_INTERVAL,
        grace: timedelta = SKIP_GRACE,
        executions_retention: timedelta = EXECUTIONS_RETENTION,
        **kwargs: Any,
    ) -> None:
        metadata = {"static_tasks": sorted(task.key for task in tasks)}
        super().__init__(database, config, metadata=metadata, **kwargs)
        self.static = {task.key: task for task in tasks}
        self.dynamic: dict[str, RecurringTask] = {}
        self.reload_interval = reload_interval
        self.grace = grace
        self.executions_retention = executions_retention
        self.started_at = clock.now()
        self._rows: dict[str, tuple[Any, ...]] = {}  # dynamic rows as last parsed
        self._reloaded_at = float("-inf")
        self._pruned_at = float("-inf")
        self._tick_conn: psycopg.Connection[Any] | None = None

    def title(self) -> str:
        return f"pgjobs-scheduler: {len(self.static)} static tasks"

    @property
    def tasks(self) -> list[RecurringTask]:
        """The tasks this scheduler runs: its static ones, then the dynamic ones."""
        dynamic = [task for key, task in self.dynamic.items() if key not in self.static]
        return [*self.static.values(), *dynamic]

    def on_start(self) -> None:
        self.sync()

    def sync(self) -> None:
        """Write the static tasks to ``pgjobs_recurring_tasks`` (and drop stale static rows)."""
        self.started_at = clock.now()
        removed = self.with_retry(
            self.kind,
            lambda conn: sync_static(conn, self.static.values(), schema=self.database.schema),
        )
        if removed:
            log.info("scheduler: removed static tasks no longer configured: %s", removed)
        log.info("scheduler: %s static tasks: %s", len(self.static), ", ".join(self.static))

    def reload(self) -> None:
        """Read the dynamic tasks (``schedule_recurring``) from the table."""
        rows = {str(row[0]): tuple(row) for row in self.execute(store.DYNAMIC_TASKS)}
        dynamic: dict[str, RecurringTask] = {}
        for key, row in rows.items():
            known = self.dynamic.get(key)
            if known is not None and self._rows.get(key) == row:
                dynamic[key] = known
                continue
            try:
                dynamic[key] = task_from_row(row)
            except (ConfigurationError, ValueError) as exc:
                if self._rows.get(key) != row:
                    log.error("scheduler: dynamic task %s cannot be scheduled: %s", key, exc)
        added, removed = dynamic.keys() - self.dynamic.keys(), self.dynamic.keys() - dynamic.keys()
        if added or removed:
            log.info(
                "scheduler: dynamic tasks added %s, removed %s", sorted(added), sorted(removed)
            )
        self.dynamic, self._rows = dynamic, rows
        self._reloaded_at = time.monotonic()

    def positions(self, tasks: Sequence[RecurringTask]) -> dict[str, datetime]:
        """Per task, the moment after which its ticks are due: its latest scheduled run, else
        the creation of its row (else this scheduler's start)."""
        rows = self.execute(store.LAST_RUNS, {"keys": [task.key for task in tasks]})
        found = {str(key): max(created, last or created) for key, created, last in rows}
        return {task.key: found.get(task.key, self.started_at) for task in tasks}

    def poll(self) -> float:
        if time.monotonic() - self._reloaded_at >= self.reload_interval:
            self.reload()
        tasks, now = self.tasks, clock.now()
        if tasks:
            positions = self.positions(tasks)
            try:
                for task in tasks:
                    for tick in due_ticks(task, positions[task.key], now, self.grace):
                        if self.enqueue(task, tick) is None:
                            break  # keep the ticks in order: the failed one comes first
            finally:
                if self._tick_conn is not None:
                    self._tick_conn.close()
                    self._tick_conn = None
        if time.monotonic() - self._pruned_at >= PRUNE_INTERVAL:
            self.prune()
        return self.sleep_time(tasks, clock.now())

    def enqueue(self, task: RecurringTask, tick: datetime) -> bool | None:
        """Enqueue one tick: True if done here, False if another scheduler had it, None if it
        failed (logged; nothing was recorded, so the next poll tries again)."""
        schema = self.database.schema
        try:
            if self.ticks_apart:
                if self._tick_conn is None or self._tick_conn.closed:
                    self._tick_conn = self.database.connect()
                result = enqueue_run(self._tick_conn, schema, task, tick)
            else:
                result = self.with_retry(self.kind, lambda c: enqueue_run(c, schema, task, tick))
        except Exception as exc:
            log.error(
                "scheduler: %s at %s not enqueued (tried again next poll): %s: %s",
                task.key, tick.isoformat(), type(exc).__name__, exc,
            )  # fmt: skip
            return None
        if result is None:
            return False
        job = result[1]
        log.info(
            "scheduler: enqueued %s for %s as job %s",
            task.key, tick.isoformat(), job.job_id if job else "(dropped by a callback)",
        )  # fmt: skip
        return True

    def prune(self) -> None:
        """Hourly maintenance: old recurring runs, and finished jobs past their retention."""
        cutoff = clock.now() - self.executions_retention
        self._pruned_at = time.monotonic()
        try:
            while True:
                rows = self.execute(store.PRUNE, {"cutoff": cutoff, "limit": PRUNE_BATCH})
                if rows[0][0] < PRUNE_BATCH:
                    break
        except (psycopg.Error, DatabaseUnreachable) as exc:
            log.warning("scheduler: pruning old recurring runs failed: %s", exc)
        self.clear_finished()

    def clear_finished(self) -> int:
        """Delete finished jobs older than ``clear_finished_jobs_after`` (failed ones stay).  With
        ``preserve_finished_jobs: false`` the workers delete jobs as they finish, but for those
        they keep: a period's unique key holders and the jobs of batches and workflows."""
        from pgjobs.operations.retention import clear_finished

        try:
            cleared = clear_finished(
                self.config.clear_finished_jobs_after,
                database=self.database,
                connection=lambda: self.link.use(self.lock_timeout_ms),  # one range at a time
            )
        except (psycopg.Error, DatabaseUnreachable) as exc:
            log.warning("scheduler: clearing finished jobs failed: %s", exc)
            return 0
        if cleared:
            log.info("scheduler: cleared %s finished jobs", cleared)
        return cleared

    def sleep_time(self, tasks: Sequence[RecurringTask], now: datetime) -> float:
        """Seconds until the next tick of any task, at most MAX_SLEEP and the next reload."""
        delay = MAX_SLEEP
        for task in tasks:
            try:
                until = (task.schedule.next_after(now) - now).total_seconds()
            except ConfigurationError:
                continue
            delay = min(delay, until)
        reload_in = self.reload_interval - (time.monotonic() - self._reloaded_at)
        return max(0.0, min(delay, reload_in))
