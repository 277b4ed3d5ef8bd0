"""A small server the master runs inside its own loop: one request, one answer, then close.

The master must never block, so nothing here waits: the listening socket and every client
are non-blocking, the master's select() watches the fds `wait_sets()` names, and each wake-up
`serve()`s what is ready. A client gets at most `request_limit` bytes and `client_deadline`
seconds for its request and our answer, and at most `max_clients` are served at once (the
rest wait in the kernel's backlog): a slow or hostile client can hold neither the master nor
its memory. The metrics endpoint (HTTP, metrics/endpoint.py) and the control socket
(preforkctl's JSON lines, server/control.py) differ only in how a request is told complete
and answered: `answer_for`.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Client:
    sock: socket.socket
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None


class OneShotServer:
    """Serves `listen_sock`; subclasses say when a request is complete and what to answer."""

    request_limit = 4096
    client_deadline = 5.0
    max_clients = 8

    def __init__(self, listen_sock: socket.socket) -> None:
        self.listen_sock = listen_sock
        listen_sock.setblocking(False)
        self.clients: dict[int, Client] = {}

    def answer_for(self, received: bytes, eof: bool) -> bytes | None:
        """The bytes to send for what a client sent so far, or None to wait for more (at
        EOF, None drops the client). Called after each read; must not raise."""
        raise NotImplementedError

    def wait_sets(self) -> tuple[list[int], list[int]]:
        """The fds select() should watch: (readable, writable)."""
        readable = [fd for fd, c in self.clients.items() if c.out is None]
        writable = [fd for fd, c in self.clients.items() if c.out is not None]
        if len(self.clients) < self.max_clients:
            readable.append(self.listen_sock.fileno())
        return readable, writable

    def serve(self, readable: Iterable[int], writable: Iterable[int]) -> None:
        """Do what select() found ready, then drop clients past their deadline."""
        listen_fd = self.listen_sock.fileno()
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

    def close_clients(self) -> None:
        for fd in list(self.clients):
            self._drop(fd)

    # -- one client --------------------------------------------------------------------------
    def _accept(self) -> None:
        while len(self.clients) < self.max_clients:
            try:
                sock, _ = self.listen_sock.accept()
            except OSError:  # EAGAIN, or ECONNABORTED/EMFILE: try again on the next wake-up
                return
            sock.setblocking(False)
            self.clients[sock.fileno()] = Client(sock, time.monotonic() + self.client_deadline)

    def _read(self, fd: int) -> None:
        client = self.clients[fd]
        try:
            data = client.sock.recv(self.request_limit)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        client.received += data
        answer = self.answer_for(bytes(client.received), eof=not data)
        if answer is None:
            if not data:
                self._drop(fd)  # gone before a whole request
            return
        client.out = memoryview(answer)
        self._write(fd)

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
