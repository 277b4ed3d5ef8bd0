"""Test helpers: drive an HTTPConnection over a socketpair and parse raw responses."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from django_prefork.conf import load_config
from django_prefork.http.connection import HTTPConnection, ServerContext
from django_prefork.http.parser import Limits
from django_prefork.http.settings import CoreSettings

TIMEOUT = 5.0


def make_settings(**overrides: Any) -> CoreSettings:
    """The core's settings from a real `load_config`: the registry's defaults and validation,
    with `overrides` given by setting name (as in PREFORK)."""
    # The setting counts whole seconds; the core takes a float, and tests wait less than one.
    timeout = overrides.pop("header_timeout", None)
    cfg = load_config(prefork={name.upper(): value for name, value in overrides.items()},
                      environ={})
    settings = CoreSettings.from_config(cfg)
    if timeout is not None:
        settings = dataclasses.replace(settings, header_timeout=float(timeout))
    return settings


def make_limits(**overrides: Any) -> Limits:
    return Limits.from_settings(make_settings(**overrides))


def make_ctx(app: Any, keepalive: bool = False, access_log: Any = None, **settings: Any):
    return ServerContext(
        app,
        make_settings(**settings),
        access_log=access_log,
        error_log=logging.getLogger("django_prefork.error"),
        multithread=False,
        multiprocess=True,
        keepalive=keepalive,
    )


@dataclass
class Exchange:
    raw: bytes  # everything the client received
    results: list[bool] = field(default_factory=list)  # handle_request() return values
    errors: list[BaseException] = field(default_factory=list)  # raised out of handle_request
    ctx: Any = None

    def responses(self, head_methods: tuple[int, ...] = ()) -> list[Response]:
        return parse_responses(self.raw, head_methods)


def exchange(
    app: Any,
    request: bytes | list[bytes],
    *,
    ctx: ServerContext | None = None,
    keepalive: bool = False,
    client_addr: Any = ("127.0.0.1", 50000),
    server_addr: Any = ("127.0.0.1", 8000),
    shutdown: bool = True,
    max_requests: int = 20,
    wrap: Any = None,
    **cfg: Any,
) -> Exchange:
    """Send `request` (bytes, or pieces sent one by one), serve until the server says stop,
    return what the client got. `wrap(sock)` may stand in for the server's socket."""
    if ctx is None:
        ctx = make_ctx(app, keepalive=keepalive, **cfg)
    client, server = socket.socketpair()
    client.settimeout(TIMEOUT)
    server.settimeout(TIMEOUT)
    result = Exchange(b"", ctx=ctx)

    def serve() -> None:
        sock = server if wrap is None else wrap(server)
        conn = HTTPConnection(sock, client_addr, server_addr, ctx)
        try:
            for _ in range(max_requests):
                keep = conn.handle_request()
                result.results.append(keep)
                if not keep:
                    break
        except BaseException as exc:  # pragma: no cover - a failure to report
            result.errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        pieces = [request] if isinstance(request, bytes) else request
        for piece in pieces:
            client.sendall(piece)
        if shutdown:
            client.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server may close early (an error response)
    chunks = []
    while True:
        try:
            data = client.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    thread.join(TIMEOUT)
    client.close()
    assert not thread.is_alive(), "server thread still running"
    result.raw = b"".join(chunks)
    return result


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(values) if values else None


def parse_responses(raw: bytes, head_indexes: tuple[int, ...] = ()) -> list[Response]:
    """Split `raw` into responses; `head_indexes` are the responses to HEAD (no body)."""
    out: list[Response] = []
    pos = 0
    while pos < len(raw):
        end = raw.index(b"\r\n\r\n", pos)
        lines = raw[pos:end].decode("latin-1").split("\r\n")
        pos = end + 4
        _, code, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
        resp = Response(int(code), reason, headers, b"")  # type: ignore[arg-type]
        status = int(code)
        if status < 200:
            out.append(resp)
            continue
        if len(out) in head_indexes or status in (204, 304):
            out.append(resp)
            continue
        te = resp.header("Transfer-Encoding")
        cl = resp.header("Content-Length")
        if te == "chunked":
            body = []
            while True:
                nl = raw.index(b"\r\n", pos)
                size = int(raw[pos:nl], 16)
                pos = nl + 2
                body.append(raw[pos : pos + size])
                pos += size + 2
                if size == 0:
                    break
            resp.body = b"".join(body)
            resp.chunked = True
        elif cl is not None:
            resp.body = raw[pos : pos + int(cl)]
            pos += int(cl)
        else:
            resp.body = raw[pos:]
            pos = len(raw)
        out.append(resp)
    return out


def simple_app(body: bytes = b"hello", status: str = "200 OK", headers: Any = None):
    """A WSGI app returning a one-element list (the server frames it with Content-Length)."""

    def app(environ, start_response):
        start_response(status, list(headers or [("Content-Type", "text/plain")]))
        return [body]

    return app


class Recorder:
    """An iterable response that records whether close() was called."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = False

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("boom in iteration")
            yield chunk

    def close(self) -> None:
        self.closed = True
