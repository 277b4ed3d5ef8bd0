"""Requests over real sockets to `runprefork` serving the test project (sync worker)."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from server import Server, wait_until
from testproject.views import pattern

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server():
    srv = Server("--workers", "2", "--timeout", "30")
    try:
        srv.start(wait_workers=2)
        yield srv
    finally:
        srv.stop()


def test_get(server):
    status, headers, body = server.get("/hello")
    assert status == 200
    assert body == b"Hello, world"
    assert headers["content-length"] == "12"
    assert headers["connection"] == "close"
    assert headers["server"] == "django-prefork"
    assert "date" in headers


def test_head_has_no_body(server):
    status, headers, body = server.request("HEAD", "/hello")
    assert status == 200
    assert body == b""
    assert headers["content-length"] == "12"


def test_post_content_length_body(server):
    status, _, body = server.request("POST", "/echo", body=b"name=value&x=1",
                                     headers={"Content-Type": "text/plain"})
    assert status == 200
    assert body == b"name=value&x=1"


def test_post_chunked_body(server):
    request = (
        b"POST /__wsgi__/echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
    )
    response = server.raw(request)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == b"hello, world"


def test_one_megabyte_upload(server):
    data = pattern(1024 * 1024)
    status, _, body = server.request("POST", "/upload", body=data,
                                     headers={"Content-Type": "application/octet-stream"})
    assert status == 200
    result = json.loads(body)
    assert result == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_one_megabyte_download(server):
    status, headers, body = server.get("/download?size=1048576")
    assert status == 200
    assert int(headers["content-length"]) == 1048576
    assert body == pattern(1048576)


def test_file_response_uses_file_wrapper(server):
    status, _, body = server.get("/file?size=300000")
    assert status == 200
    assert body == pattern(300000)


def test_streaming_response(server):
    status, _headers, body = server.get("/stream?chunks=4")
    assert status == 200
    assert body == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"


def test_static_file_through_whitenoise(server):
    status, headers, body = server.get("/static/testproject/site.css")
    assert status == 200
    assert headers["content-type"].startswith("text/css")
    assert b"#123456" in body


def test_environ(server):
    status, _, body = server.get("/environ?a=1&b=%20", headers={"X-Custom": "yes",
                                                                "X-Under_Score": "no"})
    assert status == 200
    environ = json.loads(body)
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(server.port)
    assert environ["PATH_INFO"] == "/environ"
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multiprocess"] is True
    assert environ["wsgi.multithread"] is False
    assert environ["headers"]["HTTP_X_CUSTOM"] == "yes"
    # A header with an underscore could spoof X-Under-Score: dropped, as runserver does.
    assert "HTTP_X_UNDER_SCORE" not in environ["headers"]


def test_django_view_exception_gives_500(server):
    assert server.get("/error")[0] == 500
    assert server.get("/hello")[0] == 200


def test_app_exception_gives_500_and_worker_survives(server):
    workers_before = server.worker_pids()
    status, headers, _ = server.get("/__wsgi__/raise")
    assert status == 500
    assert headers["connection"] == "close"
    # The same workers keep serving: nothing died.
    for _ in range(4):
        assert server.get("/hello")[0] == 200
    assert server.worker_pids() == workers_before
    wait_until(lambda: "boom: the WSGI app raised before start_response" in server.output,
               message="the traceback in the error log")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
         400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /hello HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101))
         + b"Host: x\r\n\r\n", 431),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    ],
    ids=["duplicate-content-length", "long-request-line", "too-many-headers",
         "header-too-large", "cl-and-te", "garbage", "no-host"],
)
def test_malformed_requests_get_4xx_and_close(server, raw, status):
    response = server.raw(raw)
    assert response.startswith(f"HTTP/1.1 {status} ".encode()), response[:200]
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in head
    # The connection was closed by the server (raw() read to EOF) and the server still serves.
    assert server.get("/hello")[0] == 200


def test_bytes_after_a_bad_request_are_not_served(server):
    smuggled = (b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    response = server.raw(smuggled)
    assert response.count(b"HTTP/1.1") == 1
    assert response.startswith(b"HTTP/1.1 400")


def test_client_disconnect_mid_request_costs_nothing(server):
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
    assert server.get("/hello")[0] == 200
