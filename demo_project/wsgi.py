"""WSGI config for demo_project.

It exposes the WSGI callable as a module-level variable named ``application``;
``manage.py runprefork`` loads it through the ``WSGI_APPLICATION`` setting.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")

application = get_wsgi_application()
