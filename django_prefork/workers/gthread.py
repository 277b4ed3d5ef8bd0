"""The gthread worker: a poller in the main thread, a pool of threads that run requests.

The main thread accepts connections and holds every connection that is not running a
request (new, kept alive between requests, or still sending its request head) in a
`selectors` poller. A connection goes to a pool thread only once a complete request head is
in the kernel's buffer (checked with MSG_PEEK), so neither an idle keep-alive connection nor
a slow client dribbling its head (slowloris) ever pins a thread. The thread serves the request
and any pipelined ones already buffered, then hands the connection back to the poller.

The main thread also beats the heartbeat, so long requests do not get the worker killed,
while a stuck main loop still does.
"""

from __future__ import annotations

import errno
import heapq
import queue
import selectors
import signal
import socket
import threading
import time
from typing import Any

from django_prefork.http.connection import HTTPConnection, ServerContext
from django_prefork.server.sockets import Listener
from django_prefork.workers.base import Worker, log

# accept() errors that concern one connection only (the client went away first).
TRANSIENT_ACCEPT_ERRORS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}
#: Bytes looked at (MSG_PEEK) to decide whether a request head is complete. A head that does
#: not fit is handed to the HTTP core, which enforces the real limits.
PEEK_SIZE = 64 * 1024
#: On a drain, a connection between two requests gets this long (from its last response) to
#: send the next one, which is answered with `Connection: close`. A client that sends its
#: next request right after a response (most do) then never races the close; connections
#: idle for longer are closed at once.
DRAIN_GRACE = 1.0
#: Socket timeout when the `timeout` setting is 0 (a silent client must not pin a thread).
DEFAULT_IO_TIMEOUT = 30.0
# How often a partial head is looked at again: first soon (a head split across TCP segments
# completes within milliseconds), then less and less often (a slowloris costs little).
FIRST_RECHECK = 0.005
MAX_RECHECK = 0.2
# The master's signals: only the main thread may receive them (it runs the handlers).
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGABRT,
            signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH,
            signal.SIGCHLD}


def io_timeout(cfg: Any) -> float:
    """Per-socket timeout while a request is read or written: the `timeout` setting."""
    return float(cfg.timeout) if cfg.timeout else DEFAULT_IO_TIMEOUT


def head_ready(data: bytes, line_limit: int) -> bool:
    """Whether the HTTP core can take the connection without blocking on a partial head.

    True for a complete head, and for data that is already too long to be one (the core
    answers 414/431 at once).
    """
    if b"\r\n\r\n" in data or len(data) >= PEEK_SIZE:
        return True
    return bool(line_limit) and b"\r\n" not in data and len(data) > line_limit + 1


class RequestScopedDraining(ServerContext):
    """A ServerContext whose `draining` stays fixed while one request is served.

    The HTTP core reads `draining` when it writes the response head (send `Connection:
    close`?) and again once the response is out (keep the connection?). With requests running
    concurrently, a drain can begin between the two reads: the response promised keep-alive
    but the connection is closed, and the client's next request meets a reset. So each
    request sees `draining` as it was when the request began; the next request on the same
    connection sees the drain and gets `Connection: close`.
    """

    _draining_now: bool
    _seen: Any

    @property  # type: ignore[override]
    def draining(self) -> bool:
        seen = getattr(self._seen, "value", None)
        return self._draining_now if seen is None else seen

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining_now = bool(value)

    def begin_request(self) -> None:
        self._seen.value = self._draining_now

    def end_request(self) -> None:
        self._seen.value = None

    @classmethod
    def adopt(cls, ctx: ServerContext) -> RequestScopedDraining:
        """Turn the context base.Worker built into one of these (keeps base the only maker)."""
        draining = ctx.__dict__.pop("draining", False)
        ctx.__class__ = cls
        assert isinstance(ctx, cls)
        ctx._seen = threading.local()  # per greenlet under gevent (threading is patched)
        ctx._draining_now = bool(draining)
        return ctx


class _Conn:
    """A client connection and where it stands: waiting in the poller, partial, or busy."""

    __slots__ = ("busy", "conn", "deadline", "partial_since", "recheck", "registered", "since",
                 "sock", "token")

    def __init__(self, conn: HTTPConnection, sock: socket.socket, now: float) -> None:
        self.conn = conn
        self.sock = sock
        self.since = now  # accepted, or last response sent
        self.deadline = now
        self.registered = False
        self.busy = False
        self.partial_since = 0.0  # when a partial head was first seen (0: none)
        self.recheck = FIRST_RECHECK
        self.token = 0  # the timer entry that is current for this connection


class ThreadWorker(Worker):
    """`--worker-class gthread`: `threads` requests at once, `worker_connections` clients."""

    multithread = True
    keepalive = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        cfg = self.cfg
        # Truthful PEP 3333 flag: one thread never runs two requests at once.
        self.multithread = cfg.threads > 1
        self.keepalive = cfg.keepalive > 0
        self.io_timeout = io_timeout(cfg)
        self.keepalive_timeout = float(cfg.keepalive)
        self.max_connections = max(1, cfg.worker_connections)
        self.line_limit = getattr(cfg, "limit_request_line", 4094)
        self._sel = selectors.DefaultSelector()
        self._conns: set[_Conn] = set()
        self._busy = 0
        self._done: queue.SimpleQueue[tuple[_Conn, bool]] = queue.SimpleQueue()
        self._tasks: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, str, _Conn]] = []
        self._seq = 0
        self._accepting = False
        self._drain_started = 0.0
        self._count_lock = threading.Lock()
        self._addresses: dict[int, Any] = {}
        # Beat at least twice per timeout so a healthy worker is never killed.
        self.poll_interval = min(1.0, cfg.timeout / 2) if cfg.timeout else 1.0

    # -- life cycle ------------------------------------------------------------------------
    def run(self) -> None:
        for _ in range(max(1, self.cfg.threads)):
            threading.Thread(target=self._thread_main, name="prefork-request", daemon=True).start()
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self._addresses[listener.fileno()] = listener.address
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

        while self.alive:
            self.heartbeat.beat()
            self.handle_pending_work()
            if not self.parent_alive():
                self.stop_accepting()
                break
            self._update_accepting()
            self._poll()

        self._begin_drain()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self._conns and time.monotonic() < deadline:
            self.heartbeat.beat()
            self.handle_pending_work()
            self._poll(deadline)
        self._finish()

    def make_context(self) -> ServerContext:
        return RequestScopedDraining.adopt(super().make_context())

    def request_done(self) -> None:
        with self._count_lock:  # called from the pool threads
            super().request_done()

    # -- the main thread's loop ------------------------------------------------------------
    def _poll(self, deadline: float | None = None) -> None:
        now = time.monotonic()
        timeout = self.poll_interval
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - now))
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - now))
        try:
            events = self._sel.select(timeout)
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            events = []
        for key, _ in events:
            data = key.data
            if data is None:
                self.drain_wakeups()
            elif isinstance(data, Listener):
                self._accept(data)
            elif data.registered:
                self._look(data)
        self._collect_done()
        self._run_timers(time.monotonic())

    def _accept(self, listener: Listener) -> None:
        """Accept what the backlog holds, up to worker_connections."""
        sock = listener.sock
        address = self._addresses.get(listener.fileno()) or listener.address
        while len(self._conns) < self.max_connections:
            try:
                client, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in TRANSIENT_ACCEPT_ERRORS:
                    continue
                if exc.errno == errno.EBADF:
                    return
                raise
            client.setblocking(False)  # the poller never blocks on it; a thread sets a timeout
            state = _Conn(HTTPConnection(client, addr, address, self.ctx), client,
                          time.monotonic())
            self._conns.add(state)
            self._wait(state, self.io_timeout)

    def _update_accepting(self) -> None:
        """Watch the listeners only while there is room for another connection."""
        want = self.alive and len(self._conns) < self.max_connections
        if want == self._accepting:
            return
        self._accepting = want
        for listener in self.listeners:
            if want:
                self._sel.register(listener.sock, selectors.EVENT_READ, listener)
            else:
                try:
                    self._sel.unregister(listener.sock)
                except (KeyError, ValueError):
                    pass

    def _wait(self, state: _Conn, limit: float) -> None:
        """Hold the connection in the poller until data arrives or `limit` seconds pass."""
        if self._drain_started:
            limit = min(limit, DRAIN_GRACE)
        state.registered = True
        state.partial_since = 0.0
        state.deadline = state.since + limit
        self._sel.register(state.sock, selectors.EVENT_READ, state)
        self._schedule(state, state.deadline, "expire")

    def _unregister(self, state: _Conn) -> None:
        if state.registered:
            state.registered = False
            try:
                self._sel.unregister(state.sock)
            except (KeyError, ValueError):
                pass

    def _look(self, state: _Conn) -> None:
        """Data arrived (or arrives slowly): hand over a complete head, close at EOF."""
        try:
            data = state.sock.recv(PEEK_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(state)
            return
        if not data:
            self._close(state)  # the client closed between requests
            return
        if head_ready(data, self.line_limit):
            self._dispatch(state)
            return
        # A partial head: stop watching (the poller would report it readable every time) and
        # look again later, until the head is complete or takes too long.
        now = time.monotonic()
        self._unregister(state)
        if not state.partial_since:
            state.partial_since = now
            state.recheck = FIRST_RECHECK
        else:
            state.recheck = min(MAX_RECHECK, state.recheck * 2)
        self._schedule(state, now + state.recheck, "recheck")

    def _dispatch(self, state: _Conn) -> None:
        self._unregister(state)
        state.token = 0
        state.partial_since = 0.0
        state.busy = True
        self._busy += 1
        self._tasks.put(state)

    def _collect_done(self) -> None:
        """Connections the threads hand back: keep alive in the poller, or forget."""
        while True:
            try:
                state, keep = self._done.get_nowait()
            except queue.Empty:
                return
            self._busy -= 1
            state.busy = False
            if keep and self.keepalive:
                self._wait(state, self.keepalive_timeout)
            else:
                self._conns.discard(state)  # the thread closed it

    def _schedule(self, state: _Conn, when: float, kind: str) -> None:
        self._seq += 1
        state.token = self._seq
        heapq.heappush(self._timers, (when, self._seq, kind, state))

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, seq, kind, state = heapq.heappop(timers)
            if state.token != seq:
                continue  # superseded: the connection moved on since
            if kind == "expire":
                self._close(state)  # idle keep-alive timeout, or a new client that is silent
                continue
            # A partial head: give up after the io timeout (or the drain grace).
            limit = self.io_timeout
            if self._drain_started:
                limit = min(limit, max(0.0, self._drain_started + DRAIN_GRACE
                                       - state.partial_since))
            if now - state.partial_since > limit:
                self._close(state)
            else:
                self._look(state)

    def _close(self, state: _Conn) -> None:
        self._unregister(state)
        state.token = 0
        self._conns.discard(state)
        state.conn.close()

    # -- drain -----------------------------------------------------------------------------
    def _begin_drain(self) -> None:
        """Stop accepting; close idle connections; let the rest finish with Connection: close."""
        self.ctx.draining = True  # type: ignore[union-attr]
        now = self._drain_started = time.monotonic()
        self.alive = False
        self._update_accepting()
        for listener in self.listeners:
            # Connections already queued for us would be reset when the last copy of the
            # listening socket closes (a full stop): take them and answer them.
            self._accept(listener)
            try:
                listener.sock.close()  # our copy only; never unlink a unix socket here
            except OSError:
                pass
        for state in list(self._conns):
            if state.registered:
                if now - state.since >= DRAIN_GRACE:
                    self._close(state)
                else:
                    state.deadline = min(state.deadline, state.since + DRAIN_GRACE)
                    self._schedule(state, state.deadline, "expire")
        log.info("Worker draining: %d requests in flight, %d connections open",
                 self._busy, len(self._conns))

    def _finish(self) -> None:
        for state in list(self._conns):
            if not state.busy:
                self._close(state)
        if self._busy:
            log.warning("Graceful timeout: %d requests still running at exit", self._busy)
        for _ in range(max(1, self.cfg.threads)):
            self._tasks.put(None)
        self._sel.close()

    # -- pool threads ----------------------------------------------------------------------
    def _thread_main(self) -> None:
        # Signals go to the main thread, whose select() they must interrupt.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        while True:
            state = self._tasks.get()
            if state is None:
                return
            keep = self._serve(state)
            self._done.put((state, keep))
            self.wake()

    def _serve(self, state: _Conn) -> bool:
        """Serve one request, and the pipelined ones already buffered; True to keep alive."""
        conn = state.conn
        keep = False
        try:
            state.sock.settimeout(self.io_timeout)
            ctx = self.ctx
            while True:
                ctx.begin_request()  # type: ignore[union-attr]
                try:
                    keep = conn.handle_request()
                finally:
                    ctx.end_request()  # type: ignore[union-attr]
                self.request_done()
                if not keep or not conn.has_pending_data():
                    break
            if keep:
                state.sock.setblocking(False)
        except Exception:  # the HTTP core handles app errors; this is a bug guard
            log.exception("Error handling request")
            keep = False
        state.since = time.monotonic()
        if not keep:
            conn.close()
        return keep
