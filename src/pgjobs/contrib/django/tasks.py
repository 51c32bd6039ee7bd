"""Django 6's Tasks framework (``django.tasks``) on pgjobs.

::

    TASKS = {"default": {"BACKEND": "pgjobs.contrib.django.PgJobsBackend",
                         "QUEUES": ["default", "emails"]}}

    from django.tasks import task

    @task(queue_name="emails", priority=10)
    def send_receipt(order_id: int) -> None: ...

    with transaction.atomic():
        order = Order.objects.create(...)
        send_receipt.enqueue(order.pk)  # a pgjobs job, committed with the order

Each ``enqueue`` writes one pgjobs job (class :class:`RunTask`) like ``perform_later``: inside
``transaction.atomic()`` on Django's connection for ``settings.PGJOBS["DATABASE"]`` (it exists
if and only if the block commits), else committed at once.  The task's ``queue_name`` is the
pgjobs queue; its ``priority`` (Django: -100..100, higher first) becomes pgjobs priority
``-priority`` (lower first), so the order is the same; ``run_after`` schedules the job.
``manage.py pgjobs start`` runs them: the worker imports the task by its module path, calls it
(a ``takes_context`` task gets a :class:`~django.tasks.TaskContext`), and sends Django's
``task_started`` / ``task_finished`` signals; an exception fails the job as any job's does
(retry it from the dashboard or ``pgjobs failed``).

Not supported yet: **results** through Django's API.  pgjobs stores return values
(``pgjobs.get_job(result.id).result``), but this backend does not map them to Django's
``TaskResult`` yet, so ``supports_get_result`` is False: ``get_result()`` /
``TaskResult.refresh()`` raise NotImplementedError, the
``TaskResult`` that ``enqueue`` returns stays READY, and a task's return value is dropped (its
outcome is the job's state: ``manage.py pgjobs status``, the dashboard).  The result's ``id`` is
the pgjobs job id.
"""

from __future__ import annotations

import os
import socket
from traceback import format_exception
from typing import Any

import django

try:
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError as exc:  # pragma: no cover - Django < 6
    raise ImportError(
        "pgjobs.contrib.django.PgJobsBackend needs Django 6.0 or later (django.tasks); this is "
        f"Django {django.get_version()}"
    ) from exc
from django.utils import timezone
from django.utils.module_loading import import_string

import pgjobs

NOT_SUPPORTED = (
    "pgjobs keeps no task results (yet): a task's outcome is its job's state "
    "(`manage.py pgjobs status`, the dashboard); the result id is the pgjobs job id"
)


class RunTask(pgjobs.Job):
    """The pgjobs job of one ``django.tasks`` task: ``(module_path, backend, args, kwargs)``."""

    def perform(
        self, module_path: str, backend: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        task = import_string(module_path)
        if not isinstance(task, Task):
            raise TypeError(f"{module_path} is not a django.tasks Task (found {task!r})")
        now = timezone.now()
        result = _result(task, str(self.job_id), TaskResultStatus.RUNNING, args, kwargs, backend)
        object.__setattr__(result, "enqueued_at", self.enqueued_at)
        object.__setattr__(result, "started_at", now)
        object.__setattr__(result, "last_attempted_at", now)
        # One entry per attempt, so that TaskContext.attempt is pgjobs' execution number.
        result.worker_ids.extend([f"{socket.gethostname()}:{os.getpid()}"] * self.executions)
        task_started.send(sender=PgJobsBackend, task_result=result)
        try:
            if task.takes_context:
                task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                task.call(*args, **kwargs)
        except BaseException as error:
            _finish(result, TaskResultStatus.FAILED, error)
            raise  # the job fails (or is retried) like any other job
        _finish(result, TaskResultStatus.SUCCESSFUL, None)


def _result(
    task: Task, id_: str, status: Any, args: list[Any], kwargs: dict[str, Any], backend: str
) -> TaskResult:
    return TaskResult(
        task=task,
        id=id_,
        status=status,
        enqueued_at=None,
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=backend,
        errors=[],
        worker_ids=[],
    )


def _finish(result: TaskResult, status: Any, error: BaseException | None) -> None:
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "status", status)
    if error is not None:
        kind = type(error)
        result.errors.append(
            TaskError(
                exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                traceback="".join(format_exception(error)),
            )
        )
    task_finished.send(sender=PgJobsBackend, task_result=result)


class PgJobsBackend(BaseTaskBackend):
    """``django.tasks`` backend that enqueues every task as a pgjobs job (see the module)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = False
    supports_priority = True

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):  # USE_TZ = False
            run_after = timezone.make_aware(run_after)
        # TaskResult normalises the arguments to JSON types (or refuses them), as Django wants.
        result = _result(task, "", TaskResultStatus.READY, args, kwargs, self.alias)
        job = RunTask(task.module_path, self.alias, list(result.args), dict(result.kwargs))
        object.__setattr__(result, "id", str(job.job_id))
        job.enqueue(queue=task.queue_name, priority=-task.priority, wait_until=run_after)
        object.__setattr__(result, "enqueued_at", timezone.now())
        task_enqueued.send(sender=type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        raise NotImplementedError(NOT_SUPPORTED)
