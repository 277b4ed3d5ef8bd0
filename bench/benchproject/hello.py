"""The plain WSGI hello world: measures the server alone, with no framework per request.

The module sets Django up at import, as `get_wsgi_application()` does, so that a gunicorn
worker serving it holds the same libraries in memory as a runprefork worker (which always
sets Django up: it is a management command). Per request nothing of Django runs, in either
server; only the process state is made equal, so the memory column compares like with like.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings_hello")
django.setup(set_prefix=False)

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The smallest correct WSGI app: known length, one chunk, no iteration overhead."""
    start_response("200 OK", HEADERS)
    return [BODY]
