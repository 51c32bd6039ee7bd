"""Model instances as arguments: stored as app_label.ModelName + pk, loaded through the
default manager when the job runs; unsaved refused; deleted rows discard the job."""

from __future__ import annotations

import json

import pytest
from django.db import connection

import pgjobs
from pgjobs.processes.worker import Worker
from pgjobs.serialization import deserialize_arguments, serialize_arguments
from tests.django.conftest import count
from tests.django.shop.jobs import MarkPaid, record
from tests.django.shop.models import Event, Order
from tests.engine_helpers import run_once


@pytest.mark.django_db
def test_a_model_instance_is_stored_as_a_reference() -> None:
    order = Order.objects.create(email="ada@example.com")
    stored = serialize_arguments([order], {"again": order})
    reference = {"__pgjobs__": "record", "kind": "django", "v": ["shop.Order", order.pk]}
    assert stored == {"args": [reference], "kwargs": {"again": reference}}
    Order.objects.filter(pk=order.pk).update(status="changed")
    (loaded,), kwargs = deserialize_arguments(json.loads(json.dumps(stored)))
    assert isinstance(loaded, Order)
    assert (loaded.pk, loaded.status) == (order.pk, "changed")  # as it is now: loaded afresh
    assert kwargs["again"] == order


@pytest.mark.django_db
def test_an_unsaved_instance_is_refused_at_enqueue() -> None:
    with pytest.raises(pgjobs.SerializationError) as caught:
        MarkPaid.perform_later(Order(email="unsaved@example.com"))
    message = str(caught.value)
    assert "argument 0" in message
    assert "an unsaved shop.Order has no row to refer to: save() it before enqueueing" in message
    with pytest.raises(pgjobs.SerializationError, match=r"unsaved shop\.Order"):
        MarkPaid.perform_later(Order(pk=12345, email="built, not saved"))  # _state.adding


@pytest.mark.django_db
def test_a_deleted_row_raises_deserialization_error() -> None:
    order = Order.objects.create(email="gone@example.com")
    stored = serialize_arguments([order], {})
    order.delete()
    with pytest.raises(
        pgjobs.DeserializationError, match=r"shop\.Order with pk .* no longer exists"
    ):
        deserialize_arguments(stored)
    missing = {"__pgjobs__": "record", "kind": "django", "v": ["shop.Missing", 1]}
    with pytest.raises(pgjobs.DeserializationError, match=r"no model 'shop\.Missing' is installed"):
        deserialize_arguments({"args": [missing], "kwargs": {}})


def test_a_worker_runs_a_job_that_reads_and_writes_the_orm(url: str, worker: Worker) -> None:
    order = Order.objects.create(email="ada@example.com")
    MarkPaid.perform_later(order)
    run_once(worker)
    order.refresh_from_db()
    assert order.status == "paid"
    assert list(Event.objects.values_list("name", flat=True)) == [f"paid {order.pk}"]
    assert count(url, "SELECT count(*) FROM pgjobs_jobs WHERE finished_at IS NOT NULL") == 1


def test_a_job_whose_record_was_deleted_is_discarded(url: str, worker: Worker) -> None:
    order = Order.objects.create(email="gone@example.com")
    MarkPaid.perform_later(order)
    order.delete()
    run_once(worker)
    assert count(url, "SELECT count(*) FROM pgjobs_failed_executions") == 0
    assert count(url, "SELECT count(*) FROM pgjobs_jobs WHERE discarded_at IS NOT NULL") == 1
    assert not Event.objects.exists()


def test_model_instances_work_in_bulk(url: str, worker: Worker) -> None:
    orders = [Order.objects.create(email=f"{i}@example.com") for i in range(5)]
    pgjobs.perform_all_later([MarkPaid(order) for order in orders])
    run_once(worker)
    assert set(Order.objects.values_list("status", flat=True)) == {"paid"}


def test_the_worker_closes_django_connections_around_each_job(url: str, worker: Worker) -> None:
    connection.ensure_connection()
    before = connection.connection
    record.perform_later("closed around")
    run_once(worker)  # in this thread: CONN_MAX_AGE=0 closes the connection, as after a request
    assert connection.connection is None or connection.connection is not before
    assert Event.objects.filter(name="closed around").exists()  # and it reopens on use
