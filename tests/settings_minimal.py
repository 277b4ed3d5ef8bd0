"""Minimal settings for running the checks and logging tests on their own."""

from __future__ import annotations

SECRET_KEY = "django-prefork-tests-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "django_prefork",
]
MIDDLEWARE: list[str] = []
STATIC_URL = "/static/"
DATABASES: dict = {}
