"""Parse bind addresses (``--bind`` values and runserver's ADDRPORT) into ``BindSpec``.

Parsing happens here, at configuration time, so a typo is reported before any socket
exists; ``server/sockets.py`` only creates sockets from already valid specs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
from dataclasses import dataclass

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "BindSpec", "parse_addrport", "parse_bind"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

#: ``AF_UNIX`` is missing on some platforms (Windows); ``None`` there.
AF_UNIX = getattr(socket, "AF_UNIX", None)

# sockaddr_un.sun_path holds 108 bytes on Linux, 104 on the BSDs/macOS (NUL included).
_MAX_UNIX_PATH = 107 if sys.platform.startswith("linux") else 103

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")

_EXAMPLES = "127.0.0.1:8000, 0.0.0.0:8000, [::1]:8000, unix:/run/app.sock or fd://3"


@dataclass(frozen=True)
class BindSpec:
    """One address to listen on; ``str()`` gives the canonical spec (parses back equal)."""

    kind: str  # "tcp" | "unix" | "fd"
    host: str = ""  # tcp only; IPv6 without brackets
    port: int = 0  # tcp only; 0 = the kernel picks a free port
    path: str | None = None  # unix only
    fd: int | None = None  # fd only
    family: int | None = None  # AF_INET / AF_INET6 / AF_UNIX; None for an inherited fd

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int] | str | None:
        """The address to pass to ``socket.bind`` (None for an inherited fd)."""
        if self.kind == "tcp":
            return (self.host, self.port)
        if self.kind == "unix":
            return self.path
        return None


def _port(text: str, spec: str) -> int:
    """A port number 0..65535 written with ASCII digits only."""
    if not text:
        raise ValueError(f"bind address {spec!r} has an empty port after ':'")
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"bind address {spec!r} has a non-numeric port {text!r}")
    port = int(text)
    if port > 65535:
        raise ValueError(f"bind address {spec!r} has port {port}, outside 0-65535")
    return port


def _tcp_host(host: str, spec: str) -> tuple[str, int]:
    """Validate an unbracketed host (IPv4 literal or hostname); return (host, family)."""
    if not host:
        raise ValueError(
            f"bind address {spec!r} has an empty host; use 0.0.0.0 for all interfaces "
            f"or 127.0.0.1 for this machine only"
        )
    if all(part.isdigit() for part in host.rstrip(".").split(".")):
        try:
            return str(ipaddress.IPv4Address(host)), socket.AF_INET
        except ValueError:
            raise ValueError(
                f"bind address {spec!r} has an invalid IPv4 address {host!r}"
            ) from None
    if len(host) > 253 or not _HOSTNAME_RE.match(host):
        raise ValueError(f"bind address {spec!r} has an invalid host name {host!r}")
    return host, socket.AF_INET


def _ipv6(host: str, spec: str) -> str:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise ValueError(
            f"bind address {spec!r} has an invalid IPv6 address {host!r} in brackets"
        ) from None


def parse_bind(spec: str) -> BindSpec:
    """Parse one bind spec; raise ``ValueError`` with a message a user can act on.

    Accepted: ``HOST:PORT``, ``HOST`` (port 8000), ``PORT`` (host 127.0.0.1),
    ``[IPv6]:PORT``, ``[IPv6]``, ``unix:PATH`` and ``fd://N``.
    """
    if not isinstance(spec, str):
        raise ValueError(f"bind address must be a string, not {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ValueError(f"bind address is empty; use e.g. {_EXAMPLES}")

    if text.startswith("unix:"):
        path = text[len("unix://"):] if text.startswith("unix://") else text[len("unix:"):]
        if not path:
            raise ValueError(f"bind address {spec!r} has an empty unix socket path")
        if "\0" in path:
            raise ValueError(f"bind address {spec!r} contains a NUL character")
        if len(os.fsencode(path)) > _MAX_UNIX_PATH:
            raise ValueError(
                f"bind address {spec!r} has a unix socket path longer than "
                f"{_MAX_UNIX_PATH} bytes, the operating system's limit"
            )
        return BindSpec(kind="unix", path=path, family=AF_UNIX)

    if text.startswith("fd://"):
        num = text[len("fd://"):]
        if num.startswith("-") and num[1:].isdigit():
            raise ValueError(f"bind address {spec!r} has a negative file descriptor")
        if not (num.isascii() and num.isdigit()):
            raise ValueError(
                f"bind address {spec!r} needs a file descriptor number, like fd://3"
            )
        return BindSpec(kind="fd", fd=int(num), family=None)

    if text.startswith("tcp://"):  # accepted as gunicorn does
        text = text[len("tcp://"):]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"bind address {spec!r} has an unsupported scheme {scheme + '://'!r}; "
            f"use e.g. {_EXAMPLES}"
        )

    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise ValueError(f"bind address {spec!r} is missing the closing ']'")
        inner, rest = text[1:end], text[end + 1:]
        if not inner:
            raise ValueError(f"bind address {spec!r} has an empty host in brackets")
        if ":" not in inner:
            raise ValueError(
                f"bind address {spec!r}: brackets are only for IPv6 addresses, "
                f"write {inner}:PORT instead"
            )
        host = _ipv6(inner, spec)
        if not rest:
            return BindSpec(kind="tcp", host=host, port=DEFAULT_PORT, family=socket.AF_INET6)
        if not rest.startswith(":"):
            raise ValueError(f"bind address {spec!r} has unexpected text after ']'")
        port = _port(rest[1:], spec)
        return BindSpec(kind="tcp", host=host, port=port, family=socket.AF_INET6)

    colons = text.count(":")
    if colons > 1:
        raise ValueError(
            f"bind address {spec!r} looks like an IPv6 address; write it in brackets, "
            f"e.g. [::1]:8000"
        )
    if colons == 1:
        host_text, port_text = text.split(":")
        port = _port(port_text, spec)
        host, family = _tcp_host(host_text, spec)
        return BindSpec(kind="tcp", host=host, port=port, family=family)
    if text.isascii() and text.isdigit():
        return BindSpec(kind="tcp", host=DEFAULT_HOST, port=_port(text, spec),
                        family=socket.AF_INET)
    host, family = _tcp_host(text, spec)
    return BindSpec(kind="tcp", host=host, port=DEFAULT_PORT, family=family)


def parse_addrport(text: str) -> BindSpec:
    """Parse runserver's positional ADDRPORT (``8000``, ``0.0.0.0:8000``, ``[::1]:8000``).

    Same as one ``--bind``, plus runserver's ``0:PORT`` shorthand for ``0.0.0.0:PORT``.
    """
    if isinstance(text, str) and text.strip().startswith("0:"):
        text = "0.0.0.0" + text.strip()[1:]
    return parse_bind(text)
