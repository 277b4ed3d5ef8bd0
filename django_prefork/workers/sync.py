"""The sync worker: one request at a time, `Connection: close` after each (as gunicorn's).

Right for CPU-bound apps behind a buffering proxy; slow clients tie up a whole worker, which
is what the gthread and gevent classes are for. How it waits: select() on the listeners and
the wake pipe; how it schedules: serves each connection to its end before the next accept.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from typing import Any

from django_prefork.http.connection import HTTPConnection
from django_prefork.http.tls import secure
from django_prefork.server.sockets import Listener
from django_prefork.workers.accept import FD_BACKOFF
from django_prefork.workers.base import (
    KERNEL_TIMEOUTS_INHERITED,
    Worker,
    log,
    set_kernel_timeouts,
)
from django_prefork.workers.heads import head_limit
from django_prefork.workers.inflight import RequestWatch


class SyncWorker(Worker):
    blocking_sockets = KERNEL_TIMEOUTS_INHERITED

    def make_watch(self) -> RequestWatch:
        """A request past `timeout` stops our heartbeat (it runs in the only thread that
        beats), so the master stops it: SIGABRT, whose handler logs the stack and sends a
        500 if no byte of the response went out (Worker._on_abort). The watch only warns,
        from a thread of its own, at half the timeout."""
        return RequestWatch(self.tracker, self.cfg.timeout, None)

    def run(self) -> None:
        assert self.ctx is not None
        self.watch.run_in_thread()
        # A client silent this long is dropped before the master would kill us for it.
        self.client_timeout = max(1.0, self.cfg.timeout - 1) if self.cfg.timeout else None
        for listener in self.listeners:
            listener.sock.setblocking(False)
            if KERNEL_TIMEOUTS_INHERITED and self.client_timeout:
                set_kernel_timeouts(listener.sock, self.client_timeout)
        # Everything accept() needs, resolved once (socket.accept converts enums each time;
        # _accept, CPython's C-level accept, returns the bare fd and address).
        self._accept_from: dict[int, tuple[Any, int, int, int, Any, str]] = {
            id(listener): (listener.sock._accept,  # type: ignore[attr-defined]
                           listener.sock.family.value,
                           listener.sock.type.value, listener.sock.proto, listener.address,
                           listener.spec)
            for listener in self.listeners
        }
        watched = [listener.sock for listener in self.listeners] + [self._wake_r]
        policy = self.accept_policy

        while self.alive:
            if not self.look_after_ourselves():
                break
            if policy.paused():
                # Out of descriptors: the listeners stay readable, so wait on the wake pipe
                # alone until the back-off ends.
                self._wait([self._wake_r], policy.paused_until - time.monotonic())
                continue
            if self._accept_some():
                continue  # more connections may be queued: try again before sleeping
            self._wait(watched, self.poll_interval)

        drain = self.begin_drain()
        while not drain.over(0):
            self.look_after_ourselves()
            drain.take_queued(lambda: True, self._accept_one)
            if drain.listening:  # backing off (out of descriptors): wait, then try again
                self._wait([self._wake_r], min(FD_BACKOFF, drain.left()))

    def _wait(self, watched: list[Any], timeout: float) -> None:
        try:
            ready, _, _ = select.select(watched, [], [], max(0.0, timeout))
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.EBADF):
                return
            raise
        self.housekeeping_now()
        if self._wake_r in ready:
            self.drain_wakeups()

    def _accept_some(self) -> bool:
        """Accept and serve at most one connection per listener; True if any was served."""
        served = False
        for listener in self.listeners:
            if not self.alive:
                break
            served = self._accept_one(listener) or served
        return served

    def _accept_one(self, listener: Listener) -> bool:
        """Accept one connection and serve it to its end; False if none was taken."""
        accept, family, type_, proto, server_addr, spec = self._accept_from[id(listener)]
        got = self.accept_policy.accept(accept, spec)
        if got is None:
            return False
        fd, addr = got
        self.serve(socket.socket(family, type_, proto, fileno=fd), addr, server_addr)
        return True

    def serve(self, client: Any, addr: object, server_addr: object) -> None:
        assert self.ctx is not None
        if self.client_timeout and not KERNEL_TIMEOUTS_INHERITED:
            client.settimeout(self.client_timeout)
        if self.ctx.tls is not None:
            # The handshake has header_timeout, as a request head: a client that opens TCP
            # and never says hello holds this worker no longer than a slow head would.
            client = secure(self.ctx.tls, client, head_limit(self.ctx, self.cfg))
            if client is None:
                return
            client.settimeout(self.client_timeout)
        conn = HTTPConnection(client, addr, server_addr, self.ctx)
        try:
            conn.handle_request()
        except Exception:  # the HTTP core handles app errors; this is a bug guard
            log.exception("Error handling request")
        finally:
            conn.close()
        self.request_done()
