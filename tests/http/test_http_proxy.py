"""The PROXY protocol parser (django_prefork/http/proxy.py): pure functions over bytes."""

from __future__ import annotations

import socket
import struct

import pytest

from django_prefork.http.proxy import (
    NO_HEADER,
    V1_MAX,
    V2_SIGNATURE,
    InvalidProxyHeader,
    ProxyHeader,
    parse,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int, family: int, protocol: int, block: bytes, tlvs: bytes = b"",
       version: int = 2) -> bytes:
    body = block + tlvs
    return (V2_SIGNATURE + bytes([(version << 4) | command, (family << 4) | protocol])
            + struct.pack("!H", len(body)) + body)


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))


# -- v1 ----------------------------------------------------------------------------------

def test_v1_tcp4():
    header = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
    found = parse(header + REQUEST, "v1")
    assert found == ProxyHeader(len(header), 1, ("192.0.2.10", 56324), ("198.51.100.1", 443))


def test_v1_tcp6():
    header = b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n"
    found = parse(header, "auto")
    assert found is not None
    assert found.source == ("2001:db8::1", 1234)
    assert found.length == len(header)


def test_v1_unknown_keeps_the_peer():
    header = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"
    found = parse(header + REQUEST, "v1")
    assert found == ProxyHeader(len(header), 1)


@pytest.mark.parametrize("cut", [1, 5, 6, 20])
def test_v1_truncated_needs_more(cut):
    header = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
    assert parse(header[:cut], "v1") is None
    assert parse(header[:cut], "auto") is None


def test_v1_oversized():
    header = b"PROXY TCP6 " + b"1" * (V1_MAX - 11)
    with pytest.raises(InvalidProxyHeader, match="107"):
        parse(header, "v1")


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",  # a field missing
    b"PROXY TCP5 192.0.2.10 198.51.100.1 56324 443\r\n",  # unknown protocol
    b"PROXY TCP4 2001:db8::1 198.51.100.1 56324 443\r\n",  # family mismatch
    b"PROXY TCP4 192.0.2.10 198.51.100.1 056324 443\r\n",  # leading zero
    b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 443\r\n",  # port out of range
    b"PROXY TCP4 192.0.2.10 198.51.100.1 1 443\n",  # bare LF
    b"PROXY  TCP4 192.0.2.10 198.51.100.1 1 443\r\n",  # double space
])
def test_v1_malformed(line):
    with pytest.raises(InvalidProxyHeader):
        parse(line, "v1")


# -- v2 ----------------------------------------------------------------------------------

def test_v2_ipv4_with_tlvs_skipped():
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x03abc"
    header = v2(1, 1, 1, inet4("203.0.113.7", "10.0.0.1", 40000, 8000), tlvs)
    found = parse(header + REQUEST, "v2")
    assert found == ProxyHeader(len(header), 2, ("203.0.113.7", 40000), ("10.0.0.1", 8000))


def test_v2_ipv6():
    header = v2(1, 2, 1, inet6("2001:db8::7", "2001:db8::1", 5555, 443))
    found = parse(header, "auto")
    assert found is not None and found.source == ("2001:db8::7", 5555)


def test_v2_unix():
    block = b"/run/client.sock".ljust(108, b"\x00") + b"/run/server.sock".ljust(108, b"\x00")
    found = parse(v2(1, 3, 1, block), "v2")
    assert found is not None
    assert found.source == "/run/client.sock"
    assert found.destination == "/run/server.sock"


def test_v2_local_keeps_the_peer():
    header = v2(0, 0, 0, b"")
    assert parse(header + REQUEST, "v2") == ProxyHeader(16, 2)
    # LOCAL with an address block: skipped too (spec 2.2: the receiver ignores it)
    header = v2(0, 1, 1, inet4("1.2.3.4", "5.6.7.8", 1, 2))
    assert parse(header, "v2") == ProxyHeader(len(header), 2)


@pytest.mark.parametrize("cut", [1, 4, 12, 15, 16, 20])
def test_v2_truncated_needs_more(cut):
    header = v2(1, 1, 1, inet4("203.0.113.7", "10.0.0.1", 40000, 8000))
    assert parse(header[:cut], "v2") is None
    assert parse(header[:cut], "auto") is None


@pytest.mark.parametrize("header", [
    v2(1, 1, 1, inet4("1.2.3.4", "5.6.7.8", 1, 2), version=1),  # version 1 in binary
    v2(2, 1, 1, inet4("1.2.3.4", "5.6.7.8", 1, 2)),  # command 2
    v2(1, 4, 1, inet4("1.2.3.4", "5.6.7.8", 1, 2)),  # family 4
    v2(1, 2, 1, inet4("1.2.3.4", "5.6.7.8", 1, 2)),  # AF_INET6 with an IPv4-sized block
])
def test_v2_malformed(header):
    with pytest.raises(InvalidProxyHeader):
        parse(header, "v2")


def test_bad_signature():
    wrong = b"\r\n\r\n\x00\r\nQUIX\n" + b"\x21\x11\x00\x0c" + bytes(12)
    with pytest.raises(InvalidProxyHeader):
        parse(wrong, "v2")
    assert parse(wrong, "auto") is NO_HEADER  # auto: not a header, the HTTP core refuses it


# -- modes -------------------------------------------------------------------------------

def test_required_header_missing():
    with pytest.raises(InvalidProxyHeader, match="v1"):
        parse(REQUEST, "v1")
    with pytest.raises(InvalidProxyHeader, match="v2"):
        parse(REQUEST, "v2")


def test_v1_only_refuses_v2_and_the_reverse():
    with pytest.raises(InvalidProxyHeader):
        parse(v2(0, 0, 0, b""), "v1")
    with pytest.raises(InvalidProxyHeader):
        parse(b"PROXY UNKNOWN\r\n", "v2")


def test_auto_without_header():
    assert parse(REQUEST, "auto") is NO_HEADER
    assert parse(b"P", "auto") is None  # could still be "PROXY "
    assert parse(b"POST / HTTP/1.1\r\n", "auto") is NO_HEADER
