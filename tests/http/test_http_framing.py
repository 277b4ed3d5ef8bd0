"""Response framing and version through a real server, on every worker class.

A body of unknown length is chunked for every HTTP/1.1 client, whether the connection stays
open or not, so a response cut short (the app raised, the worker died) is seen as truncated:
curl exits 18 ("partial file"), where a close-delimited body would look complete. HTTP/1.0
clients get close-delimited bodies and an HTTP/1.0 status line.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from django_prefork import __version__
from server import Server

pytestmark = pytest.mark.integration

WORKER_ARGS = {
    "sync": ("--worker-class", "sync"),
    "gthread": ("--worker-class", "gthread", "--threads", "2"),
    "gevent": ("--worker-class", "gevent"),
}
CURL_PARTIAL_FILE = 18


@pytest.fixture(scope="module", params=list(WORKER_ARGS))
def server(request):
    srv = Server("--workers", "1", *WORKER_ARGS[request.param])
    try:
        srv.start(wait_workers=1, timeout=60)
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
def test_stream_that_breaks_is_seen_as_truncated(server, connection):
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "--max-time", "20", "-H", f"Connection: {connection}",
         f"http://{server.host}:{server.port}/stream_fail"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == CURL_PARTIAL_FILE, result
    # The worker lives on and serves the next request.
    assert server.get("/hello")[0] == 200


def test_whole_stream_is_chunked_on_a_closing_connection(server):
    raw = server.raw(b"GET /stream?chunks=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\nTransfer-Encoding: chunked" in head and b"\r\nConnection: close" in head
    assert body.endswith(b"0\r\n\r\n")


def test_http10_gets_http10_status_line_and_close_delimited_stream(server):
    raw = server.raw(b"GET /stream?chunks=2 HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Transfer-Encoding" not in head
    assert body == b"chunk 0\nchunk 1\n"


def test_server_software_carries_the_version(server):
    status, headers, body = server.get("/environ")
    assert status == 200
    assert json.loads(body)["SERVER_SOFTWARE"] == f"django-prefork/{__version__}"
    assert headers["server"] == "django-prefork"  # the response header stays version-free
