"""PROXY protocol v1 and v2 end to end: header bytes sent by hand to `runprefork` on every
worker class; the test view reports the REMOTE_ADDR and REMOTE_PORT Django sees."""

from __future__ import annotations

import json
import socket
import struct

import pytest

from server import Server

pytestmark = pytest.mark.integration

WORKER_CLASSES = ["sync", "gthread", "gevent"]
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def v2_inet4(src: str, sport: int) -> bytes:
    block = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", sport, 80)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(block) + 7) + block + (
        b"\x04\x00\x04abcd")  # a TLV (PP2_TYPE_NOOP), skipped


def v2_inet6(src: str, sport: int) -> bytes:
    block = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1")
             + struct.pack("!HH", sport, 80))
    return V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", len(block)) + block


V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


def exchange(server: Server, *pieces: bytes) -> bytes:
    """Send `pieces` one send() each, read the answer to EOF."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        for piece in pieces:
            sock.sendall(piece)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def environ_of(reply: bytes) -> dict:
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    return json.loads(reply.partition(b"\r\n\r\n")[2])


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def auto_server(request):
    with Server("--workers", "1", "--worker-class", request.param,
                "--proxy-protocol", "auto") as server:
        server.start()
        yield server


def test_v1_header_sets_remote_addr(auto_server):
    reply = exchange(auto_server, b"PROXY TCP4 192.0.2.10 127.0.0.1 56324 80\r\n" + REQUEST)
    environ = environ_of(reply)
    assert environ["REMOTE_ADDR"] == "192.0.2.10"
    assert environ["REMOTE_PORT"] == "56324"


def test_v1_tcp6_header_in_pieces(auto_server):
    # The header split across segments, and the request after it in another one.
    reply = exchange(auto_server, b"PROXY TCP6 2001:db8", b"::5 ::1 4444 80\r\n", REQUEST)
    environ = environ_of(reply)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("2001:db8::5", "4444")


def test_v2_ipv4_header_sets_remote_addr(auto_server):
    environ = environ_of(exchange(auto_server, v2_inet4("203.0.113.7", 40000) + REQUEST))
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.7", "40000")


def test_v2_ipv6_header_split(auto_server):
    header = v2_inet6("2001:db8::9", 5555)
    environ = environ_of(exchange(auto_server, header[:10], header[10:], REQUEST))
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("2001:db8::9", "5555")


def test_v2_local_keeps_the_peer(auto_server):
    environ = environ_of(exchange(auto_server, V2_LOCAL + REQUEST))
    assert environ["REMOTE_ADDR"] == "127.0.0.1"


def test_auto_serves_a_connection_without_header(auto_server):
    environ = environ_of(exchange(auto_server, REQUEST))
    assert environ["REMOTE_ADDR"] == "127.0.0.1"


def test_malformed_header_gets_400_and_close(auto_server):
    reply = exchange(auto_server, b"PROXY TCP4 300.1.1.1 127.0.0.1 1 80\r\n" + REQUEST)
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert b"REMOTE_ADDR" not in reply  # the view never ran
    auto_server.wait_for_line(r"Invalid request from .*: 400 .*PROXY", timeout=20)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_required_header_and_untrusted_peer(worker_class):
    with Server("--workers", "1", "--worker-class", worker_class,
                "--proxy-protocol", "v2") as server:
        server.start()
        # v2 required: a plain request or a v1 header is refused
        assert exchange(server, REQUEST).startswith(b"HTTP/1.1 400 ")
        assert exchange(server, b"PROXY UNKNOWN\r\n" + REQUEST).startswith(b"HTTP/1.1 400 ")
        environ = environ_of(exchange(server, v2_inet4("198.51.100.3", 1234) + REQUEST))
        assert environ["REMOTE_ADDR"] == "198.51.100.3"
    with Server("--workers", "1", "--worker-class", worker_class,
                "--proxy-protocol", "v1", "--proxy-allow-from", "10.0.0.0/8") as server:
        server.start()
        # 127.0.0.1 is not in proxy_allow_ips: its header is refused, logged as rejected
        reply = exchange(server, b"PROXY TCP4 192.0.2.10 127.0.0.1 56324 80\r\n" + REQUEST)
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        server.wait_for_line(r"Invalid request from 127\.0\.0\.1.*400.*proxy_allow_ips",
                             timeout=20)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_header_must_arrive_within_header_timeout(worker_class):
    with Server("--workers", "1", "--worker-class", worker_class, "--proxy-protocol", "v1",
                "--header-timeout", "1") as server:
        server.start()
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            sock.sendall(b"PROXY TCP4 192.0.2.10")  # and nothing more
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        # closed by the server (408, or no answer at all), well before our 30 s timeout
        assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data
