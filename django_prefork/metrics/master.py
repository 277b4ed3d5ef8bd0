"""The master's side of observability: the metrics board's totals, why workers ended,
readiness, the endpoint in the master's loop, and the master's StatsD gauge.

The arbiter holds one `MasterObserver` and calls it at a few points (docs/observability.md,
"Hooks"): `select()` in place of its own select, `worker_exited()` when it reaps a worker,
`set_ready(False)` when a graceful stop, a WINCH or an upgrade hand-over begins, and
`close()` at the very end. With metrics and StatsD off every call is nearly free.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from typing import Any, Protocol

from django_prefork.server.sockets import Listener

from .board import MetricsBoard
from .endpoint import MetricsEndpoint
from .exposition import CONTENT_TYPE, RESTART_REASONS, MasterNumbers, render
from .statsd import StatsdClient, count_log_records

#: The master sends its gunicorn.workers gauge at most this often (gunicorn: every loop).
GAUGE_INTERVAL = 1.0
#: How often gunicorn.backlog is sampled and sent (gunicorn: once per arbiter loop, ~1 s).
BACKLOG_INTERVAL = 1.0
_TCP_INFO = getattr(socket, "TCP_INFO", None)
#: struct tcp_info (linux/tcp.h): eight u8 fields, then u32 rto, ato, snd_mss, rcv_mss,
#: unacked. For a listening socket Linux reports the accept queue's length in tcpi_unacked
#: (and its limit in tcpi_sacked): the same numbers as `ss -lnt` shows as Recv-Q / Send-Q.
_UNACKED_OFFSET = 24


class WorkerView(Protocol):
    """What the observer reads of the arbiter's record of a worker."""

    ready: bool
    retiring: bool
    generation: int
    aborted_at: float | None
    killed: bool


class Service(Protocol):
    """A non-blocking server the master's select also waits on (see MetricsEndpoint)."""

    clients: dict[int, Any]

    def wait_sets(self) -> tuple[list[int], list[int]]: ...

    def serve(self, readable: list[int], writable: list[int]) -> None: ...

    def close_in_child(self) -> None: ...


class ServerView(Protocol):
    """What the observer reads of the arbiter."""

    workers: dict[int, Any]
    listeners: list[Listener]
    generation: int


def exit_reason(record: WorkerView, current_generation: int, exit_code: int) -> str:
    """Why a reaped worker ended, one of RESTART_REASONS.

    The master knows: it sent SIGABRT/SIGKILL for a timeout, it retired the worker (TERM)
    after a reload or a TTOU; a worker that exits 0 unasked recycled itself (max_requests);
    anything else is a crash.
    """
    if record.aborted_at is not None or record.killed:
        return "timeout"
    if record.retiring:
        return "reload" if record.generation != current_generation else "ttou"
    if exit_code == 0:
        return "max_requests"
    return "crash"


def listen_queue(listener: Listener) -> int | None:
    """Connections waiting in a TCP listener's accept queue (Linux), else None."""
    if _TCP_INFO is None or listener.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = listener.sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _UNACKED_OFFSET + 4:
        return None
    return int(struct.unpack_from("=I", info, _UNACKED_OFFSET)[0])


def open_metrics_listener(cfg: Any, inherited_fd: int | None = None) -> Listener | None:
    """Bind the metrics address (None when metrics are off); raises BindError.

    `inherited_fd`: the old master's metrics socket during an upgrade hand-over
    (`MasterObserver.listener_fd()`), adopted instead of bound again: the old master still
    holds the port, so a new bind would fail.
    """
    if not getattr(cfg, "metrics_bind", None):
        return None
    if inherited_fd is None:
        inherited_fd = _inherited_from_old_master()
    if inherited_fd is not None:
        return Listener(socket.socket(fileno=inherited_fd), cfg.metrics_bind)
    from django_prefork.conf import parse_bind
    from django_prefork.server.sockets import create_listeners

    return create_listeners([parse_bind(cfg.metrics_bind)], 64)[0]


def _inherited_from_old_master() -> int | None:
    """The metrics socket an old master handed over in a USR2 upgrade, if any."""
    from django_prefork.server.upgrade import METRICS_INHERIT_ENV_VAR

    value = os.environ.pop(METRICS_INHERIT_ENV_VAR, None)
    if not value or not value.isdigit():
        return None
    fd = int(value)
    try:
        os.set_inheritable(fd, False)
    except OSError:
        return None  # not open here: bind as usual
    return fd


class MasterObserver:
    def __init__(self, cfg: Any, board_fd: int, listener: Listener | None,
                 server: ServerView) -> None:
        self.server = server
        # The board also carries readiness to the workers for /-/ready on the main bind,
        # and each worker's counts and current request to `preforkctl status`.
        wanted = (listener is not None or getattr(cfg, "health_on_main_bind", False)
                  or not getattr(cfg, "control_socket_disable", True))
        self.board = MetricsBoard.create(board_fd) if wanted else None
        self.endpoint = MetricsEndpoint(listener, self.respond) if listener else None
        self.statsd = StatsdClient.from_config(cfg)
        count_log_records(self.statsd)
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)
        #: False from the moment the server begins to stop taking traffic for good.
        self.accepting_traffic = True
        self._next_gauge = 0.0
        self._last_gauge = -1
        #: gunicorn's enable_backlog_metric: gunicorn.backlog, once a second (statsd only).
        self._backlog_metric = bool(getattr(cfg, "enable_backlog_metric", False))
        self._next_backlog = 0.0
        #: Other non-blocking servers of the master served from the same select (the
        #: control socket: server/control.py), each with wait_sets() and serve().
        self.services: list[Service] = []

    # -- hooks the arbiter calls -----------------------------------------------------------
    def select(self, fds: list[int], timeout: float) -> list[int]:
        """select() on the master's fds and ours; serve ours; return the master's ready fds.

        Raises OSError as select does (the caller handles EINTR as before).
        """
        endpoint = self.endpoint
        if endpoint is None and not self.services:
            ready, _, _ = select.select(fds, [], [], timeout)
            self._send_gauge()
            return ready
        servers: list[Any] = [endpoint, *self.services] if endpoint else list(self.services)
        sets = [server.wait_sets() for server in servers]
        readable = [fd for r, _ in sets for fd in r]
        writable = [fd for _, w in sets for fd in w]
        ready, can_write, _ = select.select([*fds, *readable], writable, [], timeout)
        mine = [fd for fd in ready if fd not in fds]
        for server, (r, w) in zip(servers, sets, strict=True):
            theirs = [fd for fd in mine if fd in r]
            writes = [fd for fd in can_write if fd in w]
            if theirs or writes or server.clients:
                server.serve(theirs, writes)
        self._send_gauge()
        return [fd for fd in ready if fd in fds]

    def wait(self, seconds: float) -> None:
        """Sleep, still answering scrapes and probes (the shutdown loop's pause)."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                self.select([], left)
            except InterruptedError:
                pass

    def worker_exited(self, pid: int, reason: str | None) -> None:
        """A reaped worker: fold its counts into the totals; count the restart (reason None
        when it is not replaced, as on shutdown)."""
        if self.board is not None:
            self.board.fold(pid)
        if reason is not None:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def set_ready(self, ready: bool) -> None:
        """/-/ready answers 503 once this is False: for a graceful stop, WINCH or an upgrade
        hand-over, so load balancers stop sending before connections close."""
        self.accepting_traffic = ready
        if self.board is not None:
            self.board.set_ready(ready)

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None

    def listener_fd(self) -> int | None:
        """The metrics socket's fd, for an upgrade to hand to the new master (mark it
        inheritable first); None when metrics are off."""
        return self.endpoint.sock.fileno() if self.endpoint is not None else None

    def close_in_child(self) -> None:
        """In a worker forked from the master: let go of the endpoint's sockets, so that the
        master alone holds the metrics port (and frees it when it stops)."""
        self.close()
        for service in self.services:
            service.close_in_child()
        self.services = []
        if self.statsd is not None:
            self.statsd.close()
            self.statsd = None

    # -- answers ---------------------------------------------------------------------------
    def url(self) -> str | None:
        return self.endpoint.url() + "/metrics" if self.endpoint else None

    def live(self) -> bool:
        return bool(self.server.workers)

    def ready(self) -> bool:
        return self.accepting_traffic and any(r.ready for r in self.server.workers.values())

    def respond(self, path: str) -> tuple[int, bytes, str]:
        if path == "/metrics":
            return 200, self.exposition(), CONTENT_TYPE
        if path == "/-/live":
            ok = self.live()
            return (200, b"live\n", "text/plain") if ok else (503, b"no worker\n", "text/plain")
        if path == "/-/ready":
            ok = self.ready()
            return (200, b"ready\n", "text/plain") if ok else (
                503, b"not ready\n", "text/plain")
        return 404, b"not found: try /metrics, /-/live or /-/ready\n", "text/plain"

    def backlog(self) -> dict[str, int]:
        """Connections waiting in each TCP listener's accept queue, by listener URL."""
        queues = {}
        for listener in self.server.listeners:
            queued = listen_queue(listener)
            if queued is not None:
                queues[listener.url()] = queued
        return queues

    def exposition(self) -> bytes:
        assert self.board is not None
        backlog = self.backlog()
        numbers = MasterNumbers(workers=len(self.server.workers),
                                restarts=dict(self.restarts), backlog=backlog)
        return render(self.board.totals(), numbers)

    def _send_gauge(self) -> None:
        statsd = self.statsd
        if statsd is None:
            return
        now = time.monotonic()
        count = len(self.server.workers)
        if now >= self._next_gauge or count != self._last_gauge:
            self._next_gauge = now + GAUGE_INTERVAL
            self._last_gauge = count
            statsd.gauge("gunicorn.workers", count)
        if self._backlog_metric and now >= self._next_backlog:
            # gunicorn sums its listeners and sends nothing where the kernel cannot tell
            self._next_backlog = now + BACKLOG_INTERVAL
            queues = self.backlog()
            if queues:
                statsd.histogram("gunicorn.backlog", sum(queues.values()))

