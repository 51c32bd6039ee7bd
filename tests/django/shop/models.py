from django.db import models


class Order(models.Model):
    email = models.CharField(max_length=200)
    status = models.CharField(max_length=20, default="new")


class Event(models.Model):
    """What the tests' jobs did, written through the ORM by the worker."""

    name = models.CharField(max_length=200)
