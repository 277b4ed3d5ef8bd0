"""Bind address parsing: every accepted form, its canonical spelling, and clear rejections."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import pytest
from test_command import run_command

from django_prefork.conf import BindSpec, ConfigError, load_config, parse_addrport, parse_bind
from server import Server, running


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


# -- umask and unix socket files ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (0o117, 0o117), ("0o117", 0o117), ("007", 0o007), ("0022", 0o022),
     ("0x3f", 0o77), ("18", 18), (" 0o777 ", 0o777)],
)
def test_umask_accepts_ints_and_gunicorn_text(value, expected):
    assert load_config({"UMASK": value}).umask == expected
    assert load_config({}, cli={"umask": str(value)}).umask == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [(-1, "from 0 to 0o777"), (0o1000, "from 0 to 0o777"), ("0o8", "not a number"),
     ("rw-", "not a number"), (True, "not a bool"), (1.5, "not float")],
)
def test_umask_rejects_with_one_line(value, words):
    with pytest.raises(ConfigError) as info:
        load_config({"UMASK": value})
    message = str(info.value)
    assert "\n" not in message
    assert "UMASK" in message and words in message and "0o117" in message


def test_umask_bad_value_on_the_command_line_exits_with_one_line():
    result = run_command("--umask", "0o9", "--check-config")
    assert result.returncode != 0
    assert "--umask" in result.stderr and "0o9" in result.stderr
    assert "Traceback" not in result.stderr


def _mode(path: Path) -> int:
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    return stat.S_IMODE(st.st_mode)


def _get_over_unix(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(str(path))
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.integration
@pytest.mark.parametrize(("args", "mode"), [(("--umask", "0o117"), 0o660),
                                            (("-m", "007"), 0o770),
                                            ((), 0o777)])
def test_umask_sets_the_unix_socket_mode(tmp_path, args, mode):
    path = tmp_path / "app.sock"
    previous = os.umask(0o022)  # the mode must come from --umask, not from ours
    try:
        server = Server(*args, bind=f"unix:{path}")
    finally:
        os.umask(previous)
    with server:
        server.start()
        assert _mode(path) == mode
        assert _get_over_unix(path).startswith(b"HTTP/1.1 200")


@pytest.mark.integration
def test_stale_socket_file_is_replaced(tmp_path):
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening, then closed: what a SIGKILL leaves
    stale.close()
    assert path.exists()
    with running(bind=f"unix:{path}") as server:
        assert "Listening at: unix:" in server.output
        assert _get_over_unix(path).endswith(b"Hello, world")
    assert not path.exists()


@pytest.mark.integration
def test_live_socket_is_refused_with_one_line(tmp_path):
    path = tmp_path / "app.sock"
    with running(bind=f"unix:{path}"):
        result = run_command("--bind", f"unix:{path}")
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "another server is listening on" in lines[0]
        # the running server still owns and serves its socket
        assert _get_over_unix(path).endswith(b"Hello, world")


@pytest.mark.integration
def test_a_regular_file_is_never_replaced(tmp_path):
    path = tmp_path / "app.sock"
    path.write_text("data")
    result = run_command("--bind", f"unix:{path}")
    assert result.returncode != 0
    assert "exists and is not a socket" in result.stderr
    assert path.read_text() == "data"


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_socket_file_is_removed_on_exit(tmp_path, sig):
    path = tmp_path / "app.sock"
    server = Server("--workers", "2", bind=f"unix:{path}")
    with server:
        server.start(wait_workers=2)
        assert path.exists()
        server.signal(sig)
        assert server.wait_exit(timeout=30) == 0
        assert not path.exists()
