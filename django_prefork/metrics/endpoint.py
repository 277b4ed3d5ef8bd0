"""A tiny HTTP/1.x server the master runs inside its own loop, for scrapes and probes.

The master must never block, so nothing here waits: the listening socket and every client
are non-blocking, the master's select() watches their fds (MetricsEndpoint.wait_sets), and
each wake-up does what is ready. A client gets at most REQUEST_LIMIT bytes and
CLIENT_DEADLINE seconds for its request and our answer, and at most MAX_CLIENTS are served at
once (the rest wait in the kernel's backlog): a slow or hostile client can hold neither the
master nor its memory. One request per connection, answered with `Connection: close`.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django_prefork.server.sockets import Listener

REQUEST_LIMIT = 8192
CLIENT_DEADLINE = 5.0
MAX_CLIENTS = 16
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}

#: (status code, body, content type) for a path.
Responder = Callable[[str], tuple[int, bytes, str]]


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None


class MetricsEndpoint:
    """Serves GET/HEAD of the paths `respond` knows; everything else gets 404/405/400."""

    def __init__(self, listener: Listener, respond: Responder) -> None:
        self.listener = listener
        self.sock = listener.sock
        self.sock.setblocking(False)
        self.respond = respond
        self.clients: dict[int, _Client] = {}

    def url(self) -> str:
        return self.listener.url()

    def wait_sets(self) -> tuple[list[int], list[int]]:
        """The fds select() should watch: (readable, writable)."""
        readable = [fd for fd, c in self.clients.items() if c.out is None]
        writable = [fd for fd, c in self.clients.items() if c.out is not None]
        if len(self.clients) < MAX_CLIENTS:
            readable.append(self.sock.fileno())
        return readable, writable

    def serve(self, readable: Iterable[int], writable: Iterable[int]) -> None:
        """Do what select() found ready, then drop clients past their deadline."""
        listen_fd = self.sock.fileno()
        for fd in readable:
            if fd == listen_fd:
                self._accept()
            elif fd in self.clients:
                self._read(fd)
        for fd in writable:
            if fd in self.clients:
                self._write(fd)
        now = time.monotonic()
        for fd, client in list(self.clients.items()):
            if now > client.deadline:
                self._drop(fd)

    def close(self) -> None:
        for fd in list(self.clients):
            self._drop(fd)
        self.listener.close()

    # -- one client --------------------------------------------------------------------------
    def _accept(self) -> None:
        while len(self.clients) < MAX_CLIENTS:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ECONNABORTED or EMFILE: try again on the next wake-up
            sock.setblocking(False)
            self.clients[sock.fileno()] = _Client(sock, time.monotonic() + CLIENT_DEADLINE)

    def _read(self, fd: int) -> None:
        client = self.clients[fd]
        try:
            data = client.sock.recv(REQUEST_LIMIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        if not data:
            self._drop(fd)
            return
        client.received += data
        head_end = client.received.find(b"\r\n\r\n")
        if head_end < 0:
            head_end = client.received.find(b"\n\n")
        if head_end < 0:
            if len(client.received) >= REQUEST_LIMIT:
                self._answer(client, 400, b"request head too large\n", "text/plain", False)
            return
        self._answer_request(client, bytes(client.received[:head_end]))

    def _answer_request(self, client: _Client, head: bytes) -> None:
        line = head.split(b"\n", 1)[0].strip()
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._answer(client, 400, b"bad request\n", "text/plain", False)
            return
        method, target = parts[0], parts[1].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            self._answer(client, 405, b"only GET and HEAD\n", "text/plain", False)
            return
        try:
            status, body, content_type = self.respond(target.split("?", 1)[0])
        except Exception:  # a bug here must not take the master down
            status, body, content_type = 503, b"metrics failed\n", "text/plain"
        self._answer(client, status, body, content_type, method == b"HEAD")

    def _answer(self, client: _Client, status: int, body: bytes, content_type: str,
                head_only: bool) -> None:
        reason = _REASONS.get(status, "Unknown")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n"
                "Cache-Control: no-store\r\n\r\n").encode("latin-1")
        client.out = memoryview(head if head_only else head + body)
        self._write(client.sock.fileno())

    def _write(self, fd: int) -> None:
        client = self.clients[fd]
        out = client.out
        if out is None:
            return
        try:
            sent = client.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        client.out = out = out[sent:]
        if not out:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_WR)
            self._drop(fd)

    def _drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            with contextlib.suppress(OSError):
                client.sock.close()
