"""Jobs live in an app's jobs.py: `manage.py pgjobs start` imports every installed app's."""

import pgjobs
from shop.models import Order


class SendConfirmation(pgjobs.Job):
    queue_as = "mailers"
    discard_on = [pgjobs.DeserializationError]  # the order was deleted before the job ran

    def perform(self, order: Order) -> None:  # loaded afresh from the database
        print(f"  [job] confirming {order}", flush=True)
        order.status = "confirmed"
        order.save(update_fields=["status"])
