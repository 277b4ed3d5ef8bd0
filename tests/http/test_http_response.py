"""Responses: framing, keep-alive, headers, errors, sendfile, disconnects, close()."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading

import pytest
from httphelpers import Recorder, exchange, make_ctx, simple_app

from django_prefork.http.connection import HTTPConnection

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"


def stream_app(chunks, headers=(), status="200 OK", recorder=None):
    def app(environ, start_response):
        start_response(status, list(headers))
        return recorder if recorder is not None else iter(chunks)

    return app


def test_get_single_chunk_gets_content_length():
    ex = exchange(simple_app(b"hello"), GET)
    (response,) = ex.responses()
    assert response.status == 200 and response.reason == "OK"
    assert response.body == b"hello"
    assert response.header("Content-Length") == "5"
    assert response.header("Transfer-Encoding") is None
    assert response.header("Server") == "django-prefork"
    assert response.header("Date").endswith(" GMT")
    assert response.header("Connection") == "close"  # keepalive=False (sync worker)
    assert ex.results == [False]


def test_app_server_and_date_headers_kept():
    app = simple_app(headers=[("Server", "mine"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT")])
    response = exchange(app, GET).responses()[0]
    assert response.header("Server") == "mine"
    assert response.header("Date") == "Mon, 01 Jan 2024 00:00:00 GMT"


def test_pipelined_requests_answered_in_order():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    request = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    ex = exchange(app, request, keepalive=True)
    responses = ex.responses()
    assert [r.body for r in responses] == [b"/0", b"/1", b"/2", b"/3", b"/4"]
    assert all(r.header("Connection") is None for r in responses)
    assert ex.results == [True] * 5 + [False]  # the last one: EOF


def test_has_pending_data_with_pipelining():
    ctx = make_ctx(simple_app(), keepalive=True)
    client, server = socket.socketpair()
    server.settimeout(5)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx)
    client.sendall(GET + GET)
    assert conn.handle_request() is True
    assert conn.has_pending_data() is True
    assert conn.handle_request() is True
    assert conn.has_pending_data() is False
    conn.close()
    conn.close()  # idempotent
    client.close()


def test_connection_close_from_client_and_draining():
    ex = exchange(simple_app(), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + GET,
                  keepalive=True)  # fmt: skip
    assert [r.header("Connection") for r in ex.responses()] == ["close"]
    ctx = make_ctx(simple_app(), keepalive=True)
    ctx.draining = True
    ex = exchange(None, GET + GET, ctx=ctx)
    assert [r.header("Connection") for r in ex.responses()] == ["close"]
    assert ex.results == [False]


def test_generator_is_chunked_with_keepalive():
    ex = exchange(stream_app([b"ab", b"", b"cd"]), GET + GET, keepalive=True)
    responses = ex.responses()
    assert [r.body for r in responses] == [b"abcd", b"abcd"]
    assert responses[0].chunked and responses[0].header("Transfer-Encoding") == "chunked"


def test_generator_is_chunked_without_keepalive_too():
    # Framed even on a closing connection, so that a cut can be told from the end (15.5).
    ex = exchange(stream_app([b"ab", b"cd"]), GET)
    response = ex.responses()[0]
    assert response.body == b"abcd" and response.chunked
    assert response.header("Content-Length") is None
    assert response.header("Connection") == "close"
    assert ex.raw.endswith(b"2\r\ncd\r\n0\r\n\r\n")


@pytest.mark.parametrize("keepalive", [False, True])
def test_generator_that_fails_midway_leaves_the_chunked_body_unterminated(keepalive):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/csv")])

        def rows():
            yield b"a,b\n"
            raise RuntimeError("the export broke")

        return rows()

    ex = exchange(app, GET, keepalive=keepalive)
    assert ex.results == [False]
    head, _, body = ex.raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"4\r\na,b\n\r\n"  # no last chunk: the client sees the truncation


def test_empty_generator_gets_content_length_zero():
    ex = exchange(stream_app([]), GET + GET, keepalive=True)
    assert [r.header("Content-Length") for r in ex.responses()] == ["0", "0"]


def test_http10():
    request = b"GET / HTTP/1.0\r\n\r\n"
    ex = exchange(simple_app(), request + request, keepalive=True)
    assert len(ex.responses()) == 1 and ex.responses()[0].header("Connection") == "close"
    request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    ex = exchange(simple_app(), request + request, keepalive=True)
    responses = ex.responses()
    assert [r.header("Connection") for r in responses] == ["keep-alive", "keep-alive"]
    # No chunked for HTTP/1.0: an unknown length means close-delimited.
    ex = exchange(stream_app([b"a", b"b"]), request + request, keepalive=True)
    (response,) = ex.responses()
    assert response.body == b"ab" and response.header("Connection") == "close"
    assert not response.chunked


def test_http10_request_gets_an_http10_status_line():
    ex = exchange(simple_app(), b"GET / HTTP/1.0\r\n\r\n")
    assert ex.raw.startswith(b"HTTP/1.0 200 OK\r\n")
    ex = exchange(stream_app([b"a"]), b"GET / HTTP/1.0\r\n\r\n")
    assert ex.raw.startswith(b"HTTP/1.0 200 OK\r\n")

    def failing(environ, start_response):
        raise RuntimeError("boom")

    ex = exchange(failing, b"GET / HTTP/1.0\r\n\r\n")
    assert ex.raw.startswith(b"HTTP/1.0 500 Internal Server Error\r\n")
    ex = exchange(simple_app(), GET)
    assert ex.raw.startswith(b"HTTP/1.1 200 OK\r\n")


def test_head_has_no_body_but_same_length():
    ex = exchange(simple_app(b"hello"), HEAD + GET, keepalive=True)
    head, get = ex.responses(head_methods=(0,))
    assert head.header("Content-Length") == "5" and head.body == b""
    assert get.body == b"hello"
    recorder = Recorder([b"a", b"b"])
    ex = exchange(stream_app(None, recorder=recorder), HEAD + GET, keepalive=True)
    head, _ = ex.responses(head_methods=(0,))
    assert head.header("Transfer-Encoding") is None
    assert recorder.closed


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status):
    app = stream_app(None, headers=[("Content-Length", "0")] if status[0] == "3" else [],
                     status=status, recorder=Recorder([b"ignored"]))  # fmt: skip
    ex = exchange(app, GET + GET, keepalive=True)
    responses = ex.responses()
    assert [r.status for r in responses] == [int(status[:3])] * 2
    assert all(r.body == b"" and r.header("Transfer-Encoding") is None for r in responses)
    if status.startswith("204"):
        assert responses[0].header("Content-Length") is None  # RFC 9110 §8.6


def test_hop_by_hop_headers_from_app_dropped():
    app = simple_app(headers=[("Connection", "keep-alive"), ("Transfer-Encoding", "chunked"),
                              ("Keep-Alive", "timeout=5"), ("Upgrade", "h2c"),
                              ("X-Ok", "1")])  # fmt: skip
    response = exchange(app, GET).responses()[0]
    assert response.header("Connection") == "close"
    assert response.header("Transfer-Encoding") is None
    assert response.header("Keep-Alive") is None and response.header("Upgrade") is None
    assert response.header("X-Ok") == "1" and response.body == b"hello"


def test_write_callable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "6")])
        write(b"abc")
        return [b"def"]

    ex = exchange(app, GET + GET, keepalive=True)
    assert [r.body for r in ex.responses()] == [b"abcdef", b"abcdef"]


def test_content_length_shorter_body_closes():
    app = stream_app([b"abc"], headers=[("Content-Length", "10")])
    ex = exchange(app, GET + GET, keepalive=True)
    assert ex.raw.endswith(b"abc")
    assert ex.results == [False]


def test_content_length_longer_body_truncated_and_closes():
    app = stream_app([b"abc", b"defgh"], headers=[("Content-Length", "4")])
    ex = exchange(app, GET + GET, keepalive=True)
    assert ex.raw.endswith(b"\r\n\r\nabcd")
    assert ex.results == [False]
    ex = exchange(simple_app(b"abcdef", headers=[("Content-Length", "2")]), GET + GET,
                  keepalive=True)  # fmt: skip
    assert ex.raw.endswith(b"\r\n\r\nab") and ex.results == [False]


def test_app_exception_gives_500_and_closes(caplog):
    recorder = Recorder([b"a", b"b"], fail_at=0)
    with caplog.at_level(logging.ERROR, logger="django_prefork.error"):
        ex = exchange(stream_app(None, recorder=recorder), GET + GET, keepalive=True)
    (response,) = ex.responses()
    assert response.status == 500 and response.header("Connection") == "close"
    assert recorder.closed
    assert ex.results == [False] and not ex.errors
    assert "Error handling request GET / HTTP/1.1" in caplog.text
    assert "boom in iteration" in caplog.text  # the traceback


def test_app_raising_before_returning_gives_500():
    def app(environ, start_response):
        raise ValueError("no")

    ex = exchange(app, GET + GET, keepalive=True)
    assert [r.status for r in ex.responses()] == [500]
    assert ex.results == [False] and not ex.errors


def test_app_exception_after_headers_sent_closes():
    recorder = Recorder([b"a", b"b", b"c"], fail_at=1)
    ex = exchange(stream_app(None, recorder=recorder), GET + GET, keepalive=True)
    assert ex.raw.startswith(b"HTTP/1.1 200 OK")
    assert b"500" not in ex.raw
    assert recorder.closed and ex.results == [False]


def test_exc_info_replaces_headers_before_sending():
    def app(environ, start_response):
        start_response("200 OK", [("X-A", "1")])
        try:
            raise RuntimeError("x")
        except RuntimeError:
            start_response("503 Service Unavailable", [("X-B", "2")], sys.exc_info())
        return [b"sorry"]

    response = exchange(app, GET).responses()[0]
    assert response.status == 503 and response.header("X-B") == "2"
    assert response.header("X-A") is None


def test_exc_info_after_headers_sent_reraises():
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise RuntimeError("late")
        except RuntimeError:
            start_response("500 Error", [], sys.exc_info())
        return [b"never"]  # pragma: no cover

    ex = exchange(app, GET + GET, keepalive=True)
    assert ex.raw.endswith(b"7\r\npartial\r\n")  # no last chunk: the client sees the cut
    assert ex.results == [False]


def test_start_response_twice_without_exc_info_is_an_error():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b""]  # pragma: no cover

    assert exchange(app, GET).responses()[0].status == 500


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Bad", "a\r\nSet-Cookie: evil=1")],
        [("X-Bad", "a\nb")],
        [("X-Bad", "a\x00b")],
        [("X-Bad\r\nX-Evil", "1")],
        [("Bad Name", "1")],
        [("X-Bad", "snowman ☃")],
        [("X-Bad", 1)],
        [("Content-Length", "12a")],
    ],
)
def test_invalid_response_header_gives_500(headers, caplog):
    recorder = Recorder([b"body"])
    with caplog.at_level(logging.ERROR, logger="django_prefork.error"):
        ex = exchange(stream_app(None, headers=headers, recorder=recorder), GET)
    (response,) = ex.responses()
    assert response.status == 500
    assert b"evil" not in ex.raw and b"Evil" not in ex.raw
    assert recorder.closed
    assert "X-Bad" in caplog.text or "Bad" in caplog.text or "Content-Length" in caplog.text


@pytest.mark.parametrize("status", ["OK", "2000 OK", "200\r\nX: y", 200, "099 Low"])
def test_invalid_status_gives_500(status):
    assert exchange(simple_app(status=status), GET).responses()[0].status == 500


def test_status_without_reason():
    assert exchange(simple_app(status="299"), GET).responses()[0].status == 299


def test_one_megabyte_download():
    data = os.urandom(1 << 20)
    ex = exchange(simple_app(data), GET)
    assert ex.responses()[0].body == data
    chunks = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    ex = exchange(stream_app(chunks), GET + GET, keepalive=True)
    assert [r.body for r in ex.responses()] == [data, data]


@pytest.fixture
def data_file():
    data = os.urandom(200_000)
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    yield f.name, data
    os.unlink(f.name)


def file_app(path, headers=(), offset=0):
    def app(environ, start_response):
        start_response("200 OK", list(headers))
        f = open(path, "rb")  # noqa: SIM115 - closed by the server through the wrapper
        f.seek(offset)
        return environ["wsgi.file_wrapper"](f, 8192)

    return app


def test_file_wrapper_uses_sendfile(data_file, monkeypatch):
    path, data = data_file
    calls = []
    real = HTTPConnection.sendfile

    def spy(self, file, offset, count):
        calls.append((offset, count))
        return real(self, file, offset, count)

    monkeypatch.setattr(HTTPConnection, "sendfile", spy)
    ex = exchange(file_app(path), GET + GET, keepalive=True)
    responses = ex.responses()
    assert [r.body == data for r in responses] == [True, True]
    assert responses[0].header("Content-Length") == str(len(data))
    assert calls == [(0, len(data)), (0, len(data))]
    # Honouring the app's Content-Length and the file position.
    calls.clear()
    ex = exchange(file_app(path, [("Content-Length", "1000")], offset=10), GET)
    assert ex.responses()[0].body == data[10:1010]
    assert calls == [(10, 1000)]


def test_file_wrapper_head_sends_no_body(data_file):
    path, data = data_file
    ex = exchange(file_app(path), HEAD + GET, keepalive=True)
    head, get = ex.responses(head_methods=(0,))
    assert head.header("Content-Length") == str(len(data)) and get.body == data


def test_file_wrapper_without_fileno_iterates():
    import io

    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 20000), 4096)

    ex = exchange(app, GET + GET, keepalive=True)
    assert [r.body for r in ex.responses()] == [b"x" * 20000] * 2


class TLSLikeSocket:
    """A socket as a TLS one looks to the core: do_handshake, no usable sendfile()."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str):
        if name == "sendfile":
            raise AttributeError(name)
        return getattr(self._sock, name)

    def do_handshake(self) -> None:  # pragma: no cover - never called
        pass


def test_file_wrapper_without_sendfile_iterates(data_file):
    path, data = data_file
    ex = exchange(file_app(path), GET, wrap=TLSLikeSocket)
    assert ex.responses()[0].body == data


def test_iterable_closed_on_success():
    recorder = Recorder([b"a"])
    exchange(stream_app(None, recorder=recorder), GET)
    assert recorder.closed


def test_client_disconnect_mid_response():
    closed = threading.Event()
    started = threading.Event()

    class Endless:
        def __iter__(self):
            started.set()
            while True:
                yield b"x" * 65536

        def close(self):
            closed.set()

    ctx = make_ctx(stream_app(None, recorder=Endless()), keepalive=True)
    client, server = socket.socketpair()
    server.settimeout(5)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx)
    out = []
    errors = []

    def serve():
        try:
            out.append(conn.handle_request())
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    client.sendall(GET)
    thread = threading.Thread(target=serve)
    thread.start()
    assert started.wait(5)
    client.recv(1000)
    client.close()
    thread.join(5)
    assert out == [False] and not errors
    assert closed.is_set()
    conn.close()


def test_client_disconnect_before_response_is_quiet(caplog):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"x" * 1000]

    ctx = make_ctx(app)
    client, server = socket.socketpair()
    server.settimeout(5)
    client.sendall(GET)
    client.close()
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx)
    with caplog.at_level(logging.ERROR, logger="django_prefork.error"):
        assert conn.handle_request() is False
    assert caplog.text == ""
    conn.close()


def test_idle_timeout_closes_quietly():
    ctx = make_ctx(simple_app(), keepalive=True)
    client, server = socket.socketpair()
    server.settimeout(0.05)
    conn = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx)
    assert conn.handle_request() is False
    client.sendall(b"GET / HTTP/1.1\r\n")  # mid-head timeout: also just close
    conn2 = HTTPConnection(server, ("127.0.0.1", 1), ("127.0.0.1", 2), ctx)
    assert conn2.handle_request() is False
    conn.close()
    client.close()


def test_access_log_called_with_status_and_bytes():
    calls = []

    class Log:
        def log(self, environ, status, headers, sent, request_time):
            calls.append((environ["PATH_INFO"], status, sent, request_time >= 0))

    ctx = make_ctx(simple_app(b"12345"), keepalive=True, access_log=Log())
    exchange(None, b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n", ctx=ctx)
    assert calls == [("/p", "200 OK", 5, True)]


def test_django_like_response_object_gets_content_length():
    class FakeDjangoResponse:
        streaming = False

        def __init__(self):
            self.closed = False

        def __iter__(self):
            return iter([b"<html>", b"</html>"])

        def close(self):
            self.closed = True

    response_obj = FakeDjangoResponse()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html")])
        return response_obj

    ex = exchange(app, GET + GET, keepalive=True)
    responses = ex.responses()
    assert responses[0].header("Content-Length") == "13"
    assert responses[0].body == b"<html></html>"
    assert response_obj.closed


@pytest.mark.parametrize("body", [["text"], iter(["text"]), [b"a", "b"]])
def test_str_body_is_an_app_error(body):
    def app(environ, start_response):
        start_response("200 OK", [])
        return body

    ex = exchange(app, GET + GET, keepalive=True)
    assert ex.results == [False]
    if isinstance(body, list) and len(body) == 2:  # the error comes after the first chunk
        assert ex.raw.startswith(b"HTTP/1.1 200 OK") and ex.raw.endswith(b"1\r\na\r\n")
    else:
        assert [r.status for r in ex.responses()] == [500]


def test_upgrade_request_served_as_plain_http():
    request = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ex = exchange(simple_app(b"no websockets"), request + GET, keepalive=True)
    assert [r.body for r in ex.responses()] == [b"no websockets"] * 2


class _CallLog:
    """A real socket that records the calls these tests look at: sendall and recv flags,
    shutdown, settimeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.calls: list[tuple[str, object]] = []

    def send(self, data: bytes, flags: int = 0) -> int:
        self.calls.append(("send", flags))
        return self._sock.send(data, flags)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self.calls.append(("sendall", flags))
        self._sock.sendall(data, flags)

    def sendmsg(self, buffers, ancdata=(), flags: int = 0) -> int:
        self.calls.append(("sendmsg", flags))
        return self._sock.sendmsg(buffers, ancdata, flags)

    def shutdown(self, how: int) -> None:
        self.calls.append(("shutdown", how))
        self._sock.shutdown(how)

    def recv(self, n: int, flags: int = 0) -> bytes:
        self.calls.append(("recv", flags))
        return self._sock.recv(n, flags)

    def settimeout(self, value) -> None:
        self.calls.append(("settimeout", value))
        self._sock.settimeout(value)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)

    def sends(self) -> list[tuple[str, object]]:
        return [call for call in self.calls
                if call[0] in ("send", "sendall", "sendmsg", "shutdown")]


def _serve_over_tcp(app, request: bytes, keepalive: bool):
    """One request over a real loopback TCP connection; (raw bytes received, recorded calls,
    whether the client saw EOF)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    accepted, addr = listener.accept()
    listener.close()
    accepted.settimeout(5)
    sock = _CallLog(accepted)
    conn = HTTPConnection(sock, addr, accepted.getsockname(), make_ctx(app, keepalive=keepalive))
    client.sendall(request)
    try:
        conn.handle_request()
        client.settimeout(5)
        raw = b""
        while not raw.endswith(b"hello"):  # every body here ends so
            data = client.recv(65536)
            if not data:
                break
            raw += data
        # Before our close(): a FIN can only have come with the response itself.
        client.setblocking(False)
        try:
            saw_eof = client.recv(1) == b""
        except BlockingIOError:
            saw_eof = False
    finally:
        conn.close()
        client.close()
    return raw, sock.sends(), saw_eof


@pytest.mark.skipif(not hasattr(socket, "MSG_MORE"), reason="MSG_MORE is Linux-only")
def test_closing_response_goes_out_with_the_fin():
    raw, calls, saw_eof = _serve_over_tcp(
        simple_app(b"hello"), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\nhello")
    assert b"Connection: close" in raw
    # One send() with MSG_MORE takes the short response whole; the FIN goes out with it.
    assert calls == [("send", socket.MSG_MORE), ("shutdown", socket.SHUT_WR)]
    assert saw_eof


def test_keep_alive_response_is_not_held_back():
    raw, calls, saw_eof = _serve_over_tcp(simple_app(b"hello"), GET, True)
    assert raw.endswith(b"hello") and b"Connection: close" not in raw
    assert calls == [("send", 0)]
    assert not saw_eof


BIG = b"x" * (100 * 1024) + b"hello"  # beyond JOIN_LIMIT: not joined with the head


@pytest.mark.skipif(not hasattr(socket, "MSG_MORE"), reason="MSG_MORE is Linux-only")
def test_large_closing_response_is_one_sendmsg_with_the_fin():
    raw, calls, saw_eof = _serve_over_tcp(
        simple_app(BIG), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\n" + BIG)
    # Head and body in one call, without a copy to join them; the FIN goes with them.
    assert calls == [("sendmsg", socket.MSG_MORE), ("shutdown", socket.SHUT_WR)]
    assert saw_eof


def test_large_keep_alive_response_is_one_sendmsg():
    raw, calls, saw_eof = _serve_over_tcp(simple_app(BIG), GET, True)
    assert raw.endswith(b"\r\n\r\n" + BIG) and b"Connection: close" not in raw
    assert calls == [("sendmsg", 0)]
    assert not saw_eof


def test_send_all_pair_sends_the_rest_when_the_kernel_takes_part():
    """send_all_pair: one sendmsg() when the kernel takes both, sendall() for what it left,
    whether it stopped in the first part or in the second."""
    from django_prefork.http.connection import send_all_pair

    class Partial:
        def __init__(self, takes: int) -> None:
            self.takes = takes
            self.calls: list[tuple[str, bytes, int]] = []

        def sendmsg(self, buffers, ancdata=(), flags: int = 0) -> int:
            self.calls.append(("sendmsg", b"".join(buffers), flags))
            return min(self.takes, sum(map(len, buffers)))

        def sendall(self, data: bytes, flags: int = 0) -> None:
            self.calls.append(("sendall", bytes(data), flags))

    sock = Partial(takes=2)
    send_all_pair(sock, b"head", b"body", 7)
    assert sock.calls == [("sendmsg", b"headbody", 7), ("sendall", b"ad", 7),
                          ("sendall", b"body", 7)]
    sock = Partial(takes=6)
    send_all_pair(sock, b"head", b"body")
    assert sock.calls == [("sendmsg", b"headbody", 0), ("sendall", b"dy", 0)]
    sock = Partial(takes=8)
    send_all_pair(sock, b"head", b"body")
    assert sock.calls == [("sendmsg", b"headbody", 0)]


# -- blocking sockets with kernel timeouts: the head is read with MSG_DONTWAIT first ------

def _blocking_pair() -> tuple[socket.socket, socket.socket]:
    """A socketpair whose server end is as the sync and gthread workers keep theirs: blocking,
    timeouts in the kernel."""
    from django_prefork.workers.base import set_kernel_timeouts

    client, server = socket.socketpair()
    client.settimeout(5)
    server.settimeout(None)
    set_kernel_timeouts(server, 5.0)
    return client, server


def _serve_one(request_pieces, pause: float, header_timeout: float, log=None) -> bytes:
    client, server = _blocking_pair()
    ctx = make_ctx(simple_app(b"hello"), header_timeout=header_timeout)
    ctx.recv_first = True
    sock = _CallLog(server)
    conn = HTTPConnection(sock, ("127.0.0.1", 5), ("127.0.0.1", 80), ctx)
    thread = threading.Thread(target=conn.handle_request, daemon=True)
    client.sendall(request_pieces[0])
    thread.start()
    for piece in request_pieces[1:]:
        threading.Event().wait(pause)
        client.sendall(piece)
    thread.join(10)
    conn.close()
    if log is not None:
        log.extend(sock.calls)
    raw = b""
    while data := client.recv(65536):
        raw += data
    client.close()
    assert not thread.is_alive()
    return raw


@pytest.mark.skipif(not hasattr(socket, "MSG_DONTWAIT"), reason="MSG_DONTWAIT")
def test_recv_first_whole_head_in_one_read():
    calls: list = []
    raw = _serve_one([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], 0, 1.0, calls)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"hello")
    reads = [call for call in calls if call[0] in ("recv", "settimeout")]
    assert reads == [("recv", socket.MSG_DONTWAIT)]  # no timeout switching at all


@pytest.mark.skipif(not hasattr(socket, "MSG_DONTWAIT"), reason="MSG_DONTWAIT")
def test_recv_first_partial_head_waits_for_the_rest():
    raw = _serve_one([b"GET / HTTP/1.1\r\nHo", b"st: x\r\n\r\n"], 0.1, 2.0)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"hello")


@pytest.mark.skipif(not hasattr(socket, "MSG_DONTWAIT"), reason="MSG_DONTWAIT")
def test_recv_first_partial_head_still_bounded_by_header_timeout():
    raw = _serve_one([b"GET / HTTP/1.1\r\nHo"], 0, 0.3)
    assert raw.startswith(b"HTTP/1.1 408 ")


def test_send_all_sends_the_rest_when_the_kernel_takes_part():
    """send_all: one send() when the kernel takes it all, sendall() for what it left."""
    from django_prefork.http.connection import send_all

    class Partial:
        def __init__(self) -> None:
            self.calls: list[tuple[str, bytes, int]] = []

        def send(self, data: bytes, flags: int = 0) -> int:
            self.calls.append(("send", bytes(data), flags))
            return 3

        def sendall(self, data: bytes, flags: int = 0) -> None:
            self.calls.append(("sendall", bytes(data), flags))

    sock = Partial()
    send_all(sock, b"abcdefgh", 7)
    assert sock.calls == [("send", b"abcdefgh", 7), ("sendall", b"defgh", 7)]
    sock = Partial()
    send_all(sock, b"abc")
    assert sock.calls == [("send", b"abc", 0)]
