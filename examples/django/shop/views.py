from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from shop.jobs import SendConfirmation
from shop.models import Order


def place_order(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse("POST an email to place an order\n", status=405)
    with transaction.atomic():
        order = Order.objects.create(email=request.POST["email"])
        SendConfirmation.perform_later(order)  # in this transaction: no order, no job
        if request.POST.get("card") == "declined":
            transaction.set_rollback(True)  # neither the order nor its job is kept
            return JsonResponse({"error": "card declined"}, status=402)
    return JsonResponse({"order": order.pk}, status=201)
