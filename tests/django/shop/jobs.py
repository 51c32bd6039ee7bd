"""The tests' jobs: found by `manage.py pgjobs start` through the app's jobs module."""

from __future__ import annotations

import pgjobs
from tests.django.shop.models import Event, Order


class MarkPaid(pgjobs.Job):
    """Reads and writes the ORM; discarded when its order was deleted meanwhile."""

    discard_on = [pgjobs.DeserializationError]

    def perform(self, order: Order) -> None:
        order.status = "paid"
        order.save(update_fields=["status"])
        Event.objects.create(name=f"paid {order.pk}")


@pgjobs.job(queue="default")
def record(name: str) -> None:
    Event.objects.create(name=name)
