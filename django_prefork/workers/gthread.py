"""The gthread worker: a poller in the main thread, a pool of threads that run requests.

The main thread accepts connections and watches every connection that is not running a
request (new, kept alive between requests, or still sending its request head) with an epoll
instance. A connection goes to a pool thread only once a complete request head is in the
kernel's buffer (checked with MSG_PEEK), so neither an idle keep-alive connection nor a slow
client dribbling its head (slowloris) ever pins a thread. The thread serves the request and any
pipelined ones already buffered, then puts the connection back in the poller itself: the main
thread is not woken between two requests of a connection.

Connections are registered with EPOLLONESHOT: an event disarms the connection, so while a
thread serves it the poller never reports it, and re-arming it is one epoll_ctl call.

The main thread also beats the heartbeat, so long requests do not get the worker killed,
while a stuck main loop still does.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import queue
import select
import signal
import socket
import ssl
import threading
import time
from typing import Any

from django_prefork.http.connection import RECV_SIZE, HTTPConnection
from django_prefork.http.tls import DONE, WANT_READ, handshake_step
from django_prefork.server.sockets import Listener
from django_prefork.workers.base import (
    KERNEL_TIMEOUTS_INHERITED,
    WORKER_SIGNALS,
    Worker,
    answer_stopped,
    log,
    set_kernel_timeouts,
)
from django_prefork.workers.drain import DRAIN_GRACE, Drain
from django_prefork.workers.heads import (
    HANDOVER_TIMEOUT,
    PEEK_SIZE,
    head_limit,
    head_ready,
    io_timeout,
)
from django_prefork.workers.inflight import Running
from django_prefork.workers.loadboard import (
    ACCEPT_BACKOFF,
    FULL,
    GTHREAD_FLOOR_PER_THREAD,
    FairAccept,
)

# How often a partial head is looked at again: first soon (a head split across TCP segments
# completes within milliseconds), then less and less often (a slowloris costs little).
FIRST_RECHECK = 0.005
MAX_RECHECK = 0.2
#: How often the main thread looks for idle connections whose wait is over (keep-alive
#: timeout, a new client that stays silent, the drain grace).
SCAN_INTERVAL = 0.25
# The master's signals: only the main thread may receive them (it runs the handlers).
_SIGNALS = WORKER_SIGNALS | {signal.SIGCHLD}

# Waiting for a request: level-triggered, disarmed by the first event (EPOLLONESHOT).
_ARM = select.EPOLLIN | select.EPOLLONESHOT
# A partial head: data is there (level-triggered EPOLLIN would fire on every turn), so only
# wait for the client to close its side; new bytes are looked for by timers.
_ARM_HANGUP = select.EPOLLRDHUP | select.EPOLLONESHOT
_HANGUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
# The main thread's look at a parked connection: never blocks (the socket itself blocks).
_PEEK_NOW = socket.MSG_PEEK | socket.MSG_DONTWAIT
# A TLS handshake waiting to send (its socket buffer was full).
_ARM_WRITE = select.EPOLLOUT | select.EPOLLONESHOT
# Listening sockets: plain level-triggered EPOLLIN, every idle worker is woken and the first
# to call accept() wins. EPOLLEXCLUSIVE (wake one waiter) was measured and dropped: the main
# thread of every worker is always in epoll_wait, so the kernel picked the same worker for
# every connection (Django hello 100:0 across 2 workers, 0.58x gunicorn).
_LISTEN = select.EPOLLIN


class _Conn:
    """A client connection and where it stands: parked in the poller, partial, or busy."""

    __slots__ = ("busy", "conn", "deadline", "expired", "fd", "handshaking", "head_deadline",
                 "new", "partial_since", "recheck", "since", "sock", "tls", "token")

    def __init__(self, conn: HTTPConnection, sock: socket.socket, now: float) -> None:
        self.conn = conn
        self.sock = sock
        self.fd = sock.fileno()
        self.since = now  # accepted, or last response sent
        self.deadline = now  # when the wait for a request ends (parked connections)
        self.head_deadline = 0.0  # when a partial head must be complete
        self.new = True  # no request yet: the head deadline counts from the accept
        self.busy = False  # a pool thread owns it
        self.expired = False  # handed to the core because header_timeout ran out
        self.partial_since = 0.0  # when a partial head was first seen (0: none)
        self.recheck = FIRST_RECHECK
        self.token = 0  # the timer entry that is current for this connection
        #: TLS: the poller reads (decrypts) what arrives into the connection's buffer, since a
        #: peek sees only ciphertext; `handshaking` until the handshake is done.
        self.tls = conn.tls
        self.handshaking = self.tls


class ThreadWorker(Worker):
    """`--worker-class gthread`: `threads` requests at once, `worker_connections` clients."""

    multithread = True
    keepalive = True
    blocking_sockets = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        cfg = self.cfg
        # Truthful PEP 3333 flag: one thread never runs two requests at once.
        self.multithread = cfg.threads > 1
        self.keepalive = cfg.keepalive > 0
        self.io_timeout = io_timeout(cfg)
        self.keepalive_timeout = float(cfg.keepalive)
        self.max_connections: int = max(1, cfg.worker_connections)
        self.threads: int = max(1, cfg.threads)
        # Holding this many connections, a response ends its connection (`Connection:
        # close`) instead of keeping it alive, as gunicorn's gthread does from
        # `worker_connections - threads` on: clients that send a request every second never
        # let their connection idle out, and new clients waited in the backlog for ever
        # (issue 15.2: 1,000 of 3,000 keep-alive clients never answered). Told in the
        # response, not by closing an idle connection, so no client's next request meets a
        # close. With as many threads as connections (or more) every connection may hold a
        # thread: no shedding (0).
        self.shed_at = max(0, self.max_connections - self.threads)
        self._epoll = select.epoll()
        self._conns: set[_Conn] = set()
        self._fds: dict[int, _Conn] = {}
        self._tasks: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        # Partial heads waiting to be looked at again (main thread only).
        self._timers: list[tuple[float, int, _Conn]] = []
        self._seq = itertools.count(1)
        self._listeners: dict[int, Listener] = {}
        self._accepting = False
        self._accept_paused_until = 0.0  # fair accept: let a less loaded worker take it
        self._fair = FairAccept(self.board, GTHREAD_FLOOR_PER_THREAD * self.threads)
        self._drain_started = 0.0
        self._count_lock = threading.Lock()
        # Taken by a thread parking a connection and by the main thread closing a parked one:
        # the main thread never closes a connection that a thread is about to re-arm.
        self._park_lock = threading.Lock()
        self._next_scan = 0.0

    # -- life cycle ------------------------------------------------------------------------
    def run(self) -> None:
        assert self.ctx is not None
        self.head_limit = head_limit(self.ctx, self.cfg)
        self.limits = self.ctx.limits
        for _ in range(max(1, self.cfg.threads)):
            threading.Thread(target=self._thread_main, name="prefork-request", daemon=True).start()
        for listener in self.listeners:
            listener.sock.setblocking(False)
            if KERNEL_TIMEOUTS_INHERITED:
                set_kernel_timeouts(listener.sock, self.io_timeout)
            self._listeners[listener.fileno()] = listener
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self.board.join(self.pid)

        while self.alive:
            if not self.look_after_ourselves():
                self.stop_accepting()
                break
            self._update_accepting()
            if self._poll():
                self.housekeeping_now()  # woken by a signal or a thread

        drain = self._begin_drain()
        while True:
            drain.take_queued(self._has_room, self._accept_one)
            if drain.over(len(self._conns)):
                break
            self.look_after_ourselves()
            self._poll(drain.deadline)
        self._finish()

    def request_done(self) -> None:
        with self._count_lock:  # called from the pool threads
            super().request_done()

    def stop_request(self, running: Running) -> None:
        """A thread ran a request past `timeout`: a thread cannot be stopped from outside,
        so answer its client (503 if nothing went out, else close) and replace this worker
        gracefully. The other threads' requests finish; the drain does not wait for the
        stuck one, which ends with the process."""
        answer_stopped(running.conn, 503)
        with self._park_lock:
            for state in list(self._conns):
                if state.conn is running.conn:
                    # (its fd stays open until the thread lets go: no new connection can
                    # take the number meanwhile)
                    self._conns.discard(state)
                    self._fds.pop(state.fd, None)
        self._publish_load()
        if self.alive:
            log.warning("Replacing this worker (pid:%s): a thread is stuck in a request; the "
                        "other requests finish first", self.pid)
            self.leave_queue = True  # the master and the other workers serve on
            self.stop_accepting()

    # -- the main thread's loop ------------------------------------------------------------
    def _poll(self, deadline: float | None = None) -> bool:
        """One turn of the poller; True if the wake pipe was readable."""
        now = time.monotonic()
        timeout = self.poll_interval
        if self._timers:
            timeout = min(timeout, self._timers[0][0] - now)
        if self._accept_paused_until:
            timeout = min(timeout, self._accept_paused_until - now)
        if self.accept_policy.paused_until:
            timeout = min(timeout, self.accept_policy.paused_until - now)
        if self._conns:
            timeout = min(timeout, self._next_scan - now)
        if deadline is not None:
            timeout = min(timeout, deadline - now)
        try:
            events = self._epoll.poll(max(0.0, timeout))
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            events = []
        woken = False
        ready: list[Listener] = []
        fds = self._fds
        for fd, ev in events:
            state = fds.get(fd)
            if state is not None:
                if not state.busy:
                    self._look(state, ev)
            elif fd == self._wake_r:
                self.drain_wakeups()
                woken = True
            elif fd in self._listeners:
                ready.append(self._listeners[fd])
        # After the connection events: a new connection may reuse the fd of one closed
        # above, and must not receive that one's event from this batch.
        # Fair accept (docs/workers.md): one connection per event, and while another worker
        # holds fewer connections (the load board) leave it to that one for a moment. A
        # worker that takes a whole burst of connections serves them on one core while the
        # others idle (Django hello, 2 workers, 50 keep-alive clients: 98:2 and 0.51x
        # gunicorn). The board rather than "defer while loaded": equally loaded workers then
        # all deferred, and Connection: close on every request ran at 0.41x gunicorn.
        if ready and self._accepting:
            if self._fair.defer(len(self._conns)):
                self._pause_accepting()
            else:
                for listener in ready:
                    if self._has_room():
                        self._accept_one(listener)
        now = time.monotonic()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
        if self._timers:
            self._run_timers(now)
        if now >= self._next_scan:
            self._next_scan = now + SCAN_INTERVAL
            self._scan(now)
        return woken

    def _has_room(self) -> bool:
        return len(self._conns) < self.max_connections

    def _accept_one(self, listener: Listener) -> bool:
        """Accept one connection (one per readiness event: a worker that takes a whole burst
        of connections leaves the other workers idle; measured in docs/workers.md, "Fair
        accept"); False if none was taken."""
        got = self.accept_policy.accept(listener.sock.accept, listener.spec)
        if got is None:
            if self.accept_policy.paused_until:
                self._update_accepting()  # out of descriptors: stop watching the listeners
            return False
        client, addr = got
        self._add(client, addr, listener.address)
        return True

    def _add(self, client: socket.socket, addr: Any, address: Any) -> None:
        """Watch a new connection (and look at it at once)."""
        # Blocking, with the io timeout kept by the kernel: a thread serves it with no
        # settimeout() and no poll() per recv/send, and sends a file with one blocking
        # sendfile(); the main thread only peeks with MSG_DONTWAIT. (Non-blocking with a
        # settimeout() per request before: four more syscalls per request.)
        if not KERNEL_TIMEOUTS_INHERITED:
            client.setblocking(True)
            set_kernel_timeouts(client, self.io_timeout)
        assert self.ctx is not None
        if self.ctx.tls is not None:
            try:
                client = self.ctx.tls.wrap(client)  # the handshake: _look_tls, in the poller
            except (OSError, ValueError):
                client.close()
                return
        now = time.monotonic()
        state = _Conn(HTTPConnection(client, addr, address, self.ctx), client, now)
        limit_s = self.head_limit
        if self._drain_started:
            limit_s = min(limit_s, DRAIN_GRACE)
        state.deadline = state.head_deadline = now + limit_s
        self._conns.add(state)
        self._fds[state.fd] = state
        self._epoll.register(state.fd, _ARM)
        self._publish_load()
        # Clients send their request right after connecting: it is usually here already.
        # Looking now saves a turn of the poller per new connection (the armed event, if
        # it still fires, finds the connection busy and is ignored; the serving thread
        # re-arms). On its own it moved no req/s figure beyond noise (wsgi-hello-close,
        # one worker: 3,190 -> 3,068 req/s, at the time the accept backoff was the limit).
        self._look(state)

    def _publish_load(self) -> None:
        """Our connections on the load board (FULL at worker_connections: not accepting)."""
        n = len(self._conns)
        self.board.publish(n if n < self.max_connections else FULL)

    def _pause_accepting(self) -> None:
        self._accept_paused_until = time.monotonic() + ACCEPT_BACKOFF
        self._update_accepting()

    def _update_accepting(self) -> None:
        """Watch the listeners only while there is room for another connection."""
        want = (self.alive and len(self._conns) < self.max_connections
                and not self._accept_paused_until and not self.accept_policy.paused())
        if want == self._accepting:
            return
        self._accepting = want
        for fd in self._listeners:
            try:
                if want:
                    self._epoll.register(fd, _LISTEN)
                else:
                    self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def _look(self, state: _Conn, ev: int = 0) -> None:
        """Data arrived (or arrives slowly): hand over a complete head, close at EOF."""
        if state.tls:
            self._look_tls(state)
            return
        try:
            data = state.sock.recv(PEEK_SIZE, _PEEK_NOW)
        except (BlockingIOError, InterruptedError):
            if ev & _HANGUP:
                self._close(state)
            elif not state.partial_since:
                self._epoll.modify(state.fd, _ARM)  # a spurious wakeup: wait again
            return
        except OSError:
            self._close(state)
            return
        if not data:
            self._close(state)  # the client closed between requests
            return
        if head_ready(data, self.limits, state.conn) or ev & _HANGUP:
            # (a partial head from a client that closed its side: the core reads it, meets
            # the EOF and closes without an answer)
            self._dispatch(state)
            return
        # A partial head: the poller would report it readable on every turn, so only watch
        # for a hang-up and look again later, until the head is complete or takes too long.
        now = time.monotonic()
        if not state.partial_since:
            state.partial_since = now
            state.recheck = FIRST_RECHECK
            if not state.new:  # a new client's deadline counts from the accept
                limit = self.head_limit
                if self._drain_started:
                    limit = min(limit, DRAIN_GRACE)
                state.head_deadline = now + limit
            self._epoll.modify(state.fd, _ARM_HANGUP)
        else:
            state.recheck = min(MAX_RECHECK, state.recheck * 2)
        if now >= state.head_deadline:
            state.expired = True  # the core answers 408
            self._dispatch(state)
            return
        when = min(now + state.recheck, state.head_deadline)
        state.token = token = next(self._seq)
        heapq.heappush(self._timers, (when, token, state))

    def _look_tls(self, state: _Conn) -> None:
        """A TLS connection: drive its handshake, then read what arrived into the
        connection's buffer until a head is complete, all without blocking. The handshake
        has the head's deadline (`_scan` closes a client that never sends its ClientHello);
        a partial head is looked at again at its deadline, and then answered 408."""
        sock = state.sock
        conn = state.conn
        try:
            sock.setblocking(False)  # the poller never waits; a thread serves it blocking
            if state.handshaking:
                want = handshake_step(sock)
                if want != DONE:
                    self._epoll.modify(state.fd, _ARM if want == WANT_READ else _ARM_WRITE)
                    return
                state.handshaking = False
            while True:
                try:
                    data = sock.recv(RECV_SIZE)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                if not data:
                    self._close(state)  # the client closed (a partial head gets no answer)
                    return
                if head_ready(conn.feed(data), self.limits, conn):
                    sock.setblocking(True)
                    self._dispatch(state)
                    return
        except (OSError, ValueError):  # a failed handshake, a reset
            self._close(state)
            return
        if conn.has_pending_data():  # a partial head
            now = time.monotonic()
            if not state.partial_since:
                state.partial_since = now
                if not state.new:
                    limit = self.head_limit
                    if self._drain_started:
                        limit = min(limit, DRAIN_GRACE)
                    state.head_deadline = now + limit
            if now >= state.head_deadline:
                state.expired = True  # the core answers 408
                sock.setblocking(True)
                self._dispatch(state)
                return
            state.token = token = next(self._seq)
            heapq.heappush(self._timers, (state.head_deadline, token, state))
        self._epoll.modify(state.fd, _ARM)

    def _dispatch(self, state: _Conn) -> None:
        state.token = 0
        state.busy = True
        self._tasks.put(state)

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, token, state = heapq.heappop(timers)
            if state.token == token and not state.busy:
                self._look(state)

    def _scan(self, now: float) -> None:
        """Close parked connections whose wait is over (keep-alive timeout, silent client)."""
        for state in list(self._conns):
            if state.busy or state.partial_since or state.deadline > now:
                continue
            with self._park_lock:
                if not state.busy:
                    self._close(state)

    def _close(self, state: _Conn) -> None:
        state.token = 0
        self._fds.pop(state.fd, None)
        self._conns.discard(state)
        self._publish_load()
        try:
            self._epoll.unregister(state.fd)
        except (OSError, ValueError):
            pass
        state.conn.close()

    # -- drain -----------------------------------------------------------------------------
    def _begin_drain(self) -> Drain:
        """Stop accepting new work (workers/drain.py takes what is queued); close idle
        connections; let the rest finish with Connection: close."""
        assert self.ctx is not None
        self.board.leave()  # no one must leave connections to us now
        with self._park_lock:
            now = self._drain_started = time.monotonic()
        drain = self.begin_drain()
        self._update_accepting()  # the drain accepts by itself, no more listener events
        with self._park_lock:
            for state in list(self._conns):
                if state.busy:
                    continue
                if state.partial_since:
                    state.head_deadline = min(state.head_deadline, now + DRAIN_GRACE)
                elif now - state.since >= DRAIN_GRACE:
                    self._close(state)
                else:
                    state.deadline = min(state.deadline, state.since + DRAIN_GRACE)
        busy = sum(1 for state in self._conns if state.busy)
        log.info("Worker draining: %d requests in flight, %d connections open",
                 busy, len(self._conns))
        return drain

    def _finish(self) -> None:
        busy = 0
        with self._park_lock:
            for state in list(self._conns):
                if state.busy:
                    busy += 1
                else:
                    self._close(state)
        if busy:
            log.warning("Graceful timeout: %d requests still running at exit", busy)
        for _ in range(max(1, self.cfg.threads)):
            self._tasks.put(None)
        self._epoll.close()

    # -- pool threads ----------------------------------------------------------------------
    def _thread_main(self) -> None:
        # Signals go to the main thread, whose epoll_wait() they must interrupt.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        tasks = self._tasks
        while True:
            state = tasks.get()
            if state is None:
                return
            self._serve(state)

    def _serve(self, state: _Conn) -> None:
        """Serve one request, and the pipelined ones already buffered; then park or close.

        The HTTP core reads `ctx.draining` once per response, when it writes the head, and
        keeps the connection if that head promised keep-alive: a drain starting mid-request
        needs nothing from us (the RequestScopedDraining context that froze `draining` per
        request, and cost a thread-local write and read per request, is gone).
        """
        conn = state.conn
        sock = state.sock
        keep = False
        try:
            if state.expired:
                sock.settimeout(HANDOVER_TIMEOUT)  # closed after its 408
            while True:
                conn.closing = 0 < self.shed_at <= len(self._conns)
                keep = conn.handle_request()
                self.request_done()
                if not keep or not conn.has_pending_data():
                    break
        except Exception:  # the HTTP core handles app errors; this is a bug guard
            log.exception("Error handling request")
            keep = False
        if keep and not state.expired:
            now = time.monotonic()
            with self._park_lock:
                # (under the lock: a drain that begins now either sees this connection
                # parked, or this thread sees the drain)
                limit = self.keepalive_timeout
                if self._drain_started:
                    limit = min(limit, DRAIN_GRACE)
                state.since = now
                state.deadline = now + limit
                state.new = False
                state.partial_since = 0.0
                state.busy = False
                try:
                    # The last thing this thread does with the connection: from here on an
                    # event hands it to the main thread. Re-arming here instead of waking the
                    # main thread (pipe write + read, epoll_ctl DEL + ADD, a turn of its loop
                    # per request) took gthread wsgi-hello from 19,300 to ~19,800 req/s and
                    # its main thread off the GIL between requests.
                    self._epoll.modify(state.fd, _ARM)
                except (OSError, ValueError):  # the worker is exiting (epoll closed)
                    keep = False
                    state.busy = True  # still ours: closed below
            if keep:
                if self._drain_started:
                    self.wake()  # the drain loop waits for the last connections
                return
        self._fds.pop(state.fd, None)  # before the close: the fd number may be reused
        self._conns.discard(state)
        self._publish_load()
        conn.close()
        if not self._accepting or self._drain_started:
            self.wake()  # room for another connection, or one fewer to drain
