from django.urls import path

from tests.django.shop import views

urlpatterns = [
    path("orders/", views.place_order),
    path("orders/bulk/", views.place_orders),
]
