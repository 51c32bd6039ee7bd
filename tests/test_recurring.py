"""Recurring tasks: recurring.yml loading (no database), and the scheduler against PostgreSQL."""

from __future__ import annotations

import itertools
import logging
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgjobs import clock
from pgjobs.clock import FrozenClock
from pgjobs.config.queue import Config
from pgjobs.config.recurring import RecurringTask, RunCommand, load_recurring
from pgjobs.config.schedules import parse_schedule
from pgjobs.db.database import Database
from pgjobs.errors import ConfigurationError
from pgjobs.operations.recurring import (
    list_tasks,
    run_now,
    schedule_recurring,
    sync_static,
    unschedule_recurring,
)
from pgjobs.processes.scheduler import Scheduler, due_ticks, prune_recurring_executions
from tests import sample_jobs
from tests.sample_jobs import EVENTS, Record, RefusesEnqueue, rebuild_index

REPO_FILE = Path(__file__).resolve().parent.parent / "config" / "recurring.yml"
CONFIG = Config(heartbeat_interval=30)
T0 = datetime(2025, 1, 6, 12, 0, 0, tzinfo=UTC)  # a Monday

# The recurring.yml examples of the seeds (Solid Queue guides), with their Ruby class names
# replaced by jobs of tests.sample_jobs: registered names ("CleanupJob") and import paths.
SEED_003 = """
production:
  cleanup_old_records:
    class: CleanupJob
    schedule: every day at 2am

  send_daily_digest:
    class: DailyDigestJob
    schedule: every day at 8am
    args: ["digest"]

  process_payments:
    class: tests.sample_jobs:noop_job
    schedule: every 15 minutes

  generate_reports:
    class: tests.sample_jobs:SendWelcomeEmail
    schedule: every monday at 9am
    args: ["weekly"]

development:
  test_job:
    class: tests.sample_jobs:Record
    schedule: every 5 minutes
"""

SEED_004 = """
production:
  deliver_notifications:
    class: tests.sample_jobs:Record
    schedule: "*/30 * * * *"  # Every 30 minutes

  auto_postpone_cards:
    class: tests.sample_jobs:noop_job
    schedule: "0 * * * *"  # Every hour

  cleanup_old_sessions:
    class: CleanupJob
    schedule: "0 2 * * *"  # Daily at 2 AM

  weekly_digest:
    class: DailyDigestJob
    schedule: "0 8 * * 1"  # Monday at 8 AM
"""


def write(tmp_path: Path, text: str, name: str = "recurring.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: str = "production") -> list[RecurringTask]:
    return load_recurring(write(tmp_path, text), env=env, environ={})


def problems(tmp_path: Path, text: str, env: str = "production") -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        load(tmp_path, text, env)
    return info.value.problems


# -- recurring.yml --------------------------------------------------------------------------------


def test_the_seed_examples_load(tmp_path: Path) -> None:
    tasks = {t.key: t for t in load(tmp_path, SEED_003)}
    assert list(tasks) == [
        "cleanup_old_records", "send_daily_digest", "process_payments", "generate_reports",
    ]  # fmt: skip
    assert tasks["cleanup_old_records"].schedule.cron == "0 2 * * *"
    assert tasks["send_daily_digest"].args == ("digest",)
    assert tasks["process_payments"].schedule.cron == "*/15 * * * *"
    assert tasks["generate_reports"].schedule.next_after(T0) == datetime(2025, 1, 13, 9, tzinfo=UTC)
    assert [t.key for t in load(tmp_path, SEED_003, env="development")] == ["test_job"]
    assert load(tmp_path, SEED_003, env="test") == []  # no section: no tasks

    tasks = {t.key: t for t in load(tmp_path, SEED_004)}
    assert tasks["deliver_notifications"].schedule.next_after(T0) == T0 + timedelta(minutes=30)
    assert tasks["weekly_digest"].class_name == "DailyDigestJob"
    job = tasks["cleanup_old_sessions"].build_job()
    assert (type(job), job.queue_name) == (sample_jobs.CleanupJob, "maintenance")


@pytest.mark.parametrize(
    ("schedule", "cron"),
    [  # the "Schedule Syntax" examples of seed 003
        ("every 5 minutes", "*/5 * * * *"),
        ("every 2 hours", "0 */2 * * *"),
        ("every day", "0 0 * * *"),
        ("every day at 3pm", "0 15 * * *"),
        ("every monday at 9am", "0 9 * * 1"),
        ("every 1st of month at 8am", "0 8 1 * *"),
        ("every day at 9am, 3pm, 9pm", "0 9,15,21 * * *"),
        ("every day at 9am America/New_York", "0 9 * * *"),
    ],
)
def test_the_seed_schedule_examples_parse(tmp_path: Path, schedule: str, cron: str) -> None:
    [task] = load(tmp_path, f"production:\n  t:\n    class: CleanupJob\n    schedule: {schedule}\n")
    assert task.schedule.cron == cron


def test_the_repository_file_loads_in_every_section() -> None:
    environments = ("development", "test", "production")
    found = {env: load_recurring(REPO_FILE, env=env, environ={}) for env in environments}
    assert [t.key for t in found["development"]] == ["heartbeat"]
    assert found["test"] == []
    assert [t.key for t in found["production"]] == ["heartbeat"]
    for task in found["development"] + found["production"]:
        assert isinstance(task.build_job(), RunCommand)


def test_every_problem_is_reported_at_once_with_key_and_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        production:
          typo:
            class: DailyDigestJob
            schedul: every hour
          bad_schedule:
            class: DailyDigestJob
            schedule: every fortnight
          missing_class:
            class: absent_app_of_the_tests.jobs:NoSuchJob
            schedule: every hour
          both:
            class: DailyDigestJob
            command: tests.sample_jobs:purge_expired_tokens
            schedule: every hour
          neither:
            schedule: every hour
          bad_priority:
            class: DailyDigestJob
            schedule: every hour
            priority: high
          bad_args:
            class: DailyDigestJob
            schedule: every hour
            args: [1, 2, 3]
          bad_policy:
            class: DailyDigestJob
            schedule: every hour
            missed: catchup
          limit_without_catch_up:
            command: tests.sample_jobs:purge_expired_tokens
            schedule: every hour
            catch_up_limit: 5
          not_a_mapping: every hour
        """,
    )
    path = tmp_path / "recurring.yml"
    expected = [
        (4, "typo.schedul: unknown key; did you mean 'schedule'?"),
        (2, "typo: missing schedule"),
        (7, "bad_schedule.schedule: cannot understand schedule 'every fortnight'"),
        (
            9,
            "missing_class.class: job class 'absent_app_of_the_tests.jobs:NoSuchJob': module "
            "'absent_app_of_the_tests.jobs' cannot",
        ),
        (11, "both: task 'both' has both class and command"),
        (15, "neither: task 'neither' has neither class and command"),
        (20, "bad_priority.priority: must be an integer"),
        (24, "bad_args.args: the arguments do not fit DailyDigestJob.perform(kind: str = 'daily')"),
        (28, "bad_policy.missed: unknown policy 'catchup'; did you mean 'catch_up'?"),
        (32, "limit_without_catch_up.catch_up_limit: applies only with missed: catch_up"),
        (33, "not_a_mapping: must be a mapping of task settings"),
    ]
    assert len(found) == len(expected), "\n".join(found)
    for line, text in expected:
        assert any(p.startswith(f"{path}:{line}: {text}") for p in found), (line, text, found)


def test_args_forms_and_commands(tmp_path: Path) -> None:
    tasks = {
        t.key: t
        for t in load(
            tmp_path,
            """
            one_value: {class: DailyDigestJob, args: weekly, schedule: every day}
            a_list: {class: tests.sample_jobs:rebuild_index, args: [users], schedule: every day}
            a_mapping: {class: tests.sample_jobs:Record, args: {a: 1}, schedule: every day}
            purge:
              command: tests.sample_jobs:purge_expired_tokens
              args: [500]
              kwargs: {dry_run: true}
              queue: low
              priority: 2
              schedule: every 15 minutes America/New_York
              description: Delete expired tokens
              missed: catch_up
              catch_up_limit: 4
            """,
        )
    }
    assert tasks["one_value"].args == ("weekly",)
    assert tasks["a_list"].build_job().queue_name == "indexing"  # the @job's own queue
    assert tasks["a_mapping"].args == ({"a": 1},)  # one dict argument, not keyword arguments
    purge = tasks["purge"]
    assert (purge.args, purge.kwargs, purge.missed, purge.catch_up_limit) == (
        (500,), {"dry_run": True}, "catch_up", 4,
    )  # fmt: skip
    assert str(purge.schedule.timezone) == "America/New_York"
    job = purge.build_job()
    assert (type(job), job.queue_name, job.priority) == (RunCommand, "low", 2)
    EVENTS.clear()
    assert job.perform_inline() == "purged 500"
    assert EVENTS == ["purge 500 dry_run=True"]


def test_which_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_recurring(environ={}) == []  # no config/recurring.yml: no tasks
    other = write(
        tmp_path, "nightly:\n  class: CleanupJob\n  schedule: every day at ${HOUR:-3am}\n"
    )
    environ = {"PGJOBS_RECURRING_SCHEDULE": str(other)}
    [task] = load_recurring(environ=environ)  # a flat file: tasks at the top level
    assert task.schedule.cron == "0 3 * * *"
    with pytest.raises(ConfigurationError, match="set by PGJOBS_RECURRING_SCHEDULE"):
        load_recurring(environ={"PGJOBS_RECURRING_SCHEDULE": "nope.yml"})
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_recurring("nope.yml", environ={})
    found = problems(tmp_path, "prodution:\n  a: {class: CleanupJob, schedule: every day}\n")
    assert "did you mean 'prodution'?" in found[0]


def test_due_ticks_under_each_policy() -> None:
    def task(missed: Any, limit: int = 100) -> RecurringTask:
        schedule = parse_schedule("every minute")
        return RecurringTask("t", schedule, "CleanupJob", missed=missed, catch_up_limit=limit)

    since, now = T0, T0 + timedelta(minutes=10, seconds=5)
    minute = [T0 + timedelta(minutes=n) for n in range(11)]
    assert due_ticks(task("skip"), since, now) == [minute[10]]  # 5 s late: within the grace
    assert due_ticks(task("skip"), since, now + timedelta(seconds=30)) == []
    assert due_ticks(task("latest"), since, now + timedelta(seconds=30)) == [minute[10]]
    assert due_ticks(task("catch_up"), since, now) == minute[1:]
    assert due_ticks(task("catch_up", 3), since, now) == minute[8:]
    assert due_ticks(task("catch_up"), minute[10], now) == []


# -- the scheduler ---------------------------------------------------------------------------------


@pytest.fixture
def frozen() -> Iterator[FrozenClock]:
    previous, clock.clock = clock.clock, FrozenClock(T0)
    yield clock.clock  # type: ignore[misc]
    clock.clock = previous


@pytest.fixture
def make_scheduler(db: Database) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(tasks: list[RecurringTask], **kwargs: Any) -> Scheduler:
        scheduler = Scheduler(Database(db.url), CONFIG, tasks, **kwargs)
        scheduler.on_start()
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()


def every(schedule: str, key: str = "tick", **kwargs: Any) -> RecurringTask:
    return RecurringTask(key, parse_schedule(schedule), Record.job_name, args=(key,), **kwargs)


def runs(db: Database, key: str | None = None) -> list[tuple[Any, ...]]:
    """(task_key, run_at, job class or None, manual) of every recorded run, in run_at order."""
    with db.connection() as conn:
        return conn.execute(
            """SELECT e.task_key, e.run_at, j.class_name, e.manual
               FROM pgjobs_recurring_executions e LEFT JOIN pgjobs_jobs j ON j.id = e.job_id
               WHERE %(key)s::text IS NULL OR e.task_key = %(key)s ORDER BY e.run_at, e.id""",
            {"key": key},
        ).fetchall()


def count_jobs(db: Database) -> int:
    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM pgjobs_jobs").fetchone()
    return int(row[0]) if row else 0


pytestmark_db = pytest.mark.committed


@pytestmark_db
def test_three_schedulers_enqueue_each_tick_exactly_once(
    db: Database, frozen: FrozenClock, make_scheduler: Callable[..., Scheduler]
) -> None:
    schedulers = [make_scheduler([every("every second")]) for _ in range(3)]
    steps, barrier, errors = 25, threading.Barrier(4), list[BaseException]()
    won = [0, 0, 0]

    def run(index: int) -> None:
        scheduler = schedulers[index]
        original = scheduler.enqueue

        def counting(task: RecurringTask, tick: datetime) -> bool | None:
            result = original(task, tick)
            won[index] += result is True
            return result

        scheduler.enqueue = counting  # type: ignore[method-assign]
        try:
            for _ in range(steps):
                barrier.wait()
                scheduler.poll()
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for step in range(steps):
        # Every third step the clock jumps 2 s: the tick in between is missed (policy skip).
        frozen.advance(seconds=2 if step % 3 == 2 else 1)
        barrier.wait()  # all three poll the same instant ...
        barrier.wait()  # ... and are done
    for thread in threads:
        thread.join()
    assert not errors
    found = runs(db)
    ticks = [row[1] for row in found]
    assert len(ticks) == len(set(ticks)) == steps == sum(won) == count_jobs(db)
    assert all(row[2] == Record.job_name for row in found)


@pytestmark_db
def test_a_tick_is_not_enqueued_again_after_finished_jobs_are_cleared(
    db: Database, frozen: FrozenClock, make_scheduler: Callable[..., Scheduler]
) -> None:
    task = every("every minute", missed="catch_up")
    scheduler = make_scheduler([task])
    frozen.advance(minutes=3)
    scheduler.poll()
    assert count_jobs(db) == 3
    with db.connection() as conn:  # what clear-finished does, and more
        conn.execute("DELETE FROM pgjobs_ready_executions")
        conn.execute("DELETE FROM pgjobs_jobs")
    scheduler.poll()
    make_scheduler([task]).poll()  # a new scheduler resumes where the runs say
    assert count_jobs(db) == 0
    assert [row[1] for row in runs(db)] == [T0 + timedelta(minutes=n) for n in (1, 2, 3)]


@pytestmark_db
def test_missed_ticks_follow_each_tasks_policy(
    db: Database, frozen: FrozenClock, make_scheduler: Callable[..., Scheduler]
) -> None:
    tasks = [
        every("every minute", "skip"),
        every("every minute", "latest", missed="latest"),
        every("every minute", "catch_up", missed="catch_up"),
        every("every minute", "limited", missed="catch_up", catch_up_limit=3),
    ]
    make_scheduler(tasks)
    frozen.advance(minutes=1)
    make_scheduler(tasks).poll()  # every task runs 12:01
    frozen.advance(minutes=10, seconds=30)  # down until 12:11:30
    scheduler = make_scheduler(tasks)
    scheduler.poll()
    frozen.advance(seconds=30)
    scheduler.poll()  # 12:12, on time

    def minutes(key: str) -> list[int]:
        return [row[1].minute for row in runs(db, key)]

    assert minutes("skip") == [1, 12]
    assert minutes("latest") == [1, 11, 12]
    assert minutes("catch_up") == list(range(1, 13))
    assert minutes("limited") == [1, 9, 10, 11, 12]


@pytestmark_db
def test_dynamic_tasks_are_picked_up_and_dropped_by_a_running_scheduler(
    db: Database, frozen: FrozenClock, make_scheduler: Callable[..., Scheduler]
) -> None:
    scheduler = make_scheduler([every("every minute", "static")], reload_interval=0)
    scheduler.poll()
    schedule_recurring("dynamic", "every second", rebuild_index, ["users"], queue="low")
    frozen.advance(seconds=1)
    scheduler.poll()
    [(key, run_at, class_name, manual)] = runs(db)
    assert (key, run_at, manual) == ("dynamic", T0 + timedelta(seconds=1), False)
    assert class_name == rebuild_index.job_class.job_name
    with db.connection() as conn:
        queue = conn.execute("SELECT queue_name FROM pgjobs_jobs").fetchone()
    assert queue == ("low",)

    assert unschedule_recurring("dynamic") is True
    assert unschedule_recurring("dynamic") is False
    frozen.advance(seconds=1)
    scheduler.poll()
    assert len(runs(db)) == 1
    with pytest.raises(ConfigurationError, match=r"defined in recurring\.yml"):
        unschedule_recurring("static")
    with pytest.raises(ConfigurationError, match=r"defined in recurring\.yml"):
        schedule_recurring("static", "every hour", Record)
    with pytest.raises(ConfigurationError, match="cannot understand schedule"):
        schedule_recurring("bad", "every fortnight", Record)


@pytestmark_db
def test_run_now_records_a_manual_run_that_does_not_move_the_schedule(
    db: Database, frozen: FrozenClock, make_scheduler: Callable[..., Scheduler]
) -> None:
    scheduler = make_scheduler([every("every minute", "nightly", missed="latest")])
    frozen.advance(seconds=30)
    job = run_now(db, "nightly")
    assert job is not None and job.class_name == Record.job_name
    second = run_now(db, "nightly")  # the same instant: both are recorded
    assert second is not None and second.job_id != job.job_id
    frozen.advance(seconds=30)
    scheduler.poll()
    at = T0 + timedelta(seconds=30, microseconds=1)
    assert [row[1:] for row in runs(db)] == [
        (at, Record.job_name, True),
        (at + timedelta(microseconds=1), Record.job_name, True),
        (T0 + timedelta(minutes=1), Record.job_name, False),
    ]
    with pytest.raises(ConfigurationError, match="did you mean 'nightly'"):
        run_now(db, "nighty")
    [status] = list_tasks(db)
    assert (status.key, status.schedule, status.static, status.missed) == (
        "nightly", "every minute", True, "latest",
    )  # fmt: skip
    assert (status.last_run_at, status.last_manual) == (T0 + timedelta(minutes=1), False)
    assert status.next_run_at == T0 + timedelta(minutes=2)


@pytestmark_db
def test_sync_static_replaces_the_files_tasks_and_keeps_dynamic_ones(
    db: Database, frozen: FrozenClock
) -> None:
    schedule_recurring("dynamic", "every hour", Record, database=db)
    with db.connection() as conn:
        assert sync_static(conn, [every("every day", "a"), every("every day", "b")]) == []
        assert sync_static(conn, [every("every hour", "a")]) == ["b"]
    found = {s.key: (s.schedule, s.static) for s in list_tasks(db)}
    assert found == {"a": ("every hour", True), "dynamic": ("every hour", False)}


@pytestmark_db
def test_a_dynamic_task_reads_back_as_it_was_scheduled(
    db: Database, frozen: FrozenClock, make_scheduler: Callable[..., Scheduler]
) -> None:
    scheduled = schedule_recurring(
        "purge", "every 5 minutes Europe/Paris", sample_jobs.purge_expired_tokens, [10],
        {"dry_run": True}, priority=-3, description="d", missed="catch_up", catch_up_limit=7,
    )  # fmt: skip
    assert scheduled.command == "tests.sample_jobs:purge_expired_tokens"
    scheduler = make_scheduler([])
    scheduler.reload()
    assert scheduler.tasks == [scheduled]
    with pytest.raises(ConfigurationError, match="the arguments do not fit"):
        schedule_recurring("purge", "every hour", sample_jobs.purge_expired_tokens, [1, 2])


@pytestmark_db
def test_a_tick_that_cannot_be_enqueued_records_nothing_and_is_retried(
    db: Database,
    frozen: FrozenClock,
    make_scheduler: Callable[..., Scheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = RefusesEnqueue.job_name
    task = RecurringTask("refuses", parse_schedule("every minute"), name, missed="catch_up")
    scheduler = make_scheduler([task])
    frozen.advance(minutes=3, seconds=2)
    with caplog.at_level(logging.ERROR, logger="pgjobs"):
        scheduler.poll()
    # The oldest tick failed; the later ones wait for it, so that none is skipped.
    assert caplog.text.count("not enqueued") == 1
    assert "refuses at 2025-01-06T12:01:00+00:00 not enqueued" in caplog.text
    assert runs(db) == [] and count_jobs(db) == 0  # the claim was rolled back with the job
    RefusesEnqueue.REFUSE[0] = False
    try:
        scheduler.poll()
    finally:
        RefusesEnqueue.REFUSE[0] = True
    minutes = [T0 + timedelta(minutes=n) for n in (1, 2, 3)]
    assert [row[1:3] for row in runs(db)] == [(at, name) for at in minutes]


@pytestmark_db
def test_pruning_keeps_each_tasks_latest_run(
    db: Database, frozen: FrozenClock, make_scheduler: Callable[..., Scheduler]
) -> None:
    make_scheduler([every("every minute", missed="catch_up")])
    frozen.advance(minutes=5)
    make_scheduler([every("every minute", missed="catch_up")]).poll()
    run_now(db, "tick")
    frozen.advance(days=30)
    assert prune_recurring_executions(db, timedelta(days=7), batch=2) == 5
    assert [row[1] for row in runs(db)] == [T0 + timedelta(minutes=5)]


@pytestmark_db
def test_three_running_schedulers_in_real_time(db: Database) -> None:
    schedulers = [Scheduler(Database(db.url), CONFIG, [every("every second")]) for _ in range(3)]
    threads = [threading.Thread(target=s.run) for s in schedulers]
    for thread in threads:
        thread.start()
    time.sleep(3.5)
    for scheduler in schedulers:
        scheduler.stop()
    for thread in threads:
        thread.join(10)
    ticks = [row[1] for row in runs(db)]
    assert len(ticks) >= 2
    assert ticks == sorted(set(ticks)) and count_jobs(db) == len(ticks)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))


@pytestmark_db
def test_the_scheduler_sleeps_until_the_next_tick(
    frozen: FrozenClock, make_scheduler: Callable[..., Scheduler]
) -> None:
    daily = make_scheduler([every("every day at 3am")], reload_interval=3600)
    assert daily.poll() == 60.0  # capped
    frozen.advance(seconds=0.25)
    assert make_scheduler([every("every second")], reload_interval=3600).poll() == 0.75
    assert 4.0 < make_scheduler([every("every day at 3am")]).poll() <= 5.0  # the next reload


@pytest.mark.committed
def test_scheduler_maintenance_clears_finished_jobs_past_retention(db: Database) -> None:
    import psycopg

    import pgjobs
    from tests.sample_jobs import Record

    handles = pgjobs.perform_all_later([Record("old"), Record("new"), Record("running")])
    with psycopg.connect(db.url, autocommit=True) as conn:
        old = datetime.now(UTC) - timedelta(days=2)
        conn.execute(
            "UPDATE pgjobs_jobs SET finished_at = %s WHERE job_id = %s", [old, handles[0].job_id]
        )
        conn.execute(
            "UPDATE pgjobs_jobs SET finished_at = now() WHERE job_id = %s", [handles[1].job_id]
        )
        conn.execute("DELETE FROM pgjobs_ready_executions WHERE job_id IN (SELECT id FROM "
                     "pgjobs_jobs WHERE finished_at IS NOT NULL)")  # fmt: skip
    scheduler = Scheduler(Database(db.url), Config(clear_finished_jobs_after=86400), [])
    assert scheduler.clear_finished() == 1
    scheduler.close()
    with psycopg.connect(db.url) as conn:
        left = {r[0] for r in conn.execute("SELECT job_id FROM pgjobs_jobs")}
    assert left == {handles[1].job_id, handles[2].job_id}


def test_the_heartbeat_command_is_found_under_its_old_path_too() -> None:
    from pgjobs.config.recurring import heartbeat_log, import_command

    assert import_command("pgjobs.recurring:heartbeat_log") is heartbeat_log
    assert import_command("pgjobs.config.recurring:heartbeat_log") is heartbeat_log
