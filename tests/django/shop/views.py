"""A view that writes a row and enqueues its job in one atomic block."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse

import pgjobs
from tests.django.shop.jobs import MarkPaid
from tests.django.shop.models import Order


class PaymentDeclined(Exception):
    pass


def place_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(email=request.POST["email"])
        handle = MarkPaid.perform_later(order)
        if request.POST.get("decline"):
            raise PaymentDeclined(order.email)  # rolls back the order and its job
    return JsonResponse({"order": order.pk, "job": str(handle.job_id)})


def place_orders(request: HttpRequest) -> JsonResponse:
    emails = request.POST.getlist("email")
    with transaction.atomic():
        orders = [Order.objects.create(email=email) for email in emails]
        pgjobs.perform_all_later([MarkPaid(order) for order in orders])
        if request.POST.get("decline"):
            raise PaymentDeclined(",".join(emails))
    return JsonResponse({"orders": [o.pk for o in orders]})
