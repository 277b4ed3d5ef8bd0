"""The drain: how every worker class stops (TERM, max_requests, a HUP or TTOU retiring it).

1. Accept every connection already queued in the kernel's accept queue, and serve it (with
   `Connection: close`): as many as the queue held when the drain began (TCP: the kernel
   says, TCP_INFO; else at most `backlog`, all the queue can hold), or until accept() finds
   it empty. Not "until empty" alone: clients told `Connection: close` reconnect at once,
   and a worker taking those would keep a full stop going until `graceful_timeout`.
   At `worker_connections` the worker keeps its listener and accepts
   more as connections end: the queue holds connections that clients already see as open,
   and closing the last copy of a listening socket resets them (issue 15.3: gunicorn's
   gevent answered them, ours reset all 200 at `--worker-connections 5`).
2. Once accept() says the queue is empty, close this worker's copy of the listener (never
   unlink a unix socket: the master owns the path). New clients then go to the other
   workers, or, on a full stop, are refused by the kernel.
3. Finish the connections in hand; `graceful_timeout` bounds the whole drain.

A worker class supplies how it accepts and serves one connection and whether it has room;
this module decides when to stop listening.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from django_prefork.server.sockets import Listener
from django_prefork.workers.accept import AcceptPolicy

#: On a drain, a connection between two requests gets this long (from its last response) to
#: send the next one, which is answered with `Connection: close`. A client that sends its
#: next request right after a response (most do) then never races the close; connections
#: idle for longer are closed at once.
DRAIN_GRACE = 1.0


def queued_connections(sock: Any) -> int | None:
    """Connections waiting in a TCP listener's accept queue, or None if the kernel cannot
    say (not Linux, a unix socket). For a listening socket Linux reports the queue's length
    in tcp_info's `tcpi_unacked` (offset 24) and its limit in `tcpi_sacked`."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        data = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 32)
    except OSError:
        return None
    if len(data) < 28:
        return None
    queued: int = struct.unpack_from("I", data, 24)[0]
    return queued


def close_listener_copy(listener: Listener) -> None:
    """Close our descriptor of a listening socket (the master and other workers keep theirs)."""
    with contextlib.suppress(OSError):
        listener.sock.close()


class Drain:
    """The drain of one worker, begun when it stops accepting new work. `backlog`: the most
    the queue can hold (0: take nothing queued, only close the listener copies)."""

    def __init__(self, listeners: list[Listener], graceful_timeout: float, backlog: int,
                 policy: AcceptPolicy,
                 close: Callable[[Listener], None] = close_listener_copy) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + max(0.0, float(graceful_timeout))
        self.listening = list(listeners)
        #: Connections each listener may still give us (by id: listeners are unhashable).
        self._budget: dict[int, int] = {}
        for listener in self.listening:
            queued = queued_connections(listener.sock) if backlog else 0
            self._budget[id(listener)] = backlog if queued is None else queued
        self._policy = policy
        self._close = close

    def take_queued(self, has_room: Callable[[], bool],
                    accept_one: Callable[[Listener], bool]) -> None:
        """Accept (and hand to the worker) what is queued while there is room; stop
        listening where the queue is empty. Call again whenever room frees up.

        `accept_one(listener)` accepts and starts serving one connection, and says whether
        it took one (through `AcceptPolicy.accept`, so the error policy is the usual one).
        """
        for listener in list(self.listening):
            key = id(listener)
            while time.monotonic() < self.deadline:
                if self._budget[key] <= 0:
                    self.stop_listening(listener)  # all that was queued is taken
                    break
                if not has_room():
                    break  # full: keep listening, take more when a connection ends
                if not accept_one(listener):
                    # Empty, unless we back off (out of descriptors: the queue may hold more).
                    if not self._policy.paused():
                        self.stop_listening(listener)
                    break
                self._budget[key] -= 1
        if time.monotonic() >= self.deadline:
            self.stop_all()

    def stop_listening(self, listener: Listener) -> None:
        if listener in self.listening:
            self.listening.remove(listener)
            self._close(listener)

    def stop_all(self) -> None:
        for listener in list(self.listening):
            self.stop_listening(listener)

    def over(self, connections: int) -> bool:
        """Whether the worker may exit: nothing left to accept or serve, or out of time."""
        if time.monotonic() >= self.deadline:
            self.stop_all()
            return True
        return not self.listening and connections == 0

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())
