"""Django model instances as job arguments, loaded afresh when the job runs (GlobalID).

::

    class SendReceipt(pgjobs.Job):
        discard_on = [pgjobs.DeserializationError]  # the order was deleted meanwhile

        def perform(self, order: Order) -> None: ...


    SendReceipt.perform_later(order)

What is stored is a reference, ``{"__pgjobs__": "record", "kind": "django", "v": ["shop.Order",
42]}``: the model's label (``app_label.ModelName``) and the primary key; enqueueing never touches
the database.  When the job runs the worker loads the row with
``Model._default_manager.get(pk=pk)``, inside the job's request cycle (see
:mod:`pgjobs.contrib.django.db`).

How it fails:

- An unsaved instance (no primary key yet, or ``_state.adding``) is refused at enqueue with
  :class:`pgjobs.SerializationError`, before anything is written.
- A row deleted since (or hidden by the default manager) raises
  :class:`pgjobs.DeserializationError` in the worker, so ``discard_on =
  [pgjobs.DeserializationError]`` discards the job; so does a model that is no longer installed.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import models

from pgjobs.errors import DeserializationError
from pgjobs.serialization import register_records

KIND = "django"


def is_model(cls: type) -> bool:
    return issubclass(cls, models.Model)


def reference(instance: models.Model) -> list[Any]:
    label = instance._meta.label
    if instance.pk is None or instance._state.adding:
        raise ValueError(
            f"an unsaved {label} has no row to refer to: save() it before enqueueing "
            "(or pass its primary key)"
        )
    return [label, instance.pk]


def load(ref: Any) -> models.Model:
    if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str)):
        raise DeserializationError(f"malformed Django model reference {ref!r:.200}")
    label, pk = ref
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise DeserializationError(f"no model {label!r} is installed: {exc}") from exc
    try:
        found: models.Model = model._default_manager.get(pk=pk)
    except model.DoesNotExist as exc:
        raise DeserializationError(f"{label} with pk {pk!r} no longer exists") from exc
    return found


def register() -> None:
    """Register the ``django`` record kind (the app's ``ready()``)."""
    register_records(KIND, match=is_model, reference=reference, load=load)
