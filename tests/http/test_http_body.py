"""wsgi.input: Content-Length and chunked bodies, streaming, 100-continue, draining."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading

import pytest
from httphelpers import exchange, make_ctx

from django_prefork.http.connection import HTTPConnection
from django_prefork.http.errors import IncompleteBody, InvalidBody


def echo_app(read):
    """An app that answers with `read(wsgi.input)` (bytes), or the exception's class name."""

    def app(environ, start_response):
        try:
            body = read(environ["wsgi.input"])
        except Exception as exc:
            body = type(exc).__name__.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app


def post(body: bytes, extra: bytes = b"", path: bytes = b"/") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
            + extra + b"\r\n" + body)  # fmt: skip


def chunked(chunks: list[bytes], trailers: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + out + b"0\r\n" + trailers + b"\r\n")  # fmt: skip


def body_of(app, request: bytes, **kw) -> bytes:
    ex = exchange(app, request, **kw)
    responses = ex.responses()
    assert responses[0].status == 200, ex.raw
    return responses[0].body


READS = {
    "read()": lambda f: f.read(),
    "read(None)": lambda f: f.read(None),
    "read(n)x": lambda f: b"".join(iter(lambda: f.read(3), b"")),
    "readline": lambda f: b"|".join(iter(f.readline, b"")),
    "readline(4)": lambda f: b"|".join(iter(lambda: f.readline(4), b"")),
    "readlines": lambda f: b"|".join(f.readlines()),
    "iter": lambda f: b"|".join(f),
}
DATA = b"line one\nline two\nthree"


@pytest.mark.parametrize("how", READS)
def test_content_length_body(how):
    expected = READS[how](io.BytesIO(DATA))
    assert body_of(echo_app(READS[how]), post(DATA)) == expected


@pytest.mark.parametrize("how", READS)
def test_chunked_body(how):
    expected = READS[how](io.BytesIO(DATA))
    request = chunked([DATA[:5], DATA[5:12], DATA[12:]])
    assert body_of(echo_app(READS[how]), request) == expected


def test_read_exact_size_across_chunks():
    request = chunked([b"ab", b"cd", b"ef"])
    assert body_of(echo_app(lambda f: f.read(5) + b"/" + f.read(5)), request) == b"abcde/f"


def test_partial_read_then_next_pipelined_request():
    app = echo_app(lambda f: f.read(2))
    ex = exchange(app, post(b"abcdef") + post(b"xyz") + chunked([b"123", b"456"]),
                  keepalive=True)  # fmt: skip
    assert [r.body for r in ex.responses()] == [b"ab", b"xy", b"12"]
    assert ex.results == [True, True, True, False]


def test_chunked_trailers_ignored():
    seen = {}

    def app(environ, start_response):
        seen["body"] = environ["wsgi.input"].read()
        seen["keys"] = [k for k in environ if k.startswith("HTTP_")]
        start_response("200 OK", [])
        return [b""]

    exchange(app, chunked([b"abc"], trailers=b"X-Trailer: t\r\n"))
    assert seen["body"] == b"abc"
    assert "HTTP_X_TRAILER" not in seen["keys"]


def test_chunked_then_pipelined_get_in_one_packet():
    app = echo_app(lambda f: f.read())
    request = chunked([b"hello", b"\r\n\r\nworld"]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    ex = exchange(app, request, keepalive=True)
    assert [r.body for r in ex.responses()] == [b"hello\r\n\r\nworld", b""]


def test_chunked_crlf_crlf_split_across_reads():
    app = echo_app(lambda f: f.read())
    request = chunked([b"abc"]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    end = request.index(b"0\r\n\r\n") + 4  # split inside the final CRLFCRLF
    ex = exchange(app, [request[: end - 1], request[end - 1 :]], keepalive=True)
    assert [r.body for r in ex.responses()] == [b"abc", b""]


def test_one_megabyte_upload():
    data = os.urandom(1 << 20)
    app = echo_app(lambda f: hashlib.sha256(f.read()).hexdigest().encode())
    assert body_of(app, post(data)) == hashlib.sha256(data).hexdigest().encode()
    chunks = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    assert body_of(app, chunked(chunks)) == hashlib.sha256(data).hexdigest().encode()


def test_body_cut_short_raises_in_app_and_closes():
    seen = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except Exception as exc:
            seen.append(exc)
        start_response("200 OK", [])
        return [b"x"]

    ex = exchange(app, post(b"abcdef")[:-3], keepalive=True)
    assert isinstance(seen[0], IncompleteBody) and isinstance(seen[0], OSError)
    assert ex.results == [False]
    seen.clear()
    exchange(app, chunked([b"abcdef"])[:-8], keepalive=True)
    assert isinstance(seen[0], IncompleteBody)


def test_bad_chunk_seen_by_app_when_late():
    seen = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except Exception as exc:
            seen.append(exc)
        start_response("200 OK", [])
        return [b""]

    # With 100-continue the body comes after the head, so the app meets the error itself.
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n")  # fmt: skip
    ctx = make_ctx(app, keepalive=True)
    client, server = socket.socketpair()
    client.settimeout(5)
    server.settimeout(5)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx)
    out = []
    thread = threading.Thread(target=lambda: out.append(conn.handle_request()))
    client.sendall(head)
    thread.start()
    assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.sendall(b"zz\r\nabc\r\n0\r\n\r\n")
    thread.join(5)
    assert out == [False]
    assert isinstance(seen[0], InvalidBody)
    conn.close()
    client.close()


def test_expect_continue_sent_only_when_body_read():
    request = post(b"abc", extra=b"Expect: 100-continue\r\n")
    ex = exchange(echo_app(lambda f: f.read()), request)
    assert ex.raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert ex.responses()[1].body == b"abc"
    # Not read: no 100, and the connection closes (the client may never send the body).
    ex = exchange(echo_app(lambda f: b"ignored"), request, keepalive=True)
    assert b"100 Continue" not in ex.raw
    assert ex.responses()[0].header("Connection") == "close"
    assert ex.results == [False]


def test_expect_continue_once_even_with_many_reads():
    request = post(b"abcdef", extra=b"Expect: 100-continue\r\n")
    ex = exchange(echo_app(lambda f: f.read(1) + f.read(2) + f.read()), request)
    assert ex.raw.count(b"100 Continue") == 1
    assert ex.responses()[1].body == b"abcdef"


def test_expect_continue_ignored_for_http10():
    request = post(b"abc", extra=b"Expect: 100-continue\r\n").replace(b"HTTP/1.1", b"HTTP/1.0")
    ex = exchange(echo_app(lambda f: f.read()), request)
    assert b"100 Continue" not in ex.raw


def test_unread_body_drained_for_keep_alive():
    app = echo_app(lambda f: b"no read")
    request = post(b"x" * 1000) + chunked([b"y" * 1000]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    ex = exchange(app, request, keepalive=True)
    assert [r.status for r in ex.responses()] == [200, 200, 200]
    assert ex.results == [True, True, True, False]


def test_large_unread_body_closes_instead_of_draining():
    app = echo_app(lambda f: b"no read")
    ex = exchange(app, post(b"x" * 200_000) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                  keepalive=True)  # fmt: skip
    responses = ex.responses()
    assert len(responses) == 1
    assert responses[0].header("Connection") == "close"
    assert ex.results == [False]


def test_expect_continue_body_already_sent_and_unread_keeps_alive():
    # The client did not wait for the 100: the whole chunked body came with the head.
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Expect: 100-continue\r\n\r\n3\r\nabc\r\n0\r\n\r\n")  # fmt: skip
    ex = exchange(echo_app(lambda f: b"unread"), request + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                  keepalive=True)  # fmt: skip
    assert [r.body for r in ex.responses()] == [b"unread", b"unread"]
    assert b"100 Continue" not in ex.raw


# -- large reads: one reused receive buffer, one copy (LengthReader.read_exact) ------------

BIG = os.urandom(600_000)  # above EXACT_MIN: read_exact's path


@pytest.mark.parametrize("read", [lambda f: f.read(), lambda f: f.read(len(BIG)),
                                  lambda f: f.read(len(BIG) + 5)],
                         ids=["read()", "read(n)", "read(n+5)"])
def test_large_body_read_in_one_piece_leaves_the_next_request(read):
    app = echo_app(lambda f: hashlib.sha256(read(f)).hexdigest().encode() + b"/" + f.read())
    request = post(BIG) + post(b"xyz")
    # In pieces: the reused buffer is filled across several recv calls.
    pieces = [request[i : i + 70_000] for i in range(0, len(request), 70_000)]
    ex = exchange(app, pieces, keepalive=True)
    assert [r.body for r in ex.responses()] == [
        hashlib.sha256(BIG).hexdigest().encode() + b"/",
        hashlib.sha256(b"xyz").hexdigest().encode() + b"/",
    ]


def test_large_reads_in_a_row_reuse_the_buffer_without_mixing_bodies():
    other = bytes(reversed(BIG))
    app = echo_app(lambda f: hashlib.sha256(f.read(200_000) + f.read()).hexdigest().encode())
    ex = exchange(app, post(BIG) + post(other), keepalive=True)
    assert [r.body for r in ex.responses()] == [
        hashlib.sha256(BIG).hexdigest().encode(), hashlib.sha256(other).hexdigest().encode()
    ]


def test_large_body_cut_short_raises_in_app_and_closes():
    seen = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read(len(BIG))
        except Exception as exc:
            seen.append(exc)
        start_response("200 OK", [])
        return [b"x"]

    ex = exchange(app, post(BIG)[:-1000], keepalive=True)
    assert isinstance(seen[0], IncompleteBody)
    assert ex.results == [False]


def test_large_body_with_expect_continue():
    app = echo_app(lambda f: hashlib.sha256(f.read()).hexdigest().encode())
    ex = exchange(app, post(BIG, b"Expect: 100-continue\r\n"))
    assert ex.raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert ex.raw.endswith(hashlib.sha256(BIG).hexdigest().encode())
