"""The shared HTTP/1.1 core: one client connection, parsed with httptools, served over WSGI.

Workers use `ServerContext` and `HTTPConnection` from `django_prefork.http.connection`.
"""

from __future__ import annotations

from .connection import HTTPConnection, ServerContext

__all__ = ["HTTPConnection", "ServerContext"]
