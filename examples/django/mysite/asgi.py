"""ASGI entry point: Django, with the pgjobs dashboard at /jobs/ for logged-in staff.

pip install "pgjobs[django,web]" uvicorn
uvicorn mysite.asgi:application
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_app = get_asgi_application()  # sets Django up: import pgjobs' part after it

from pgjobs.contrib.django import with_dashboard  # noqa: E402

application = with_dashboard(django_app, prefix="/jobs")
