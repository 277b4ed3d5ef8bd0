"""Syslog for the server's two logs: gunicorn's address forms, facilities and line tags.

Stdlib only (no Django), so the settings validators and the gevent worker can import it.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys
from dataclasses import dataclass
from typing import TypeVar

# RFC 3164 section 4.1.1 facility codes, by the names gunicorn accepts.
FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

SYSLOG_PORT = 514


def default_syslog_address(platform: str = sys.platform) -> str:
    """Where the local syslog daemon listens, as gunicorn's per-platform default."""
    if platform == "darwin":
        return "unix:///var/run/syslog"
    if platform.startswith(("freebsd", "dragonfly")):
        return "unix:///var/run/log"
    if platform.startswith("openbsd"):
        return "unix:///dev/log"
    return "udp://localhost:514"


@dataclass(frozen=True)
class SyslogAddress:
    """A parsed ``syslog_addr``: a unix socket path, or a (host, port) over UDP or TCP."""

    kind: str  # "unix", "udp" or "tcp"
    path: str = ""
    host: str = ""
    port: int = SYSLOG_PORT
    #: for unix: SOCK_DGRAM or SOCK_STREAM when ``#dgram``/``#stream`` was given, else None
    #: (then the stdlib handler tries a datagram socket first, then a stream one)
    socktype: int | None = None

    def handler_args(self) -> tuple[str | tuple[str, int], int | None]:
        """``address`` and ``socktype`` for ``logging.handlers.SysLogHandler``."""
        if self.kind == "unix":
            return self.path, self.socktype
        kind = socket.SOCK_DGRAM if self.kind == "udp" else socket.SOCK_STREAM
        return (self.host, self.port), kind


def parse_syslog_address(text: str) -> SyslogAddress:
    """gunicorn's forms: ``unix://PATH[#dgram|#stream]``, ``udp://HOST[:PORT]``,
    ``tcp://HOST[:PORT]`` (port 514 when left out, host localhost when empty, IPv6 in
    brackets). Raises ValueError with a readable reason."""
    text = text.strip()
    if text.startswith("unix://"):
        path, _, kind = text[len("unix://"):].partition("#")
        if not path or "\0" in path:
            raise ValueError(f"{text!r} has no unix socket path")
        socktypes = {"": None, "dgram": socket.SOCK_DGRAM, "stream": socket.SOCK_STREAM}
        if kind not in socktypes:
            raise ValueError(f"{text!r} ends in #{kind}; the socket type is #dgram or #stream")
        return SyslogAddress("unix", path=path, socktype=socktypes[kind])
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("udp", "tcp"):
        raise ValueError(f"{text!r} is not a syslog address (unix://, udp:// or tcp://)")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket:
            raise ValueError(f"{text!r} opens an IPv6 '[' it does not close")
        if port_text and not port_text.startswith(":"):
            raise ValueError(f"{text!r} has text after ']' that is not ':PORT'")
        port_text = port_text[1:]
    else:
        host, _, port_text = rest.partition(":")
    port = SYSLOG_PORT
    if port_text:
        if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) <= 65535):
            raise ValueError(f"{text!r} has port {port_text!r}, not a number from 1 to 65535")
        port = int(port_text)
    return SyslogAddress(scheme, host=(host or "localhost").lower(), port=port)


def syslog_tag(prefix: str | None, log_name: str) -> str:
    """The RFC 3164 TAG of our lines: ``django-prefork[.PREFIX].error|access``.

    gunicorn writes ``gunicorn.PREFIX.error``; the structure is the same with our name.
    """
    return ".".join(part for part in ("django-prefork", prefix, log_name) if part)


def _probe_unix_socket(path: str, socktype: int | None) -> None:
    """Raise OSError unless a syslog daemon listens on ``path``.

    The stdlib handler ignores a failed connect at creation (as C's openlog() does) and
    then reports every record as a logging error; we would rather refuse the setting while
    the previous setup can still be kept.
    """
    last: OSError | None = None
    for kind in ([socktype] if socktype is not None else [socket.SOCK_DGRAM,
                                                          socket.SOCK_STREAM]):
        probe = socket.socket(socket.AF_UNIX, kind)
        try:
            probe.connect(path)
            return
        except OSError as exc:
            last = exc
        finally:
            probe.close()
    assert last is not None
    raise last


SysLogHandlerT = TypeVar("SysLogHandlerT", bound=logging.handlers.SysLogHandler)


def make_syslog_handler(address: str, facility: str, prefix: str | None, log_name: str,
                        handler_class: type[SysLogHandlerT]) -> SysLogHandlerT:
    """A connected SysLogHandler whose lines read ``<PRI>TAG: [PID] message``.

    Raises OSError when the socket cannot be opened or connected (a unix socket nobody
    listens on, a TCP daemon that refuses), so the caller can keep its previous setup.
    """
    parsed = parse_syslog_address(address)
    target, socktype = parsed.handler_args()
    if parsed.kind == "unix":
        _probe_unix_socket(parsed.path, socktype)
    handler = handler_class(
        address=target, facility=FACILITIES[facility], socktype=socktype)  # type: ignore[arg-type]
    tag = syslog_tag(prefix, log_name).replace("%", "%%")
    handler.setFormatter(logging.Formatter(f"{tag}: [%(process)d] %(message)s"))
    return handler
