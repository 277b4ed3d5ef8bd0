"""Small helpers shared by the HTTP core: the cached Date header, the header-to-environ rule.

No imports from the rest of the package, so the access log can use the same rule.
"""

from __future__ import annotations

import time
from email.utils import formatdate

_date_cache: tuple[int, str] = (0, "")


def date_header() -> str:
    """`Date: ...\\r\\n` for now, formatted at most once per second (RFC 9110 §6.6.1)."""
    global _date_cache
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, f"Date: {formatdate(now, usegmt=True)}\r\n")
        _date_cache = cached  # one atomic assignment: safe with threads
    return cached[1]


def header_environ_key(name: str) -> str:
    """The CGI/WSGI environ key of a request header: `HTTP_` + upper case, "-" as "_";
    Content-Type and Content-Length without the prefix (PEP 3333, RFC 3875 §4.1.18)."""
    key = name.upper().replace("-", "_")
    if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
        return key
    return "HTTP_" + key
