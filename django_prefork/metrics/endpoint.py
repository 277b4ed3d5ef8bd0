"""A tiny HTTP/1.x server the master runs inside its own loop, for scrapes and probes.

One request per connection, answered with `Connection: close`; the non-blocking serving,
with its bounds on clients, bytes and time, is server/oneshot.py's.
"""

from __future__ import annotations

from collections.abc import Callable

from django_prefork.server.oneshot import OneShotServer
from django_prefork.server.sockets import Listener

REQUEST_LIMIT = 8192
CLIENT_DEADLINE = 5.0
MAX_CLIENTS = 16
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}

#: (status code, body, content type) for a path.
Responder = Callable[[str], tuple[int, bytes, str]]


class MetricsEndpoint(OneShotServer):
    """Serves GET/HEAD of the paths `respond` knows; everything else gets 404/405/400."""

    request_limit = REQUEST_LIMIT
    client_deadline = CLIENT_DEADLINE
    max_clients = MAX_CLIENTS

    def __init__(self, listener: Listener, respond: Responder) -> None:
        super().__init__(listener.sock)
        self.listener = listener
        self.sock = listener.sock
        self.respond = respond

    def url(self) -> str:
        return self.listener.url()

    def close(self) -> None:
        self.close_clients()
        self.listener.close()

    def answer_for(self, received: bytes, eof: bool) -> bytes | None:
        head_end = received.find(b"\r\n\r\n")
        if head_end < 0:
            head_end = received.find(b"\n\n")
        if head_end < 0:
            if len(received) >= REQUEST_LIMIT:
                return _response(400, b"request head too large\n", "text/plain", False)
            return None
        return self._answer_request(received[:head_end])

    def _answer_request(self, head: bytes) -> bytes:
        line = head.split(b"\n", 1)[0].strip()
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _response(400, b"bad request\n", "text/plain", False)
        method, target = parts[0], parts[1].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            return _response(405, b"only GET and HEAD\n", "text/plain", False)
        try:
            status, body, content_type = self.respond(target.split("?", 1)[0])
        except Exception:  # a bug here must not take the master down
            status, body, content_type = 503, b"metrics failed\n", "text/plain"
        return _response(status, body, content_type, method == b"HEAD")


def _response(status: int, body: bytes, content_type: str, head_only: bool) -> bytes:
    reason = _REASONS.get(status, "Unknown")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            "Cache-Control: no-store\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
