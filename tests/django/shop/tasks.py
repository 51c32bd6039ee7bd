"""Django 6 tasks (django.tasks), run by pgjobs through PgJobsBackend."""

from __future__ import annotations

from django.tasks import TaskContext, task

from tests.django.shop.models import Event


@task
def note(name: str) -> str:
    Event.objects.create(name=name)
    return name  # dropped: pgjobs keeps no results


@task(queue_name="mailers", priority=50)
def urgent(name: str) -> None:
    Event.objects.create(name=f"urgent {name}")


@task(takes_context=True)
def with_context(context: TaskContext, name: str) -> None:
    result = context.task_result
    Event.objects.create(name=f"{name} {result.id} {result.status}")


@task
async def asynchronous(name: str) -> None:
    await Event.objects.acreate(name=f"async {name}")


@task
def fails() -> None:
    raise RuntimeError("the task failed")
