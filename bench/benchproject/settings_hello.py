"""Same settings, but WSGI_APPLICATION is the plain WSGI hello world (no Django per request)."""

from __future__ import annotations

from benchproject.settings import *  # noqa: F403

WSGI_APPLICATION = "benchproject.hello.application"
