"""The sync worker: one request at a time, `Connection: close` after each (as gunicorn's).

Right for CPU-bound apps behind a buffering proxy; slow clients tie up a whole worker, which
is what the gthread and gevent classes are for.
"""

from __future__ import annotations

import errno
import select
import socket

from django_prefork.http.connection import HTTPConnection
from django_prefork.server.sockets import Listener
from django_prefork.workers.base import Worker, log

# accept() errors that concern one connection only (the client went away first).
_TRANSIENT_ACCEPT_ERRORS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}


class SyncWorker(Worker):
    def run(self) -> None:
        for listener in self.listeners:
            listener.sock.setblocking(False)
        watched = [listener.sock for listener in self.listeners] + [self._wake_r]
        # Beat at least twice per timeout so a healthy idle worker is never killed.
        poll_interval = min(1.0, self.cfg.timeout / 2) if self.cfg.timeout else 1.0

        while self.alive:
            self.heartbeat.beat()
            self.handle_pending_work()
            if not self.parent_alive():
                return
            if self._accept_some():
                continue  # more connections may be queued: try again before sleeping
            try:
                ready, _, _ = select.select(watched, [], [], poll_interval)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EBADF):
                    continue
                raise
            if self._wake_r in ready:
                self.drain_wakeups()

    def _accept_some(self) -> bool:
        """Accept and serve at most one connection per listener; True if any was served."""
        served = False
        for listener in self.listeners:
            if not self.alive:
                break
            try:
                client, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno in _TRANSIENT_ACCEPT_ERRORS:
                    continue
                raise
            served = True
            self.serve(listener, client, addr)
        return served

    def serve(self, listener: Listener, client: socket.socket, addr: object) -> None:
        assert self.ctx is not None
        client.setblocking(True)
        # A client silent this long is dropped before the master would kill us for it.
        if self.cfg.timeout:
            client.settimeout(max(1.0, self.cfg.timeout - 1))
        conn = HTTPConnection(client, addr, listener.address, self.ctx)
        try:
            conn.handle_request()
        except Exception:  # the HTTP core handles app errors; this is a bug guard
            log.exception("Error handling request")
        finally:
            conn.close()
        self.request_done()
