"""Transactional by default: inside transaction.atomic() a job is written on Django's
connection and exists if and only if the block commits; outside one it commits at once."""

from __future__ import annotations

import asyncio

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.test import Client

import pgjobs
from pgjobs import runtime
from pgjobs.contrib.django import db
from pgjobs.enqueue import core as enqueue
from tests.django.conftest import count, jobs
from tests.django.shop.jobs import MarkPaid, record
from tests.django.shop.models import Order
from tests.django.shop.views import PaymentDeclined


class Boom(Exception):
    pass


def test_the_app_installs_the_connection_provider() -> None:
    assert enqueue._provider is db.current_connection


def test_outside_atomic_the_job_commits_at_once(url: str) -> None:
    handle = record.perform_later("now")
    assert handle.enqueued
    assert jobs(url) == 1


def test_inside_atomic_the_job_commits_with_the_block(url: str) -> None:
    with transaction.atomic():
        record.perform_later("with the block")
        assert jobs(url) == 0  # not committed yet: another connection cannot see it
        with connection.cursor() as cursor:  # Django's connection sees its own transaction
            cursor.execute("SELECT count(*) FROM pgjobs_jobs")
            assert cursor.fetchone() == (1,)
    assert jobs(url) == 1


def test_a_rolled_back_block_leaves_no_job(url: str) -> None:
    with pytest.raises(Boom), transaction.atomic():
        Order.objects.create(email="ada@example.com")
        record.perform_later("never")
        raise Boom
    assert (jobs(url), Order.objects.count()) == (0, 0)


def test_a_rolled_back_savepoint_takes_its_jobs_with_it(url: str) -> None:
    with transaction.atomic():
        record.perform_later("kept")
        with pytest.raises(Boom), transaction.atomic():
            record.perform_later("rolled back with the savepoint")
            raise Boom
    assert count(url, "SELECT array_agg(arguments->'args'->>0) FROM pgjobs_jobs") == ["kept"]


def test_bulk_enqueue_joins_the_block(url: str) -> None:
    with pytest.raises(Boom), transaction.atomic():
        pgjobs.perform_all_later([record.build(str(i)) for i in range(3)])
        raise Boom
    assert jobs(url) == 0
    with transaction.atomic():
        pgjobs.perform_all_later([record.build(str(i)) for i in range(3)])
    assert jobs(url) == 3


def test_an_explicit_connection_still_wins(url: str) -> None:
    import psycopg

    with transaction.atomic(), psycopg.connect(url) as own:
        record.set(connection=own).perform_later("own")
        own.rollback()
    assert jobs(url) == 0


def test_a_broken_block_refuses_the_enqueue_as_django_does(url: str) -> None:
    with transaction.atomic():
        try:
            with transaction.atomic(savepoint=False), connection.cursor() as cursor:
                cursor.execute("SELECT 1/0")
        except DatabaseError:
            pass  # swallowed inside atomic: the outer block can only roll back now
        with pytest.raises(TransactionManagementError):
            record.perform_later("refused")
    assert jobs(url) == 0


def test_the_view_writes_the_order_and_its_job_together(url: str) -> None:
    client = Client()
    response = client.post("/orders/", {"email": "ada@example.com"})
    assert response.status_code == 200
    order = Order.objects.get()
    assert count(url, "SELECT arguments->'args'->0->'v'->>1 FROM pgjobs_jobs") == str(order.pk)
    with pytest.raises(PaymentDeclined):
        client.post("/orders/", {"email": "bob@example.com", "decline": "1"})
    assert (Order.objects.count(), jobs(url)) == (1, 1)


def test_the_bulk_view_rolls_back_every_job(url: str) -> None:
    client = Client()
    with pytest.raises(PaymentDeclined):
        client.post("/orders/bulk/", {"email": ["a@example.com", "b@example.com"], "decline": "1"})
    assert (Order.objects.count(), jobs(url)) == (0, 0)
    client.post("/orders/bulk/", {"email": ["a@example.com", "b@example.com"]})
    assert (Order.objects.count(), jobs(url)) == (2, 2)


def test_async_enqueue_uses_pgjobs_pool(url: str) -> None:
    async def enqueue_later() -> None:
        await MarkPaid.perform_later_async(order)
        await pgjobs.perform_all_later_async([record.build("async")])
        await runtime.get_database().close_async()  # its async pool belongs to this loop

    order = Order.objects.create(email="ada@example.com")

    asyncio.run(enqueue_later())
    assert jobs(url) == 2


def test_integrity_errors_roll_the_job_back_too(url: str) -> None:
    order = Order.objects.create(email="ada@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        MarkPaid.perform_later(order)
        Order.objects.create(pk=order.pk, email="duplicate")
    assert jobs(url) == 0
