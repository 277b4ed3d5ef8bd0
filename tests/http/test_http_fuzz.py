"""Property-based fuzzing of HTTPConnection: random and mutated requests never crash it,
never hang it past `header_timeout`, and always get well-formed HTTP/1.1 back.

A short run is part of the suite; the long run is
`HYPOTHESIS_PROFILE=fuzz pytest tests/http/test_http_fuzz.py` (docs/security.md).
"""

from __future__ import annotations

import os
import socket
import threading
import time

from corpus_cases import load_cases, parse_responses
from httphelpers import exchange, make_ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_prefork.http.connection import HTTPConnection
from testproject.parse import application as parse_app

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
RUN = settings(
    max_examples=20_000 if LONG else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not LONG,  # the suite's short run is reproducible
)
CFG = {"header_timeout": 0.3, "limit_request_body": 4096, "limit_request_field_size": 512,
       "limit_request_line": 512, "limit_request_fields": 20}
SEEDS = [c.raw for c in load_cases() if c.shutdown and len(c.raw) < 1500]
SPECIAL = [b"\r", b"\n", b"\0", b" ", b"\t", b"\r\n", b"\r\n\r\n", b":", b";", b"\xff", b","]


def serve(data: bytes, shutdown: bool = True) -> None:
    """One connection: no exception escapes, the server finishes, every answer parses."""
    methods: list[str] = []

    def app(environ, start_response):
        methods.append(environ["REQUEST_METHOD"])
        return parse_app(environ, start_response)

    ex = exchange(app, data, keepalive=True, shutdown=shutdown, **CFG)
    assert not ex.errors, ex.errors
    responses = parse_responses(ex.raw, [m == "HEAD" for m in methods])
    for i, resp in enumerate(responses):
        if resp.status >= 400:
            assert resp.header("Connection") == "close"
            assert i == len(responses) - 1, "a response after an error"
    if ex.results:
        assert ex.results[-1] is False  # the connection ended: EOF, error or timeout


@st.composite
def mutated(draw) -> bytes:
    """A corpus request with byte flips, CR/LF/NUL/SP insertions, duplications, cuts."""
    buf = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(buf)))
        if op == 0 and buf:
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            buf[pos:pos] = draw(st.sampled_from(SPECIAL))
        elif op == 2:
            buf[pos:pos] = buf[pos : pos + draw(st.integers(1, 40))] * draw(st.integers(1, 3))
        elif op == 3:
            del buf[pos : pos + draw(st.integers(1, 10))]
        else:
            buf = buf[:pos]
    return bytes(buf)


TOKEN = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~",
                min_size=1, max_size=12)
NASTY = st.binary(max_size=12) | st.sampled_from(SPECIAL)


@st.composite
def generated(draw) -> bytes:
    """A request assembled from mostly-valid parts, with nasty bytes where they hurt."""
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"get",
                                   b"CONNECT", b"FOO"]) | st.binary(min_size=1, max_size=6))
    target = draw(st.sampled_from([b"/__wsgi__/parse", b"*", b"http://h/__wsgi__/parse?a",
                                   b"/a%00b", b"/a b"]) | st.binary(min_size=1, max_size=20))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2",
                                    b"http/1.1"]) | st.binary(max_size=9))
    eol = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b"\r\r\n"]))
    fields = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Expect",
                                     "Connection", "Trailer", "X_A"]) | TOKEN).encode()
        value = draw(st.sampled_from([b"chunked", b"5", b"0", b"100-continue", b"close",
                                      b"gzip, chunked", b"h", b"5, 5", b""]) | NASTY)
        sep = draw(st.sampled_from([b": ", b":", b" : ", b":\t"]))
        fields.append(name + sep + value + eol)
    body = draw(st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n",
                                 b"3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", b"0\r\n\r\n"])
                | st.binary(max_size=40))
    head = method + b" " + target + b" " + version + eol + b"".join(fields) + eol
    return head + body + draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]))


@RUN
@given(data=mutated() | generated() | st.binary(max_size=300),
       shutdown=st.sampled_from([True] * 15 + [False]))
def test_fuzz_http_connection(data: bytes, shutdown: bool):
    serve(data, shutdown)


def test_slow_trickle_bounded_by_header_timeout():
    """A head sent in pieces slower than header_timeout allows is cut off with a 408."""
    client, server = socket.socketpair()
    server.settimeout(5)  # the socket's own timeout is longer: header_timeout must win
    ctx = make_ctx(parse_app, keepalive=True, **CFG)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx)
    out = []
    thread = threading.Thread(target=lambda: out.append(conn.handle_request()))
    start = time.monotonic()
    thread.start()
    try:
        for byte in b"GET /__wsgi__/parse HTTP/1.1\r\nHost: x\r\n":
            if not thread.is_alive():
                break
            try:
                client.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.02)
        thread.join(5)
        elapsed = time.monotonic() - start
        client.settimeout(5)
        raw = client.recv(4096)
        assert server.gettimeout() == 5  # the worker's timeout is restored
    finally:
        conn.close()
        client.close()
    assert out == [False]
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 0.3 + 0.5
