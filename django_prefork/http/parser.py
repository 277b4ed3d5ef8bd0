"""Request parsing: httptools (llhttp) for the grammar, our policy on top.

llhttp is strict and fast but has no size limits and no pause: one `feed_data` call parses
every message in the buffer. So we never give it more than one message at a time:

* The head is found by us (`find_head_end`) and fed alone, after the size limits are checked
  on the raw bytes; a head is therefore never parsed together with a following message, and
  a parse error always belongs to the message being parsed.
* A Content-Length body is not fed to llhttp at all (`body.LengthReader` counts bytes).
* A chunked body is fed through the message's own parser, cut after every CRLFCRLF, the only
  place where a chunked message can end (last-chunk, trailers, CRLF: RFC 9112 §7.1), so the
  feed stops exactly at the end of the message and pipelined bytes stay in our buffer.

One parser is created per message (about 1 µs): no state carries over between requests.
"""

from __future__ import annotations

import httptools

from .errors import (
    BadRequest,
    HeaderFieldTooLong,
    MethodNotImplemented,
    RequestLineTooLong,
    TooManyHeaders,
    UnsupportedTransferCoding,
    VersionNotSupported,
)

#: Head size cap when a limit is 0 ("unlimited"): memory stays bounded anyway.
UNLIMITED_HEAD = 1 << 20


class Limits:
    """The request-size policy, read once from the config."""

    __slots__ = ("field_size", "fields", "line", "max_head")

    def __init__(self, line: int = 4094, fields: int = 100, field_size: int = 8190) -> None:
        self.line = int(line or 0)
        self.fields = int(fields or 0)
        self.field_size = int(field_size or 0)
        if self.line and self.fields and self.field_size:
            # request line + every field line + CRLFs + the empty line
            self.max_head = self.line + 2 + self.fields * (self.field_size + 2) + 2
        else:
            self.max_head = UNLIMITED_HEAD


class _Protocol:
    """Receives llhttp's callbacks for one message."""

    __slots__ = ("body", "complete", "headers", "headers_done", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:
        if self.complete:  # a second message in one feed: never happens by construction
            raise _Overrun

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # trailer fields are ignored, not merged (RFC 9112 §7.1.2)
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


class _Overrun(Exception):
    """llhttp started a next message inside one feed."""


class RequestHead:
    """The parsed request head, validated."""

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "parser",
        "protocol",
        "target",
        "version",
    )

    method: str
    target: str
    version: str  # "1.0" or "1.1"
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    content_length: int  # 0 when chunked or no body
    chunked: bool
    expect_continue: bool
    parser: httptools.HttpRequestParser  # kept for the chunked body
    protocol: _Protocol

    def request_line(self) -> str:
        """`GET /path HTTP/1.1`, for logs."""
        return f"{self.method} {self.target} HTTP/{self.version}"


def find_head_end(buf: bytes | bytearray, start: int, limits: Limits) -> int:
    """Index just after the head's CRLFCRLF in `buf`, or -1 if more bytes are needed.

    `start` is where to resume the search (bytes already scanned). Raises when the partial
    head already breaks a limit, so a client cannot make us buffer more than `max_head`.
    """
    end = buf.find(b"\r\n\r\n", start)
    if end >= 0:
        return end + 4
    line = limits.line
    nl = buf.find(b"\r\n")
    if nl < 0:
        if line and len(buf) > line + 1:  # +1: a trailing CR may start the CRLF
            raise RequestLineTooLong()  # RFC 9112 §3: 414 for a too long request line
        return -1
    if line and nl > line:
        raise RequestLineTooLong()
    size = limits.field_size
    if size and len(buf) - buf.rfind(b"\n") - 1 > size + 1:
        raise HeaderFieldTooLong()  # RFC 6585 §5 (431), for the field line in progress
    if len(buf) > limits.max_head:
        raise HeaderFieldTooLong()
    return -1


_METHODS: dict[bytes, str] = {}
_VERSIONS = {"1.1", "1.0"}
_CONNECTION_CLOSE = b"close"
_CONNECTION_KEEP_ALIVE = b"keep-alive"


def parse_head(data: bytes, limits: Limits) -> RequestHead:
    """Parse and validate one complete head (ends with CRLFCRLF, no leading empty lines).

    Raises an `HTTPError` subclass; the caller answers it and closes the connection.
    """
    # Size limits on the raw lines (llhttp has none).
    nl = data.find(b"\r\n")
    if limits.line and nl > limits.line:
        raise RequestLineTooLong()  # RFC 9112 §3 (414)
    size = limits.field_size
    if size and len(data) - nl - 6 > size:  # some field line may be too long: look closer
        for field_line in data[nl + 2 : -4].split(b"\r\n"):
            if len(field_line) > size:
                raise HeaderFieldTooLong()  # RFC 6585 §5 (431)

    protocol = _Protocol()
    parser = httptools.HttpRequestParser(protocol)
    # llhttp enforces the grammar: CRLF line ends, no bare CR/LF, no obs-fold
    # (RFC 9112 §2.2, §5.2), tokens for method and field names (RFC 9110 §5.1, §9.1), no
    # control characters (NUL, BEL, DEL...) in field values (RFC 9110 §5.5) or in the
    # request-target (RFC 9112 §3.2, RFC 3986), digits-only and single Content-Length, no
    # Content-Length with Transfer-Encoding (RFC 9112 §6.3), valid chunk sizes (§7.1).
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass  # Upgrade or CONNECT: parsed fine; WSGI cannot switch protocols (see below)
    except httptools.HttpParserCallbackError as exc:
        raise BadRequest(str(exc.__context__ or exc)) from None
    except httptools.HttpParserError as exc:
        raise BadRequest(str(exc)) from None
    if not protocol.headers_done:
        raise BadRequest("incomplete head")

    version = parser.get_http_version()
    if version not in _VERSIONS:
        raise VersionNotSupported(version)  # RFC 9110 §15.6.6 (505)
    raw_method = parser.get_method()
    method = _METHODS.get(raw_method)
    if method is None:
        method = raw_method.decode("ascii")
        if len(_METHODS) < 64:
            _METHODS[raw_method] = method
    if method == "CONNECT":
        raise MethodNotImplemented(method)  # RFC 9110 §9.3.6: a tunnel, not for WSGI (501)

    headers = protocol.headers
    if limits.fields and len(headers) > limits.fields:
        raise TooManyHeaders()  # RFC 6585 §5 (431)

    content_length: int | None = None
    codings: list[bytes] | None = None
    hosts = 0
    expect_continue = False
    close = keep_alive_token = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            if content_length is not None:
                raise BadRequest("duplicate Content-Length")  # RFC 9112 §6.3 (5)
            value = value.strip(b" \t")
            if not value.isdigit():
                raise BadRequest("invalid Content-Length")  # RFC 9110 §8.6: 1*DIGIT
            content_length = int(value)
        elif lname == b"transfer-encoding":
            if codings is None:
                codings = []
            codings.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif lname == b"host":
            hosts += 1
        elif lname == b"connection":
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == _CONNECTION_CLOSE:
                    close = True
                elif token == _CONNECTION_KEEP_ALIVE:
                    keep_alive_token = True
        elif lname == b"expect":
            expect_continue = value.strip(b" \t").lower() == b"100-continue"

    if hosts > 1:
        raise BadRequest("duplicate Host")  # RFC 9112 §3.2
    if not hosts and version == "1.1":
        raise BadRequest("missing Host")  # RFC 9112 §3.2: HTTP/1.1 requires Host
    chunked = False
    if codings is not None:
        if content_length is not None:
            raise BadRequest("Content-Length with Transfer-Encoding")  # RFC 9112 §6.1, §6.3 (3)
        if version == "1.0":
            raise BadRequest("Transfer-Encoding in HTTP/1.0")  # RFC 9112 §6.1: faulty framing
        if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            raise BadRequest("chunked is not the final transfer coding")  # RFC 9112 §6.3 (4)
        if len(codings) > 1:
            raise UnsupportedTransferCoding()  # RFC 9112 §6.1: unknown coding (501)
        chunked = True

    head = RequestHead()
    head.method = method
    head.target = protocol.url.decode("latin-1")
    head.version = version
    head.headers = headers
    # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
    head.keep_alive = not close and (version == "1.1" or keep_alive_token)
    head.content_length = content_length or 0
    head.chunked = chunked
    # RFC 9110 §10.1.1: 100-continue is for HTTP/1.1 requests that carry content.
    has_body = chunked or bool(content_length)
    head.expect_continue = expect_continue and version == "1.1" and has_body
    head.parser = parser
    head.protocol = protocol
    return head


def feed_chunked(head: RequestHead, data: bytes, tail: bytes) -> int:
    """Feed chunked body bytes to the message's parser, stopping at the end of the message.

    `tail` is the last 3 bytes fed before (a CRLFCRLF may straddle two reads). Returns how
    many bytes of `data` were consumed; the rest belongs to the next message. Decoded bytes
    land in `head.protocol.body`. Raises `httptools.HttpParserError` on a malformed body.
    """
    protocol = head.protocol
    feed = head.parser.feed_data
    pos = 0
    size = len(data)
    while pos < size and not protocol.complete:
        if pos == 0 and tail:
            probe = (tail + data[:3]).find(b"\r\n\r\n")
            cut = probe + 4 - len(tail) if probe >= 0 else -1
        else:
            cut = -1
        if cut < 0:
            cut = data.find(b"\r\n\r\n", pos)
            cut = size if cut < 0 else cut + 4
        try:
            feed(data[pos:cut] if pos or cut < size else data)
        except httptools.HttpParserUpgrade:
            pass  # llhttp pauses after a complete message that asked for an Upgrade
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Overrun):  # defensive; see _Protocol
                raise httptools.HttpParserError("message ended before CRLFCRLF") from None
            raise
        pos = cut
    return pos
