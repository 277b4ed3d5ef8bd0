"""The sync worker: one request at a time, `Connection: close` after each (as gunicorn's).

Right for CPU-bound apps behind a buffering proxy; slow clients tie up a whole worker, which
is what the gthread and gevent classes are for.
"""

from __future__ import annotations

import errno
import select
import socket

from django_prefork.http.connection import HTTPConnection
from django_prefork.workers.base import (
    KERNEL_TIMEOUTS_INHERITED,
    Worker,
    log,
    set_kernel_timeouts,
)

# accept() errors that concern one connection only (the client went away first).
_TRANSIENT_ACCEPT_ERRORS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}


class SyncWorker(Worker):
    blocking_sockets = KERNEL_TIMEOUTS_INHERITED
    def run(self) -> None:
        assert self.ctx is not None
        # A client silent this long is dropped before the master would kill us for it.
        self.client_timeout = max(1.0, self.cfg.timeout - 1) if self.cfg.timeout else None
        for listener in self.listeners:
            listener.sock.setblocking(False)
            if KERNEL_TIMEOUTS_INHERITED and self.client_timeout:
                set_kernel_timeouts(listener.sock, self.client_timeout)
        # Everything accept() needs, resolved once (socket.accept converts enums each time).
        self._accept_from = [
            (listener.sock._accept, listener.sock.family.value, listener.sock.type.value,
             listener.sock.proto, listener.address)
            for listener in self.listeners
        ]
        watched = [listener.sock for listener in self.listeners] + [self._wake_r]
        # Beat at least twice per timeout so a healthy idle worker is never killed.
        poll_interval = min(1.0, self.cfg.timeout / 2) if self.cfg.timeout else 1.0

        while self.alive:
            if not self.look_after_ourselves():
                return
            if self._accept_some():
                continue  # more connections may be queued: try again before sleeping
            try:
                ready, _, _ = select.select(watched, [], [], poll_interval)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EBADF):
                    continue
                raise
            self.housekeeping_now()
            if self._wake_r in ready:
                self.drain_wakeups()

    def _accept_some(self) -> bool:
        """Accept and serve at most one connection per listener; True if any was served."""
        served = False
        for accept, family, type_, proto, server_addr in self._accept_from:
            if not self.alive:
                break
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno in _TRANSIENT_ACCEPT_ERRORS:
                    continue
                raise
            served = True
            self.serve(socket.socket(family, type_, proto, fileno=fd), addr, server_addr)
        return served

    def serve(self, client: socket.socket, addr: object, server_addr: object) -> None:
        assert self.ctx is not None
        if self.client_timeout and not KERNEL_TIMEOUTS_INHERITED:
            client.settimeout(self.client_timeout)
        conn = HTTPConnection(client, addr, server_addr, self.ctx)
        try:
            conn.handle_request()
        except Exception:  # the HTTP core handles app errors; this is a bug guard
            log.exception("Error handling request")
        finally:
            conn.close()
        self.request_done()

