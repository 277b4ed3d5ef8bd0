"""The strict front door beyond the corpus: settings that change the rules, timeouts, the
chunked decoder fed in every split, and the response-side guards."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from corpus_cases import load_case, load_cases
from httphelpers import exchange, make_ctx, make_limits, simple_app

from django_prefork.conf import ConfigError
from django_prefork.http.connection import (
    HEAD_GRACE,
    HEAD_MIN_RATE,
    HTTPConnection,
    head_time_left,
)
from django_prefork.http.errors import BodyTooLarge, InvalidBody
from django_prefork.http.parser import ChunkedDecoder, head_ready
from testproject.parse import application as parse_app

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def statuses(raw: bytes) -> list[int]:
    lines = raw.split(b"\r\n")
    return [int(line.split(b" ")[1]) for line in lines if line.startswith(b"HTTP/1.1 ")]


# -- header_map ---------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "status", "seen"), [
    ("drop", 200, None), ("refuse", 400, None), ("dangerous", 200, "1, 2"),
])  # fmt: skip
def test_header_map(mode, status, seen):
    environs = []

    def app(environ, start_response):
        environs.append(environ)
        start_response("200 OK", [])
        return [b""]

    ex = exchange(app, b"GET / HTTP/1.1\r\nHost: x\r\nX-Foo-Bar: 1\r\nX_Foo_Bar: 2\r\n\r\n",
                  header_map=mode)  # fmt: skip
    assert ex.responses()[0].status == status
    if status == 200:
        expected = seen or "1"
        assert environs[0]["HTTP_X_FOO_BAR"] == expected
    else:
        assert environs == []


def test_header_map_checked_once_by_the_registry():
    with pytest.raises(ConfigError, match=r"HEADER_MAP.*'maybe'"):
        make_ctx(simple_app(), header_map="maybe")


# -- limit_request_body ---------------------------------------------------------------------

def test_content_length_over_limit_refused_before_100_continue():
    ex = exchange(simple_app(), b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
                  b"Expect: 100-continue\r\n\r\n", limit_request_body=10, shutdown=False)
    assert statuses(ex.raw) == [413]  # no 100 Continue: the body is never asked for
    ok = exchange(simple_app(), b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
                  + b"a" * 10, limit_request_body=10)  # fmt: skip
    assert statuses(ok.raw) == [200]


def _late_chunked(app, body: bytes, **cfg) -> tuple[bytes, list]:
    """Send a chunked request with 100-continue, so the body arrives while the app reads."""
    ctx = make_ctx(app, keepalive=True, **cfg)
    client, server = socket.socketpair()
    client.settimeout(5)
    server.settimeout(5)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx)
    out: list = []
    thread = threading.Thread(target=lambda: out.append(conn.handle_request()))
    client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Expect: 100-continue\r\n\r\n")
    thread.start()
    assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.sendall(body)
    thread.join(5)
    conn.close()
    raw = b""
    while data := client.recv(65536):
        raw += data
    client.close()
    return raw, out


def test_chunked_over_limit_while_app_reads_gives_413():
    raw, out = _late_chunked(parse_app, b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
                             limit_request_body=12)  # fmt: skip
    assert out == [False]
    assert statuses(raw) == [413]


def test_chunked_over_limit_caught_by_app_closes_connection():
    seen = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read()
        except InvalidBody as exc:
            seen.append(exc)
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    raw, out = _late_chunked(app, b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
                             limit_request_body=12)  # fmt: skip
    assert isinstance(seen[0], BodyTooLarge)
    assert out == [False]
    assert b"Connection: close" in raw


# -- header_timeout -------------------------------------------------------------------------

def test_idle_keepalive_connection_closed_without_408():
    start = time.monotonic()
    ex = exchange(simple_app(), GET, keepalive=True, shutdown=False, header_timeout=0.3)
    assert statuses(ex.raw) == [200]  # then nothing: no 408 for a connection that is idle
    assert ex.results == [True, False]
    assert time.monotonic() - start < 3


def test_partial_head_gets_408():
    ex = exchange(simple_app(), b"GET / HTTP/1.1\r\nHo", shutdown=False, header_timeout=0.3)
    assert statuses(ex.raw) == [408]
    assert b"Connection: close" in ex.raw


def test_header_timeout_zero_leaves_the_socket_timeout():
    client, server = socket.socketpair()
    server.settimeout(0.3)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2),
                          make_ctx(simple_app(), header_timeout=0))  # fmt: skip
    client.sendall(b"GET / HTTP/1.1\r\n")
    start = time.monotonic()
    assert conn.handle_request() is False  # the socket's own timeout: a 408 as well
    assert 0.25 < time.monotonic() - start < 2
    client.settimeout(2)
    assert client.recv(100).startswith(b"HTTP/1.1 408 ")
    conn.close()
    client.close()


def _trickle(pieces: list[bytes], interval: float, **settings) -> tuple[bytes, float]:
    """Send `pieces` `interval` seconds apart to one handle_request(); what came back, and
    after how long."""
    client, server = socket.socketpair()
    server.settimeout(60)
    client.settimeout(60)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2),
                          make_ctx(simple_app(), **settings))  # fmt: skip
    done = threading.Event()

    def feed() -> None:
        for i, piece in enumerate(pieces):
            if i and done.wait(interval):
                return
            try:
                client.sendall(piece)
            except OSError:
                return

    feeder = threading.Thread(target=feed, daemon=True)
    started = time.monotonic()
    feeder.start()
    try:
        conn.handle_request()
        elapsed = time.monotonic() - started
        raw = client.recv(65536)
    finally:
        done.set()
        feeder.join(5)
        conn.close()
        client.close()
    return raw, elapsed


def test_trickled_head_is_cut_off_long_before_header_timeout():
    # A slowloris client: a few bytes every 0.2 s would hold a worker for the whole
    # header_timeout (30 s); the minimum rate ends it in about HEAD_GRACE.
    pieces = [b"GET / HTTP/1.1\r\n"] + [b"X-a: b\r\n"] * 200
    raw, elapsed = _trickle(pieces, 0.2, header_timeout=30)
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 15  # not the header_timeout (generous: the machine may be loaded)


def test_a_slow_but_steady_head_is_served():
    # 1 KB every 0.4 s (2.5 KB/s) is above the minimum rate: served, not cut off.
    pieces = [b"GET / HTTP/1.1\r\nHost: x\r\n"] + [
        b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(4)] + [b"\r\n"]
    raw, _ = _trickle(pieces, 0.4, header_timeout=30)
    assert raw.startswith(b"HTTP/1.1 200 ")


def test_head_time_left_is_the_earlier_of_both_deadlines():
    assert head_time_left(100.0, 0, 30, 100.0) == HEAD_GRACE
    assert head_time_left(100.0, HEAD_MIN_RATE * 10, 30, 100.0) == HEAD_GRACE + 10
    assert head_time_left(100.0, HEAD_MIN_RATE * 100, 30, 110.0) == 20  # header_timeout
    assert head_time_left(100.0, 0, 0, 1e9) == float("inf")  # 0: no limit at all


# -- the chunked decoder and head_ready -------------------------------------------------------

CHUNKED_CASES = [c for c in load_cases() if b"Transfer-Encoding: chunked" in c.raw]


@pytest.mark.parametrize("case", CHUNKED_CASES, ids=str)
def test_chunked_decoder_same_result_at_every_split(case):
    """Feeding a chunked body in two pieces, split anywhere, decodes or fails the same."""
    raw = case.raw
    body = raw[raw.index(b"\r\n\r\n") + 4 :]
    limits = make_limits(limit_request_body=4096)

    def run(pieces):
        decoder = ChunkedDecoder(limits)
        out: list[bytes] = []
        used = 0
        try:
            for piece in pieces:
                used += decoder.feed(piece, out)
                if decoder.done:
                    break
        except InvalidBody as exc:
            return type(exc)
        return b"".join(out), decoder.done, used

    whole = run([body])
    for cut in range(1, len(body)):
        assert run([body[:cut], body[cut:]]) == whole, cut
    if len(body) < 400:
        assert run([body[i : i + 1] for i in range(len(body))]) == whole


def test_head_ready():
    limits = make_limits()
    assert not head_ready(b"", limits)
    assert not head_ready(b"\r\n", limits)
    assert not head_ready(b"\r", limits)
    assert not head_ready(b"GET / HTTP/1.1\r\nHost: x\r\n", limits)
    assert head_ready(GET, limits)
    assert head_ready(b"\r\n" + GET, limits)
    assert head_ready(b"\r\n\r\n", limits)  # the second empty line: refused at once
    assert head_ready(b"\n", limits)
    assert head_ready(b"GET / HTTP/1.1\nHost", limits)  # bare LF: refused at once
    assert head_ready(b"GET /" + b"a" * 5000, limits)  # too long: 414 at once


# -- responses ------------------------------------------------------------------------------

def test_app_connection_close_is_honoured():
    app = simple_app(headers=[("Connection", "close"), ("Content-Type", "text/plain")])
    ex = exchange(app, GET + GET, keepalive=True)
    assert statuses(ex.raw) == [200]
    assert ex.raw.count(b"Connection: close") == 1
    assert ex.results == [False]


@pytest.mark.parametrize("status", ["²００ OK", "２００ OK", "200 OK\x00", "20 OK", "999"[:2]])
def test_non_ascii_or_short_status_gives_500(status, caplog):
    with caplog.at_level(logging.ERROR, logger="django_prefork.error"):
        ex = exchange(simple_app(status=status), GET)
    assert statuses(ex.raw) == [500]


def test_corpus_files_have_descriptions():
    for path in sorted((Path(__file__).parent / "corpus").glob("*/*.http")):
        assert load_case(path).description
