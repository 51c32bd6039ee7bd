"""Django 6's Tasks framework on pgjobs: @task functions enqueued as pgjobs jobs (queue,
priority, run_after; transactional inside atomic) and run by a pgjobs worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6")

from django.db import transaction
from django.tasks import default_task_backend, task_backends
from django.tasks.signals import task_finished, task_started
from django.utils import timezone

from pgjobs.contrib.django import PgJobsBackend
from pgjobs.contrib.django.tasks import NOT_SUPPORTED
from pgjobs.processes.worker import Worker
from tests.django.conftest import count, jobs
from tests.django.shop import tasks
from tests.django.shop.models import Event
from tests.engine_helpers import run_once


class Boom(Exception):
    pass


def test_the_backend_is_pgjobs() -> None:
    assert isinstance(task_backends["default"], PgJobsBackend)
    assert default_task_backend.alias == "default"
    assert task_backends["default"].supports_defer
    assert not task_backends["default"].supports_get_result


def test_a_task_is_a_pgjobs_job_on_its_queue_with_its_priority(url: str) -> None:
    result = tasks.urgent.enqueue("now")
    row = count(
        url,
        "SELECT json_build_array(id::text, queue_name, priority, class_name) FROM pgjobs_jobs",
    )
    job_id, queue, priority, class_name = row
    assert (queue, priority) == ("mailers", -50)  # Django's higher-first is pgjobs' lower-first
    assert class_name == "pgjobs.contrib.django.tasks:RunTask"
    assert result.id == count(url, "SELECT job_id::text FROM pgjobs_jobs")
    assert result.status == "READY" and job_id


def test_run_after_schedules_the_job(url: str) -> None:
    when = timezone.now() + timedelta(hours=1)
    tasks.note.using(run_after=when).enqueue("later")
    assert count(url, "SELECT scheduled_at FROM pgjobs_scheduled_executions") == when


def test_inside_atomic_a_task_commits_or_rolls_back_with_the_block(url: str) -> None:
    with pytest.raises(Boom), transaction.atomic():
        tasks.note.enqueue("never")
        raise Boom
    assert jobs(url) == 0
    with transaction.atomic():
        tasks.note.enqueue("kept")
        assert jobs(url) == 0
    assert jobs(url) == 1


def test_a_worker_runs_tasks_with_djangos_signals(url: str, worker: Worker) -> None:
    seen: list[tuple[str, Any]] = []

    def started(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("started", task_result.status))

    def finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
        seen.append(("finished", task_result.status))

    task_started.connect(started)
    task_finished.connect(finished)
    try:
        tasks.note.enqueue("plain")
        context_result = tasks.with_context.enqueue("context")
        tasks.asynchronous.enqueue("too")
        tasks.fails.enqueue()
        run_once(worker)
    finally:
        task_started.disconnect(started)
        task_finished.disconnect(finished)
    names = set(Event.objects.values_list("name", flat=True))
    assert names == {"plain", f"context {context_result.id} RUNNING", "async too"}
    assert count(url, "SELECT count(*) FROM pgjobs_failed_executions") == 1
    assert sorted(s for s, _ in seen) == ["finished"] * 4 + ["started"] * 4
    assert sorted(str(status) for s, status in seen if s == "finished") == [
        "FAILED", "SUCCESSFUL", "SUCCESSFUL", "SUCCESSFUL"
    ]  # fmt: skip


def test_results_are_not_supported(url: str) -> None:
    result = tasks.note.enqueue("no result")
    with pytest.raises(NotImplementedError, match="pgjobs keeps no task results"):
        tasks.note.get_result(result.id)
    with pytest.raises(NotImplementedError, match="pgjobs keeps no task results"):
        result.refresh()
    assert NOT_SUPPORTED.startswith("pgjobs keeps no task results")


def test_a_queue_the_backend_does_not_list_is_refused() -> None:
    from django.tasks.exceptions import InvalidTask

    with pytest.raises(InvalidTask):
        tasks.note.using(queue_name="nowhere").enqueue("x")


def test_arguments_must_be_json_as_django_requires(url: str) -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.note.enqueue(object())
    assert jobs(url) == 0
    result = tasks.note.enqueue(("a", "tuple"))  # normalised to a list, as Django does
    assert result.args == [["a", "tuple"]]
    assert count(url, "SELECT arguments->'args'->2 FROM pgjobs_jobs") == [["a", "tuple"]]
