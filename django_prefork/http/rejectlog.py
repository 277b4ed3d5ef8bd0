"""One warning line per rejected request, rate-limited so a flood cannot fill the disk.

gunicorn logs a refused request at warning level with the peer; so do we, but through a
token bucket per worker: `burst` lines at once, then `rate` lines a second. Lines over the
budget are counted, and the count goes out as one "N similar lines suppressed" line before
the next line that fits the budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: Lines a worker may log at once before the rate applies.
REJECT_LOG_BURST = 20
#: Lines per second, on average, once the burst is spent.
REJECT_LOG_RATE = 1.0
#: Characters of an error's reason kept in the line (it may quote what the client sent).
REASON_MAX = 80


class RateLimitedWarnings:
    """A token bucket in front of `logger.warning` (thread-safe: gthread shares it)."""

    def __init__(self, logger: logging.Logger, burst: int = REJECT_LOG_BURST,
                 rate: float = REJECT_LOG_RATE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._burst = float(burst)
        self._rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, msg: str, *args: object) -> bool:
        """Log `msg % args` if the budget allows, else count it; True if it was logged."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                self._suppressed += 1
                return False
            self._tokens -= 1
            suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            self._logger.warning("%d similar lines suppressed (rejected requests)", suppressed)
        self._logger.warning(msg, *args)
        return True


def describe_peer(client_addr: object) -> str:
    """`host:port` of a TCP peer (IPv6 in brackets), the name of a unix-socket peer."""
    if isinstance(client_addr, tuple) and len(client_addr) >= 2:
        host = str(client_addr[0])
        return f"[{host}]:{client_addr[1]}" if ":" in host else f"{host}:{client_addr[1]}"
    if isinstance(client_addr, bytes):
        client_addr = client_addr.decode("utf-8", "replace")
    return f"unix:{client_addr}" if client_addr else "unix socket peer"


def safe_reason(exc: BaseException) -> str:
    """The error's reason for a log line: its class when it says nothing, bounded, and with
    control characters escaped (a reason may quote request bytes: no log injection)."""
    text = str(exc) or (type(exc).__doc__ or type(exc).__name__).strip().splitlines()[0]
    if len(text) > REASON_MAX:
        text = text[:REASON_MAX] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii").translate(_CONTROLS)


_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(32), 127]}
