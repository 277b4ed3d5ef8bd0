"""Chunked uploads reach Django views whole, on every worker class, in bounded memory.

A real server per worker class; http.client sends the body chunked; the view reads it as
Django does (CONTENT_LENGTH bytes) and answers its length and SHA-256. The 50 MB upload is
spooled to a temporary file by the core, so the worker's PSS, sampled from
/proc/PID/smaps_rollup while the upload runs, must grow by less than 20 MB.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from collections.abc import Iterator

import pytest

from server import Server

pytestmark = pytest.mark.integration

WORKER_ARGS = {
    "sync": ("--worker-class", "sync"),
    "gthread": ("--worker-class", "gthread", "--threads", "2"),
    "gevent": ("--worker-class", "gevent"),
}
PIECE = 64 * 1024
MB = 1 << 20


@pytest.fixture(scope="module", params=list(WORKER_ARGS))
def server(request):
    srv = Server("--workers", "1", "--timeout", "120", *WORKER_ARGS[request.param])
    try:
        srv.start(wait_workers=1, timeout=60)
        yield srv
    finally:
        srv.stop()


def pieces(size: int) -> Iterator[bytes]:
    block = (bytes(range(256)) * (PIECE // 256))
    sent = 0
    while sent < size:
        piece = block[: min(PIECE, size - sent)]
        sent += len(piece)
        yield piece


def expected(size: int) -> dict[str, object]:
    digest = hashlib.sha256()
    for piece in pieces(size):
        digest.update(piece)
    return {"length": size, "sha256": digest.hexdigest()}


def upload(server: Server, size: int, path: str) -> dict[str, object]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        conn.request("POST", path, body=pieces(size), encode_chunked=True,
                     headers={"Content-Type": "application/octet-stream",
                              "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body[:2000]
        return json.loads(body)
    finally:
        conn.close()


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise AssertionError(f"no Pss line for {pid}")


def worker_pid(server: Server) -> int:
    status, _, body = server.get("/pid")
    assert status == 200
    return int(body)


def test_300_kb_chunked_upload_reaches_request_body(server):
    size = 300 * 1024
    reply = upload(server, size, "/upload_stream?whole=1")
    assert {k: reply[k] for k in ("length", "sha256")} == expected(size)
    assert reply["content_length"] == str(size)
    assert reply["transfer_encoding"] is None


def test_50_mb_chunked_upload_in_bounded_memory(server):
    size = 50 * MB
    upload(server, 2 * MB, "/upload_stream")  # warm up: the spool file path, buffers
    pid = worker_pid(server)
    before = pss_kb(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            try:
                peak[0] = max(peak[0], pss_kb(pid))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        reply = upload(server, size, "/upload_stream")
    finally:
        done.set()
        sampler.join(10)
    peak[0] = max(peak[0], pss_kb(pid))
    assert {k: reply[k] for k in ("length", "sha256")} == expected(size)
    assert reply["content_length"] == str(size)
    growth_mb = (peak[0] - before) / 1024
    assert growth_mb < 20, f"worker PSS grew by {growth_mb:.1f} MB during a 50 MB upload"
    assert worker_pid(server) == pid  # the same worker served it and lives on


def test_chunked_multipart_upload_reaches_request_files(server):
    # What a browser-like client behind a streaming proxy sends: a form with a file, chunked.
    data = bytes(range(256)) * 12 * 100  # 300 KB: Django spools it to a temporary file
    boundary = b"----preforkboundary"
    form = (b"--" + boundary + b"\r\n"
            b'Content-Disposition: form-data; name="title"\r\n\r\nreport\r\n'
            b"--" + boundary + b"\r\n"
            b'Content-Disposition: form-data; name="doc"; filename="r.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
            b"--" + boundary + b"--\r\n")  # fmt: skip
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.request("POST", "/upload_files",
                     body=iter([form[i : i + PIECE] for i in range(0, len(form), PIECE)]),
                     encode_chunked=True,
                     headers={"Content-Type": "multipart/form-data; boundary="
                              + boundary.decode(), "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200, body[:2000]
    assert json.loads(body) == {
        "files": {"doc": {"name": "r.bin", "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()}},
        "fields": {"title": "report"},
    }
