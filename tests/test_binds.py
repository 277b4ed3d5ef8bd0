"""Bind address parsing: every accepted form, its canonical spelling, and clear rejections."""

from __future__ import annotations

import socket

import pytest

from django_prefork.conf import BindSpec, parse_addrport, parse_bind


@pytest.mark.parametrize(
    ("spec", "host", "port", "family", "canonical"),
    [
        ("127.0.0.1:8000", "127.0.0.1", 8000, socket.AF_INET, "127.0.0.1:8000"),
        ("0.0.0.0:80", "0.0.0.0", 80, socket.AF_INET, "0.0.0.0:80"),
        ("localhost:0", "localhost", 0, socket.AF_INET, "localhost:0"),
        ("localhost", "localhost", 8000, socket.AF_INET, "localhost:8000"),
        ("example.com:443", "example.com", 443, socket.AF_INET, "example.com:443"),
        ("9000", "127.0.0.1", 9000, socket.AF_INET, "127.0.0.1:9000"),
        ("[::1]:8001", "::1", 8001, socket.AF_INET6, "[::1]:8001"),
        ("[::]:65535", "::", 65535, socket.AF_INET6, "[::]:65535"),
        ("[::1]", "::1", 8000, socket.AF_INET6, "[::1]:8000"),
        ("[0:0::1]:5", "::1", 5, socket.AF_INET6, "[::1]:5"),
        ("tcp://10.0.0.1:81", "10.0.0.1", 81, socket.AF_INET, "10.0.0.1:81"),
        ("  127.0.0.1:8000  ", "127.0.0.1", 8000, socket.AF_INET, "127.0.0.1:8000"),
    ],
)
def test_tcp_forms(spec, host, port, family, canonical):
    b = parse_bind(spec)
    assert (b.kind, b.host, b.port, b.family) == ("tcp", host, port, family)
    assert b.path is None and b.fd is None
    assert str(b) == canonical
    assert parse_bind(str(b)) == b  # canonical form parses back equal
    assert b.address == (host, port)


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ("unix:/tmp/app.sock", "/tmp/app.sock"),
        ("unix:run/app.sock", "run/app.sock"),
        ("unix:///tmp/app.sock", "/tmp/app.sock"),
    ],
)
def test_unix_forms(spec, path):
    b = parse_bind(spec)
    assert (b.kind, b.path, b.fd) == ("unix", path, None)
    assert b.family == socket.AF_UNIX
    assert str(b) == f"unix:{path}"
    assert parse_bind(str(b)) == b
    assert b.address == path


def test_fd_form():
    b = parse_bind("fd://3")
    assert (b.kind, b.fd, b.path, b.family) == ("fd", 3, None, None)
    assert str(b) == "fd://3"
    assert b.address is None
    assert parse_bind("fd://0").fd == 0


def test_bindspec_is_frozen_and_hashable():
    b = parse_bind("127.0.0.1:1")
    with pytest.raises(AttributeError):
        b.port = 2  # type: ignore[misc]
    assert {b, parse_bind("127.0.0.1:1")} == {b}
    assert isinstance(b, BindSpec)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("127.0.0.1:65536", "outside 0-65535"),
        ("127.0.0.1:99999999", "outside 0-65535"),
        ("127.0.0.1:-1", "non-numeric port"),
        ("127.0.0.1:http", "non-numeric port"),
        ("127.0.0.1:", "empty port"),
        (":8000", "empty host"),
        ("", "empty"),
        ("   ", "empty"),
        ("::1:8000", "brackets"),
        ("fe80::1", "brackets"),
        ("[::1", "closing ']'"),
        ("[::1]x", "after ']'"),
        ("[::1]:", "empty port"),
        ("[]:80", "empty host"),
        ("[localhost]:80", "only for IPv6"),
        ("[zz::1]:80", "invalid IPv6"),
        ("fd://abc", "fd://3"),
        ("fd://", "fd://3"),
        ("fd://-1", "negative"),
        ("unix:", "empty unix socket path"),
        ("unix:/tmp/" + "x" * 200, "longer than"),
        ("http://127.0.0.1:8000", "unsupported scheme"),
        ("256.1.1.1:80", "invalid IPv4"),
        ("bad host:80", "invalid host name"),
        ("0:8000", "invalid IPv4"),
    ],
)
def test_rejections(spec, words):
    with pytest.raises(ValueError) as info:
        parse_bind(spec)
    message = str(info.value)
    assert words in message
    assert "\n" not in message


def test_non_string_rejected():
    with pytest.raises(ValueError, match="must be a string"):
        parse_bind(8000)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("8000", "127.0.0.1:8000"),
        ("0.0.0.0:8000", "0.0.0.0:8000"),
        ("[::1]:8000", "[::1]:8000"),
        ("0:8000", "0.0.0.0:8000"),  # runserver's shorthand
        ("localhost:8001", "localhost:8001"),
    ],
)
def test_parse_addrport(text, canonical):
    assert str(parse_addrport(text)) == canonical


def test_parse_addrport_rejects_like_bind():
    with pytest.raises(ValueError, match="outside 0-65535"):
        parse_addrport("0.0.0.0:70000")
