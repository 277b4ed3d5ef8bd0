"""Django app config: registers django-prefork's system checks."""

from __future__ import annotations

from django.apps import AppConfig


class DjangoPreforkConfig(AppConfig):
    """Hooks the checks in at ready() so they run with `manage.py check` and at start-up."""

    name = "django_prefork"
    verbose_name = "django-prefork server"

    def ready(self) -> None:
        from django_prefork.checks import register_checks

        register_checks()
