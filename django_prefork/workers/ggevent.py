"""The gevent worker: one greenlet per connection, up to `worker_connections` per worker.

Only ever imported by a worker started as a fresh interpreter (`workers/boot.py`), which
calls `gevent.monkey.patch_all()` before Django or the project is imported. So the
standard library (socket, time.sleep, threading.local, ...) is cooperative everywhere, the
inherited listening sockets are gevent sockets, and every greenlet has its own
`django.db.connection` (Django keys connections by the current thread, which is now the
greenlet).

The main greenlet beats the heartbeat: a request that blocks the whole process (CPU-bound,
or a C library that gevent cannot patch) stops the beat, and the master kills the worker
after `timeout`.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from typing import Any

import gevent
import gevent.socket
from gevent import monkey
from gevent import select as gselect
from gevent.pool import Pool

from django_prefork.http.connection import HTTPConnection, ServerContext
from django_prefork.server.sockets import Listener
from django_prefork.workers.base import Worker, log
from django_prefork.workers.gthread import (
    DRAIN_GRACE,
    FIRST_RECHECK,
    MAX_RECHECK,
    PEEK_SIZE,
    TRANSIENT_ACCEPT_ERRORS,
    RequestScopedDraining,
    head_ready,
    io_timeout,
)

_os_close = monkey.get_original("os", "close")


class GeventWorker(Worker):
    """`--worker-class gevent`: every connection in its own greenlet."""

    # PEP 3333: the application may be invoked concurrently in this process (by greenlets,
    # which the patched `threading` presents as threads).
    multithread = True
    keepalive = True

    def __init__(self, **kwargs: Any) -> None:
        if not monkey.is_module_patched("socket"):
            # A fork of an unpatched process (--preload) would share one DB connection
            # between greenlets, and block on every socket call.
            raise RuntimeError("the gevent worker must start as a fresh interpreter that "
                               "patches the standard library first (not with --preload)")
        super().__init__(**kwargs)
        cfg = self.cfg
        self.keepalive = cfg.keepalive > 0
        self.io_timeout = io_timeout(cfg)
        self.keepalive_timeout = float(cfg.keepalive)
        self.line_limit = getattr(cfg, "limit_request_line", 4094)
        self._pool = Pool(max(1, cfg.worker_connections))
        self._drain_started = 0.0
        # Readable once the drain starts: wakes every connection waiting between requests.
        self._drain_r, self._drain_w = os.pipe()

    def make_context(self) -> ServerContext:
        return RequestScopedDraining.adopt(super().make_context())

    # -- life cycle ------------------------------------------------------------------------
    def run(self) -> None:
        poll_interval = min(1.0, self.cfg.timeout / 2) if self.cfg.timeout else 1.0
        for listener in self.listeners:
            if not isinstance(listener.sock, gevent.socket.socket):  # pragma: no cover
                listener.sock = gevent.socket.socket(fileno=listener.sock.detach())
        acceptors = [gevent.spawn(self._accept_loop, listener) for listener in self.listeners]
        # While the hub sleeps in the event loop, Python runs signal handlers late (gevent
        # polls for them every few hundred ms). A byte on the wake pipe wakes us at once.
        signal.set_wakeup_fd(self._wake_w)

        while self.alive:
            self.heartbeat.beat()
            self.handle_pending_work()
            if not self.parent_alive():
                self.stop_accepting()
                break
            ready, _, _ = gselect.select([self._wake_r], [], [], poll_interval)
            if ready:
                self.drain_wakeups()

        self._begin_drain(acceptors)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while len(self._pool) and time.monotonic() < deadline:
            self.heartbeat.beat()
            self.handle_pending_work()
            self._pool.join(timeout=max(0.0, min(poll_interval, deadline - time.monotonic())))
        if len(self._pool):
            log.warning("Graceful timeout: %d connections still open at exit", len(self._pool))

    def _begin_drain(self, acceptors: list[gevent.Greenlet]) -> None:
        """Stop accepting; wake idle connections so they close (or get Connection: close)."""
        self.ctx.draining = True  # type: ignore[union-attr]
        self.alive = False
        self._drain_started = time.monotonic()
        os.write(self._drain_w, b"x")
        # An acceptor is suspended before its accept() call (in wait_available() or waiting
        # for the listener to be readable), so killing it loses no connection.
        gevent.killall(acceptors)
        # From here on, no greenlet switch until our listeners are closed: connections
        # already queued for us would be reset when the last copy of a listening socket
        # closes (a full stop), so take them now, and close right after.
        for listener in self.listeners:
            sock = listener.sock
            address = listener.address
            try:
                sock.settimeout(0.0)
                while self._pool.free_count() > 0:
                    client, addr = sock.accept()
                    self._pool.spawn(self._handle, client, addr, address)
            except OSError:
                pass
            try:
                # Our copy only; never unlink a unix socket here. Closed *now*: gevent defers
                # both socket.close() and its patched os.close() to a later turn of the hub,
                # in which clients told `Connection: close` could reconnect to the doomed
                # socket and then be reset.
                _os_close(sock.detach())
            except OSError:
                pass
        log.info("Worker draining: %d connections open", len(self._pool))

    # -- greenlets -------------------------------------------------------------------------
    def _accept_loop(self, listener: Listener) -> None:
        sock = listener.sock
        address = listener.address
        while self.alive:
            self._pool.wait_available()  # at worker_connections, accepting pauses
            if not self.alive:
                return
            try:
                client, addr = sock.accept()
            except OSError as exc:
                if not self.alive or exc.errno == errno.EBADF:
                    return
                if exc.errno in TRANSIENT_ACCEPT_ERRORS:
                    continue
                log.error("accept() failed on %s: %s", listener.spec, exc)
                gevent.sleep(0.5)  # EMFILE and friends: do not spin
                continue
            # Even if the drain began meanwhile: the connection is ours now, answer it.
            self._pool.spawn(self._handle, client, addr, address)

    def _handle(self, client: Any, addr: Any, server_addr: Any) -> None:
        ctx = self.ctx
        assert isinstance(ctx, RequestScopedDraining)
        conn = HTTPConnection(client, addr, server_addr, ctx)
        try:
            client.settimeout(self.io_timeout)
            limit = self.io_timeout  # a new client has this long to send its request
            while True:
                if not conn.has_pending_data() and not self._wait_for_head(client, limit):
                    return
                ctx.begin_request()
                try:
                    keep = conn.handle_request()
                finally:
                    ctx.end_request()
                self.request_done()
                if not keep:
                    return
                limit = self.keepalive_timeout
        except Exception:  # the HTTP core handles app errors; this is a bug guard
            log.exception("Error handling request")
        finally:
            conn.close()

    def _wait_for_head(self, sock: Any, limit: float) -> bool:
        """Wait (without reading) until a whole request head is buffered; False to close.

        Waiting here rather than inside the HTTP core lets a drain close a connection that is
        idle between requests, and bounds how long a client may take to send a head.
        """
        since = time.monotonic()
        partial_since = 0.0
        recheck = FIRST_RECHECK
        while True:
            now = time.monotonic()
            if not partial_since:
                deadline = since + limit
                if self._drain_started:
                    deadline = min(deadline, since + DRAIN_GRACE)
                remaining = deadline - now
                if remaining <= 0:
                    return False
                fds = [sock] if self._drain_started else [sock, self._drain_r]
                ready, _, _ = gselect.select(fds, [], [], remaining)
                if sock not in ready:
                    continue  # timed out, or the drain began: look at the deadline again
            else:
                deadline = partial_since + self.io_timeout
                if self._drain_started:
                    deadline = min(deadline, self._drain_started + DRAIN_GRACE)
                if now >= deadline:
                    return False
                gevent.sleep(min(recheck, deadline - now))
                recheck = min(MAX_RECHECK, recheck * 2)
            try:
                data = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
            except OSError:
                return False
            if not data:
                return False  # the client closed between requests
            if head_ready(data, self.line_limit):
                return True
            if not partial_since:
                partial_since = time.monotonic()
