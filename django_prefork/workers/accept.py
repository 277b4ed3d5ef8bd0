"""accept() with one error policy, the same in every worker class.

- EAGAIN: nothing is queued (the caller waits in its own way).
- Errors about one connection only (the client went away before we took it: ECONNABORTED,
  EPROTO, ...): that connection is gone, the next one is tried.
- Out of descriptors or kernel memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) and anything else:
  the worker stays alive. The connection stays in the kernel's queue; the worker stops
  accepting for FD_BACKOFF (a level-triggered poller would report the listener readable on
  every turn and spin), then tries again, so it serves again as soon as descriptors free up.
  Logged once per episode, and once more when accept() works again. (gunicorn's sync and
  gthread workers let EMFILE end the worker; a worker that dies of it is respawned into the
  same shortage.)
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("django_prefork.error")

T = TypeVar("T")

#: accept() errors that concern one connection only (the client went away first; EPERM is a
#: firewall rule refusing it; accept(2) on Linux asks to retry on the pending network errors
#: after those).
TRANSIENT_ACCEPT_ERRORS = frozenset(
    getattr(errno, name) for name in (
        "ECONNABORTED", "EPROTO", "EPERM", "EINTR", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN",
        "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH",
    ) if hasattr(errno, name)
)
#: How long a worker leaves its listeners alone after accept() failed for want of
#: descriptors or memory: short, since a request that ends frees one.
FD_BACKOFF = 0.1
#: Connections a single call tries past transient errors before it gives the caller a turn.
_TRANSIENT_RETRIES = 16


class AcceptPolicy:
    """One per worker: wraps every accept() call and remembers a back-off in progress."""

    def __init__(self) -> None:
        #: time.monotonic() before which the worker must not call accept() (0: no back-off).
        self.paused_until = 0.0
        self._failing = False

    def paused(self, now: float | None = None) -> bool:
        if not self.paused_until:
            return False
        if (time.monotonic() if now is None else now) >= self.paused_until:
            self.paused_until = 0.0
            return False
        return True

    def accept(self, accept: Callable[[], T], where: str) -> T | None:
        """`accept()` (a listening socket's accept or _accept); None when nothing can be
        taken now: nothing is queued, or the worker backs off (then `paused()` is true)."""
        if self.paused_until and self.paused():
            return None
        for _ in range(_TRANSIENT_RETRIES):
            try:
                got = accept()
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                if exc.errno in TRANSIENT_ACCEPT_ERRORS:
                    continue
                if exc.errno == errno.EBADF:
                    return None  # our copy of the listener was closed (a drain ended)
                self._back_off(exc, where)
                return None
            if self._failing:
                self._failing = False
                log.info("accept() on %s works again", where)
            return got
        return None

    def _back_off(self, exc: OSError, where: str) -> None:
        self.paused_until = time.monotonic() + FD_BACKOFF
        if not self._failing:
            self._failing = True
            log.error("accept() on %s failed: %s; connections wait in the queue, retrying "
                      "every %.1f s", where, exc, FD_BACKOFF)
