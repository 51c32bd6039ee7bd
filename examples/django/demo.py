"""The example in one go (what `./run` does): migrate, place orders through the view (one with a
declined card, rolled back with its job), run `manage.py pgjobs start` until the orders are
confirmed (at most $DEMO_SECONDS, default 60), print them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from shop.models import Order

    print("example: manage.py migrate (Django's tables, and pgjobs' through its own migrations)")
    call_command("migrate", verbosity=0)
    client = Client()
    placed = []
    for email, card in [("ada@example.com", "ok"), ("grace@example.com", "ok"),
                        ("mallory@example.com", "declined")]:  # fmt: skip
        response = client.post("/orders/", {"email": email, "card": card})
        print(f"example: POST /orders/ {email} card={card} -> {response.status_code} "
              f"{response.content.decode()}")  # fmt: skip
        if response.status_code == 201:
            placed.append(response.json()["order"])
    print(f"example: orders in the database: {Order.objects.filter(pk__in=placed).count()} "
          "(the declined one and its job were rolled back together)")  # fmt: skip
    print("example: manage.py pgjobs start, until the orders are confirmed", flush=True)
    worker = subprocess.Popen([sys.executable, str(HERE / "manage.py"), "pgjobs", "start"])
    deadline = time.monotonic() + float(os.environ.get("DEMO_SECONDS") or 60)
    waiting = Order.objects.filter(pk__in=placed, status="placed")
    while waiting.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    for order in Order.objects.filter(pk__in=placed).order_by("pk"):
        print(f"example: {order}")
    return 1 if waiting.exists() else 0


if __name__ == "__main__":
    sys.exit(main())
