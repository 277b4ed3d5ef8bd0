"""The PROXY protocol (HAProxy's, versions 1 and 2): who the client really is, read from the
first bytes of a connection that a TCP load balancer (HAProxy, AWS NLB, ...) opened to us.

Pure functions over bytes, as http/parser.py: the HTTP core feeds what it has received and
gets back "need more", "no header" (mode auto) or a parsed header with its length. The spec:
https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt (sections 2.1 and 2.2).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import BadRequest

#: The modes of the `proxy_protocol` setting (gunicorn's): off, one version required, or
#: either version or none at all (auto).
MODES = ("off", "v1", "v2", "auto")

#: A v1 header is at most 107 bytes with its CRLF (spec 2.1: "PROXY UNKNOWN" + the longest
#: TCP6 line).
V1_MAX = 107
V1_PREFIX = b"PROXY "
#: The v2 signature (spec 2.2): starts with CRLF CRLF NUL so that no HTTP request can.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16  # signature, version/command, family/protocol, length
_V2_FIXED = struct.Struct("!BBH")

# v2 address families (high nibble of byte 13) and the address block each needs.
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0, 1, 2, 3
_V2_ADDRESS_BYTES = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_CMD_LOCAL, _CMD_PROXY = 0, 1


class InvalidProxyHeader(BadRequest):
    """A PROXY header that is malformed, missing where required, or from an untrusted peer:
    400 and close, the application never sees the connection."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY header: `length` bytes to drop from the stream; `source` the real
    client's (address, port) or unix path, None when the header names none (v1 UNKNOWN,
    v2 LOCAL or AF_UNSPEC: the connection's own peer stands)."""

    length: int
    version: int
    source: tuple[str, int] | str | None = None
    destination: tuple[str, int] | str | None = None


#: Returned by `parse` in mode auto when the connection starts without a header.
NO_HEADER = ProxyHeader(0, 0)


def parse(data: bytes, mode: str) -> ProxyHeader | None:
    """The PROXY header at the start of `data`, NO_HEADER (auto, none sent), or None if more
    bytes are needed to tell. Raises InvalidProxyHeader for a malformed header, or a missing
    one in mode v1/v2."""
    if not data:
        return None
    v1 = mode in ("v1", "auto")
    v2 = mode in ("v2", "auto")
    if v2 and _starts(data, V2_SIGNATURE):
        return _parse_v2(data) if len(data) >= len(V2_SIGNATURE) else None
    if v1 and _starts(data, V1_PREFIX):
        return _parse_v1(data) if len(data) >= len(V1_PREFIX) else None
    if mode == "auto":
        return NO_HEADER
    raise InvalidProxyHeader(f"no PROXY protocol {mode} header")


def _starts(data: bytes, prefix: bytes) -> bool:
    """`data` begins with `prefix`, or is a beginning of it (more bytes will tell)."""
    n = min(len(data), len(prefix))
    return data[:n] == prefix[:n]


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise InvalidProxyHeader("PROXY v1 header longer than 107 bytes")
        if b"\n" in data:
            raise InvalidProxyHeader("PROXY v1 header not ended by CRLF")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidProxyHeader("PROXY v1 header is not ASCII") from None
    parts = line.split(" ")
    length = end + 2
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(length, 1)  # spec 2.1: the rest of the line is ignored
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise InvalidProxyHeader("malformed PROXY v1 header")
    _, proto, src, dst, sport, dport = parts
    version = ipaddress.IPv4Address if proto == "TCP4" else ipaddress.IPv6Address
    try:
        src_ip = version(src)
        dst_ip = version(dst)
    except ValueError:
        raise InvalidProxyHeader(f"PROXY v1 addresses are not {proto}") from None
    return ProxyHeader(length, 1, (str(src_ip), _port(sport)), (str(dst_ip), _port(dport)))


def _port(text: str) -> int:
    # spec 2.1: decimal, no leading zero, 0-65535
    if not (text.isascii() and text.isdigit()) or (len(text) > 1 and text[0] == "0"):
        raise InvalidProxyHeader("malformed PROXY v1 port")
    port = int(text)
    if port > 65535:
        raise InvalidProxyHeader("PROXY v1 port out of range")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_HEADER:
        return None
    ver_cmd, fam_proto, length = _V2_FIXED.unpack_from(data, 12)
    if ver_cmd >> 4 != 2:
        raise InvalidProxyHeader("PROXY v2 header with a version other than 2")
    command = ver_cmd & 0x0F
    if command not in (_CMD_LOCAL, _CMD_PROXY):
        raise InvalidProxyHeader("PROXY v2 header with an unknown command")
    family, protocol = fam_proto >> 4, fam_proto & 0x0F
    if family > _AF_UNIX or protocol > 2:
        raise InvalidProxyHeader("PROXY v2 header with an unknown address family")
    need = _V2_ADDRESS_BYTES.get(family, 0)
    if command == _CMD_PROXY and length < need:
        raise InvalidProxyHeader("PROXY v2 address block shorter than its family needs")
    total = V2_HEADER + length
    if len(data) < total:
        return None
    # LOCAL (health checks of the proxy itself) and UNSPEC keep the real peer (spec 2.2);
    # what follows the addresses (TLVs) is skipped.
    if command == _CMD_LOCAL or family == _AF_UNSPEC:
        return ProxyHeader(total, 2)
    block = data[V2_HEADER:V2_HEADER + need]
    if family == _AF_INET:
        src4, dst4, sport, dport = struct.unpack("!4s4sHH", block)
        return ProxyHeader(total, 2, (str(ipaddress.IPv4Address(src4)), sport),
                           (str(ipaddress.IPv4Address(dst4)), dport))
    if family == _AF_INET6:
        src6, dst6, sport, dport = struct.unpack("!16s16sHH", block)
        return ProxyHeader(total, 2, (str(ipaddress.IPv6Address(src6)), sport),
                           (str(ipaddress.IPv6Address(dst6)), dport))
    return ProxyHeader(total, 2, _unix_path(block[:108]), _unix_path(block[108:]))


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")
