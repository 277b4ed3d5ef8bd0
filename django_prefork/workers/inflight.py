"""The requests a worker is running, by the thread or greenlet running each, and the
per-request timeout that watches them.

The HTTP core calls `begin(conn)` once a request head is parsed and `end()` when its response
is done (`ServerContext.request_tracker`); the key is whatever runs the request (a thread
id, a greenlet), so the log of a slow or stopped request names the right request and shows
the stack of the right thread, which one value per worker (`ctx.current_request` before)
could not do under gthread.

What stopping a request means is each worker class's business (docs/workers.md,
"Timeouts"); the watch only decides when: a warning with the stack at half of `timeout`
("slow request"), the stop at `timeout`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from django_prefork.metrics.recorder import pack_serving

log = logging.getLogger("django_prefork.error")
_monotonic = time.monotonic


class Running:
    """One request in progress, as the watch sees it."""

    __slots__ = ("conn", "owner", "started")

    def __init__(self, owner: Any, conn: Any, started: float) -> None:
        self.owner = owner
        self.conn = conn  # the HTTPConnection (request_line, response_started, sock)
        self.started = started

    @property
    def request_line(self) -> str:
        return str(self.conn.request_line)


def thread_frame(owner: Any) -> FrameType | None:
    """The frame a thread (by id) is executing now."""
    return sys._current_frames().get(owner)


class RequestTracker:
    """`owner()` names what runs the current request: `threading.get_ident` for threads,
    `gevent.getcurrent` for greenlets; `frame_of(owner)` finds where it is.

    begin() and end() run on every request, so they store a bare tuple (a Running object
    per request cost a microsecond); the watch builds Running objects when it looks.
    """

    def __init__(self, owner: Callable[[], Any] = threading.get_ident,
                 frame_of: Callable[[Any], FrameType | None] = thread_frame) -> None:
        self._owner = owner
        self.frame_of = frame_of
        self._running: dict[Any, tuple[Any, float]] = {}
        #: Where the current request is shown on the metrics board (for `preforkctl
        #: status`): one spot for the worker, or one per thread (_spots, filled by
        #: _recorder.serving_spot() called from each thread); None: not shown.
        self._spot: Any = None
        self._spots: dict[Any, Any] | None = None
        self._recorder: Any = None

    def publish_to(self, recorder: Any) -> None:
        """Also show each request's line and start on the metrics board, through
        `recorder` (metrics/recorder.py; None or a StatsD-only one: nowhere). Several
        greenlets share a gevent worker's spot: it shows the one that found it free."""
        spot_of = getattr(recorder, "serving_spot", None)
        if spot_of is None:
            return
        if recorder.per_thread:
            self._recorder, self._spots = recorder, {}
        else:
            self._spot = spot_of()

    def begin(self, conn: Any) -> None:
        started = _monotonic()
        owner = self._owner()
        self._running[owner] = (conn, started)
        spot = self._spot
        if spot is None and self._spots is not None:
            spot = self._spots.get(owner) or self._thread_spot(owner)
        if spot is not None:
            raw, offset, floats, index = spot
            if not floats[index]:  # one C call shows the request (bench/serving_now.py)
                pack_serving(raw, offset, started, conn.request_line.encode("latin-1",
                                                                            "replace"))

    def end(self) -> None:
        owner = self._owner()
        entry = self._running.pop(owner, None)
        spot = self._spot
        if spot is None and self._spots is not None:
            spot = self._spots.get(owner)
        if spot is not None and entry is not None:
            floats, index = spot[2], spot[3]
            if floats[index] == entry[1]:  # (a greenlet clears only its own request)
                floats[index] = 0.0

    def _thread_spot(self, owner: Any) -> Any:
        spot = self._recorder.serving_spot()
        if spot is not None and self._spots is not None:
            self._spots[owner] = spot
        return spot

    def current(self) -> Running | None:
        """The request of whatever runs now (a signal handler: the interrupted one)."""
        owner = self._owner()
        entry = self._running.get(owner)
        return None if entry is None else Running(owner, *entry)

    def running(self) -> list[Running]:
        # (list() of the items is one C call under the GIL: a consistent snapshot)
        return [Running(owner, conn, started)
                for owner, (conn, started) in list(self._running.items())]

    def stack(self, running: Running) -> str:
        frame = self.frame_of(running.owner)
        if frame is None:
            return "  (no stack: it is running no Python code now)"
        return "".join(traceback.format_stack(frame)).rstrip()


_WARNED, _STOPPED = 1, 2


class RequestWatch:
    """Warns about a request at half of `timeout`, and has it stopped at `timeout`."""

    def __init__(self, tracker: RequestTracker, timeout: float,
                 stop: Callable[[Running], None] | None) -> None:
        self.tracker = tracker
        self.timeout = float(timeout)
        self._stop = stop  # None: someone else stops it (the sync worker: the master)
        # What was done about each request, by (owner, started): it outlives no request.
        self._done: dict[tuple[Any, float], int] = {}

    def check(self) -> None:
        if not self.timeout:
            return
        now = _monotonic()
        half = self.timeout / 2
        done = self._done
        seen = set()
        for running in self.tracker.running():
            key = (running.owner, running.started)
            seen.add(key)
            age = now - running.started
            state = done.get(key, 0)
            if age >= self.timeout and self._stop is not None and not state & _STOPPED:
                done[key] = state | _STOPPED
                log.critical("Request timeout (pid:%s): %s running for %.1f s (timeout "
                             "%g s), stopping it; it was at:\n%s", os.getpid(),
                             running.request_line, age, self.timeout,
                             self.tracker.stack(running))
                self._stop(running)
            elif age >= half and not state:
                done[key] = _WARNED
                log.warning("Slow request (pid:%s): %s running for %.1f s, half of the "
                            "timeout (%g s); it is at:\n%s", os.getpid(),
                            running.request_line, age, self.timeout,
                            self.tracker.stack(running))
        for key in [key for key in done if key not in seen]:
            del done[key]

    def run_in_thread(self) -> None:
        """Check from a thread of its own (the sync worker's main thread is in the app)."""
        if not self.timeout:
            return
        interval = min(1.0, max(0.05, self.timeout / 8))

        def loop() -> None:
            while True:
                time.sleep(interval)
                self.check()

        threading.Thread(target=loop, name="prefork-request-watch", daemon=True).start()


class RequestTimedOut(BaseException):
    """Thrown into a greenlet whose request ran past `timeout` (a BaseException, so that
    neither the app's nor the HTTP core's `except Exception` turns it into a 500)."""
