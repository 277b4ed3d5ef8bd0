"""The gevent worker: one greenlet per connection, up to `worker_connections` per worker
(greenlets are used again for later connections: workers/greenlets.py).

Only ever imported by a worker started as a fresh interpreter (`workers/boot.py`), which
calls `gevent.monkey.patch_all()` before Django or the project is imported. So the
standard library (socket, time.sleep, threading.local, ...) is cooperative everywhere, the
inherited listening sockets are gevent sockets, and every greenlet has its own
`django.db.connection` (Django keys connections by the current thread, which is now the
greenlet; a greenlet used again keeps it, as a thread of the gthread worker does).

The main greenlet beats the heartbeat: a request that blocks the whole process (CPU-bound,
or a C library that gevent cannot patch) stops the beat, and the master kills the worker
after `timeout`.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType
from typing import Any

import gevent
import gevent.socket
from gevent import monkey
from gevent import select as gselect

from django_prefork.http.connection import RECV_SIZE, HTTPConnection, ServerContext
from django_prefork.http.tls import secure
from django_prefork.server.sockets import Listener
from django_prefork.workers.accept import FD_BACKOFF
from django_prefork.workers.base import Worker, answer_stopped, log
from django_prefork.workers.drain import DRAIN_GRACE, Drain
from django_prefork.workers.greenlets import ConnectionGreenlets
from django_prefork.workers.heads import HANDOVER_TIMEOUT, head_limit, head_ready, io_timeout
from django_prefork.workers.inflight import RequestTimedOut, RequestTracker, Running
from django_prefork.workers.loadboard import ACCEPT_BACKOFF, FULL, GEVENT_FLOOR, FairAccept

_os_close = monkey.get_original("os", "close")

# What _wait_for_head() decides.
_CLOSE, _READY, _EXPIRED = 0, 1, 2


def cooperative_sendfile(sock: Any, file: Any, offset: int, count: int) -> int:
    """os.sendfile() on a gevent socket, waiting for room in the hub: zero-copy.

    gevent's own socket.sendfile reads the file into Python and sends it in 8 KB blocks (10 MB
    file row: 5,500 µs of CPU per request, p99 520 ms); the kernel copies it here. The socket
    is non-blocking underneath, so sendfile sends what fits and says EAGAIN; the wait has the
    socket's timeout. Like socket.sendfile, it leaves the file positioned after what was sent.
    """
    out_fd = sock.fileno()
    in_fd = file.fileno()
    timeout = sock.gettimeout()
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(out_fd, in_fd, offset + sent, count - sent)
        except BlockingIOError:
            gevent.socket.wait_write(out_fd, timeout=timeout)  # socket.timeout when over
            continue
        if n == 0:
            break  # the file is shorter than it was
        sent += n
    file.seek(offset + sent)
    return sent


def greenlet_frame(owner: Any) -> FrameType | None:
    """Where a suspended greenlet is (the watch runs in the main greenlet, so every greenlet
    running a request is suspended when it looks)."""
    frame: FrameType | None = getattr(owner, "gr_frame", None)
    return frame


class _DrainWakeup(Exception):
    """Thrown into a greenlet waiting between requests when the drain begins."""


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
        self._pool = ConnectionGreenlets(cfg.worker_connections, self._handle)
        self._open = 0  # connections being served (for the load board)
        self._loop = gevent.get_hub().loop
        self._drain_started = 0.0
        self._fair = FairAccept(self.board, GEVENT_FLOOR)
        # Sockets whose greenlet waits for a request (between requests, or a new client):
        # the drain wakes them so that they close (or wait out the grace).
        self._idle: set[Any] = set()

    def make_tracker(self) -> RequestTracker:
        return RequestTracker(owner=gevent.getcurrent, frame_of=greenlet_frame)

    def stop_request(self, running: Running) -> None:
        """A greenlet ran a request past `timeout`: end it (RequestTimedOut is thrown where
        it waits; `_handle` answers its client). A greenlet that never yields also stops
        our heartbeat, and the master aborts the worker."""
        gevent.kill(running.owner, RequestTimedOut)  # (never blocks)

    def make_context(self) -> ServerContext:
        ctx = super().make_context()
        ctx.sendfile = cooperative_sendfile
        return ctx

    # -- life cycle ------------------------------------------------------------------------
    def run(self) -> None:
        assert self.ctx is not None
        self.head_limit = head_limit(self.ctx, self.cfg)
        self.limits = self.ctx.limits
        for listener in self.listeners:
            if not isinstance(listener.sock, gevent.socket.socket):  # pragma: no cover
                listener.sock = gevent.socket.socket(fileno=listener.sock.detach())
        self.board.join(self.pid)
        acceptors = [gevent.spawn(self._accept_loop, listener) for listener in self.listeners]
        # While the hub sleeps in the event loop, Python runs signal handlers late (gevent
        # polls for them every few hundred ms). A byte on the wake pipe wakes us at once.
        signal.set_wakeup_fd(self._wake_w)

        while self.alive:
            if not self.look_after_ourselves():
                self.stop_accepting()
                break
            ready, _, _ = gselect.select([self._wake_r], [], [], self.poll_interval)
            self.housekeeping_now()
            if ready:
                self.drain_wakeups()

        drain = self._begin_drain(acceptors)
        pool = self._pool
        while True:
            drain.take_queued(lambda: pool.free_count() > 0, self._accept_one)
            if drain.over(self._open):
                break
            self.look_after_ourselves()
            timeout = min(self.poll_interval, drain.left())
            if not drain.listening:
                pool.join(timeout=timeout)
            elif self.accept_policy.paused():
                gevent.sleep(min(timeout, FD_BACKOFF))
            else:
                pool.wait_available(timeout=timeout)  # at worker_connections: wait for room
        if self._open:
            log.warning("Graceful timeout: %d connections still open at exit", self._open)

    def _begin_drain(self, acceptors: list[gevent.Greenlet]) -> Drain:
        """Stop accepting new work (workers/drain.py takes what is queued); wake idle
        connections so they close (or get Connection: close)."""
        assert self.ctx is not None
        self.stop_accepting()  # (first: greenlets woken below must see the drain)
        self._drain_started = time.monotonic()
        self.board.leave()  # no one must leave connections to us now
        # Greenlets waiting for a request get _DrainWakeup and look at their deadline again
        # (cancel_wait checks, when it runs, that the greenlet still waits on that socket).
        hub = gevent.get_hub()
        for sock in list(self._idle):
            hub.cancel_wait(sock._read_event, _DrainWakeup())
        # An acceptor is suspended before its accept() call (in wait_available() or waiting
        # for the listener to be readable), so killing it loses no connection.
        gevent.killall(acceptors)
        self._pool.stop_idle()
        drain = self.begin_drain(close=self._close_listener)
        log.info("Worker draining: %d connections open", self._open)
        return drain

    def _accept_one(self, listener: Listener) -> bool:
        """Accept one connection and give it a greenlet; False if none was taken."""
        got = self.accept_policy.accept(listener.sock.accept, listener.spec)
        if got is None:
            return False
        client, addr = got
        self._serve(client, addr, listener.address)
        return True

    @staticmethod
    def _close_listener(listener: Listener) -> None:
        """Our copy only; never unlink a unix socket here. Closed *now*, right after the
        accept() that found the queue empty: gevent defers both socket.close() and its
        patched os.close() to a later turn of the hub, in which clients told `Connection:
        close` could reconnect to the doomed socket and then be reset."""
        try:
            _os_close(listener.sock.detach())
        except OSError:
            pass

    # -- greenlets -------------------------------------------------------------------------
    def _accept_loop(self, listener: Listener) -> None:
        sock = listener.sock
        readable = gevent.get_hub().loop.io(sock.fileno(), 1)  # one watcher for the loop
        sock.settimeout(0.0)  # accept() never waits: we wait on `readable`
        try:
            self._accept_from(listener, readable)
        finally:
            readable.close()

    def _accept_from(self, listener: Listener, readable: Any) -> None:
        pool = self._pool
        board = self.board
        hub = gevent.get_hub()
        policy = self.accept_policy
        while self.alive:
            if pool.full():
                board.publish(FULL)
                pool.wait_available()  # at worker_connections, accepting pauses
                board.publish(self._open)
            if not self.alive:
                return
            # Fair accept (docs/workers.md): while another worker holds fewer connections
            # (the load board), leave the next one to it for a moment, then take it if it is
            # still there.
            if self._fair.defer(self._open):
                gevent.sleep(ACCEPT_BACKOFF)
                continue
            if not self._accept_one(listener):
                if not self.alive:
                    return
                if policy.paused():  # out of descriptors: the listener stays readable
                    gevent.sleep(max(0.0, policy.paused_until - time.monotonic()))
                else:
                    hub.wait(readable)
                continue
            # (Even if the drain began meanwhile: the connection is ours now, answered.)
            # One connection per turn of the hub: accept() does not wait while the backlog
            # holds more, and a worker taking a whole burst of connections leaves the others
            # idle (sleep row: 82:18 before, 61:39 after; Django hello 100:0 -> 55:45).
            gevent.sleep(0)

    def _serve(self, client: Any, addr: Any, server_addr: Any) -> None:
        """A greenlet for a new connection, counted on the load board until it ends."""
        self._open += 1
        self.board.publish(self._open)
        self._pool.spawn(client, addr, server_addr)

    def _handle(self, client: Any, addr: Any, server_addr: Any) -> None:
        assert self.ctx is not None
        since = time.monotonic()
        if self.ctx.tls is not None:
            # In this greenlet, within header_timeout: waiting for a ClientHello yields to
            # the hub like waiting for a head (the ssl module is gevent's, patched at boot).
            client = secure(self.ctx.tls, client, self.head_limit)
            if client is None:
                self._open -= 1
                self.board.publish(self._open)
                return
        conn = HTTPConnection(client, addr, server_addr, self.ctx)
        io_timeout = self.io_timeout
        try:
            new = True  # a new client has head_limit to send its whole first head
            while True:
                if not conn.has_pending_data():
                    ready = self._wait_for_head(conn, client, since, new)
                    if ready == _CLOSE:
                        return
                    if ready == _EXPIRED:
                        # header_timeout ran out on a partial head: the core looks at what
                        # came, its next recv times out at once, and it answers 408.
                        client.settimeout(HANDOVER_TIMEOUT)
                        conn.handle_request()
                        return
                client.settimeout(io_timeout)
                keep = conn.handle_request()
                self.request_done()
                if not keep:
                    return
                since = time.monotonic()
                new = False
        except RequestTimedOut:
            answer_stopped(conn, 503)
        except Exception:  # the HTTP core handles app errors; this is a bug guard
            log.exception("Error handling request")
        finally:
            conn.close()
            # (Counted here, not with len(pool): the pool forgets a greenlet a turn later.)
            self._open -= 1
            self.board.publish(self._open)

    def _wait_for_head(self, conn: HTTPConnection, sock: Any, since: float, new: bool) -> int:
        """Read until a whole request head is in the connection's buffer.

        _READY: hand the connection to the HTTP core (a head, or bytes it refuses at once);
        _EXPIRED: a partial head outlived `header_timeout` (the core answers 408); _CLOSE: the
        client closed, stayed silent too long, or the drain ends the wait.

        Waiting here rather than inside the HTTP core lets a drain close a connection that is
        idle between requests. The bytes read are the core's (`HTTPConnection.feed`), so it
        parses them without a recv of its own: one recv per request, where a peek to wait, a
        peek to look and the core's recv made three (and a peek after each response, to see
        whether a fast client's next request was there already, a fourth). gevent waits with
        the socket's own watcher: nothing is created per request.
        """
        idle = self._idle
        limits = self.limits
        wait = self.head_limit if new else self.keepalive_timeout
        head_deadline = since + self.head_limit  # a new client's head counts from the accept
        partial = False
        loop = self._loop
        while True:
            now = time.monotonic()
            if partial:
                deadline = head_deadline
                if self._drain_started:
                    deadline = min(deadline, self._drain_started + DRAIN_GRACE)
            else:
                deadline = since + wait
                if self._drain_started:
                    deadline = min(deadline, since + DRAIN_GRACE)
            if deadline <= now:
                return _EXPIRED if partial else _CLOSE
            sock.settimeout(deadline - now)
            idle.add(sock)
            turn = loop.iteration
            try:
                data = sock.recv(RECV_SIZE)
            except _DrainWakeup:
                continue  # look at the deadline again, with the drain grace
            except TimeoutError:
                return _EXPIRED if partial else _CLOSE
            except OSError:  # a reset
                return _CLOSE
            finally:
                idle.discard(sock)
            if loop.iteration == turn and not new and not partial:
                # The next request was here already (the hub never ran: a fast client): let
                # the other greenlets run first. A greenlet that never waits would serve its
                # client over and over while the rest queue up (django-hello p99 716 ms
                # without, 67-112 ms with). Only then: a yield after every request cost the
                # 50 ms sleep row its p99 (120 -> 192 ms). Told by the hub's loop counter,
                # not by a non-blocking look first: wsgi-hello 25 -> 23 µs per request.
                gevent.sleep(0)
            if not data:
                return _CLOSE  # the client closed (a partial head gets no answer)
            buffered = conn.feed(data)
            if head_ready(buffered, limits, conn):
                return _READY
            if not partial:
                partial = True
                if not new:
                    head_deadline = time.monotonic() + self.head_limit
