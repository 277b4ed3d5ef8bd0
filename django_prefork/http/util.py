"""Small helpers shared by the HTTP core: the cached Date header."""

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
