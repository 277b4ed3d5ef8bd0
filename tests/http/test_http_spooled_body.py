"""Chunked bodies for Django: read whole before the app runs, given a CONTENT_LENGTH.

Django reads exactly CONTENT_LENGTH bytes of wsgi.input (nothing without it), so the core
decodes a chunked body first for an app that is (or wraps) Django's WSGIHandler, keeping it
in memory up to SPOOL_MEMORY_MAX and in a temporary file beyond. Other WSGI apps keep
streaming reads. The end-to-end runs per worker class are in test_http_chunked_upload.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import threading

from django.core.handlers.wsgi import WSGIHandler
from httphelpers import TIMEOUT, exchange, make_ctx
from whitenoise import WhiteNoise

from django_prefork.http import body as body_module
from django_prefork.http.connection import HTTPConnection
from django_prefork.http.wsgi import reads_content_length_only


class DjangoLike(WSGIHandler):
    """Reads as Django does: CONTENT_LENGTH bytes of wsgi.input, none without it."""

    def __init__(self) -> None:  # no middleware loading: only the isinstance check matters
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length) if length else b""
        reply = json.dumps({
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_length": environ.get("CONTENT_LENGTH"),
            "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [reply]


def chunked_post(data: bytes, piece: int = 1000, extra: bytes = b"") -> bytes:
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + piece]), data[i : i + piece])
        for i in range(0, len(data), piece)
    )
    return (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + extra
            + b"\r\n" + chunks + b"0\r\n\r\n")  # fmt: skip


def test_django_app_gets_the_whole_chunked_body_with_a_content_length():
    data = bytes(range(256)) * 400  # 100 KB
    ex = exchange(DjangoLike(), chunked_post(data))
    reply = json.loads(ex.responses()[0].body)
    assert reply == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                     "content_length": str(len(data)), "transfer_encoding": None}


def test_body_past_the_memory_limit_goes_to_a_file(monkeypatch):
    monkeypatch.setattr(body_module, "SPOOL_MEMORY_MAX", 4096)
    rolled: list[bool] = []
    original = body_module.spool_chunked

    def spy(reader, memory_max=None):
        spooled = original(reader, body_module.SPOOL_MEMORY_MAX)
        rolled.append(spooled._file._rolled)  # type: ignore[attr-defined]
        return spooled

    monkeypatch.setattr("django_prefork.http.connection.spool_chunked", spy)
    data = b"x" * 20000
    ex = exchange(DjangoLike(), chunked_post(data) + chunked_post(b"y" * 100), keepalive=True)
    replies = [json.loads(r.body) for r in ex.responses()]
    assert [r["length"] for r in replies] == [20000, 100]
    assert rolled == [True, False]
    assert ex.results[:2] == [True, True]  # keep-alive: the next request was served


def test_chunked_body_over_the_limit_is_413_before_the_app_runs():
    app = DjangoLike()
    ex = exchange(app, chunked_post(b"z" * 5000), limit_request_body=4096)
    assert [r.status for r in ex.responses()] == [413]
    assert app.calls == 0


def test_malformed_chunk_is_400_before_the_app_runs():
    app = DjangoLike()
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\nzz\r\n")
    ex = exchange(app, request)
    assert [r.status for r in ex.responses()] == [400]
    assert app.calls == 0


def test_expect_continue_is_answered_before_spooling():
    # The client sends the body only after the 100 (RFC 9110 §10.1.1): the spooling read
    # must send it, or both sides wait.
    data = b"q" * 3000
    request = chunked_post(data, extra=b"Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    client, server = socket.socketpair()
    client.settimeout(TIMEOUT)
    server.settimeout(TIMEOUT)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), make_ctx(DjangoLike()))
    thread = threading.Thread(target=conn.handle_request, daemon=True)
    thread.start()
    try:
        client.sendall(head + b"\r\n\r\n")
        assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(body)
        raw = b""
        while b"}" not in raw:
            more = client.recv(65536)
            assert more, raw
            raw += more
        thread.join(TIMEOUT)
    finally:
        conn.close()
        client.close()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["length"] == 3000


def test_raw_wsgi_app_keeps_streaming_reads():
    seen: dict[str, object] = {}

    def raw_app(environ, start_response):
        seen["content_length"] = environ.get("CONTENT_LENGTH")
        seen["terminated"] = environ["wsgi.input_terminated"]
        first = environ["wsgi.input"].read(10)
        rest = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [first + rest]

    data = b"r" * 5000
    ex = exchange(raw_app, chunked_post(data))
    assert ex.responses()[0].body == data
    assert seen == {"content_length": None, "terminated": True}
    assert make_ctx(raw_app).spool_chunked is False


def test_django_is_recognised_through_wrappers():
    django_app = DjangoLike()

    def plain(environ, start_response):  # pragma: no cover - never called
        return []

    @functools.wraps(django_app)
    def decorated(environ, start_response):  # pragma: no cover - never called
        return django_app(environ, start_response)

    assert reads_content_length_only(django_app)
    assert reads_content_length_only(WhiteNoise(django_app))
    assert reads_content_length_only(WhiteNoise(WhiteNoise(django_app)))
    assert reads_content_length_only(decorated)
    assert not reads_content_length_only(plain)
    assert not reads_content_length_only(WhiteNoise(plain))
