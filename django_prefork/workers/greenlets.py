"""The gevent worker's connection greenlets: at most `size` at once, each serving one
connection after another instead of ending with it.

gevent's `Pool.spawn` makes a `Greenlet` per connection: the object, its start callback,
links and the pool's bookkeeping, and on Python 3.11+ a new frame stack for each greenlet
(an mmap and a munmap per connection). With `Connection: close` that is every request. A
greenlet here that has finished a connection waits for the next one (the most recently idle
first: its stack is warm); above `keep_idle` idle ones, it ends. Figures:
docs/benchmarks.md.

Only the gevent worker imports this module (it needs gevent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.hub import Waiter, get_hub

from django_prefork.workers.inflight import RequestTimedOut

#: Idle greenlets kept waiting for a connection; more end when their connection does. Each
#: keeps what is thread-local to it, as a gthread thread does: with CONN_MAX_AGE > 0, its
#: database connection.
KEEP_IDLE = 64

_STOP = object()


class ConnectionGreenlets:
    """What the worker needs of a pool (`full`, `free_count`, `wait_available`, `join`,
    `spawn`), with greenlets that are used again."""

    def __init__(self, size: int, serve: Callable[..., None], keep_idle: int = KEEP_IDLE) -> None:
        self.size = max(1, size)
        self._serve = serve
        self._keep_idle = keep_idle
        self._busy = 0  # greenlets serving a connection (or about to)
        self._idle: list[Waiter] = []  # greenlets waiting for one, most recent last
        self._room = Event()  # set while busy < size
        self._room.set()
        self._quiet = Event()  # set while no greenlet serves
        self._quiet.set()
        self._loop = get_hub().loop

    def full(self) -> bool:
        return self._busy >= self.size

    def free_count(self) -> int:
        return max(0, self.size - self._busy)

    def wait_available(self, timeout: float | None = None) -> None:
        """Until a greenlet may be had (or timeout)."""
        if self.full():
            self._room.wait(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Until no connection is being served (or timeout)."""
        self._quiet.wait(timeout)

    def spawn(self, *args: Any) -> None:
        """Serve `serve(*args)` in an idle greenlet, or a new one (the caller checked room)."""
        self._busy += 1
        if self._busy >= self.size:
            self._room.clear()
        self._quiet.clear()
        if self._idle:
            # A Waiter is switched to from the hub: the greenlet starts on the hub's next
            # turn, as a spawned one would.
            self._loop.run_callback(self._idle.pop().switch, args)
        else:
            gevent.spawn_raw(self._run, args)

    def stop_idle(self) -> None:
        """End the greenlets waiting for a connection (the worker is draining)."""
        self._keep_idle = 0
        while self._idle:
            self._loop.run_callback(self._idle.pop().switch, _STOP)

    def _run(self, args: Any) -> None:
        while True:
            try:
                self._serve(*args)
            finally:
                self._busy -= 1
                if self._busy < self.size:
                    self._room.set()
                if not self._busy:
                    self._quiet.set()
            args = self._wait_for_work()
            if args is _STOP:
                return

    def _wait_for_work(self) -> Any:
        """The next connection's arguments, or _STOP."""
        while len(self._idle) < self._keep_idle:
            waiter = Waiter()
            self._idle.append(waiter)
            try:
                return waiter.get()
            except RequestTimedOut:
                # The request watch's stop, thrown just after the request had ended.
                self._forget(waiter)
            except BaseException:  # killed while idle (the worker's exit): just end
                self._forget(waiter)
                raise
        return _STOP

    def _forget(self, waiter: Waiter) -> None:
        if waiter in self._idle:
            self._idle.remove(waiter)
