"""Request parsing: httptools (llhttp) for the head's grammar, our policy on top.

llhttp is strict and fast but has no size limits and no pause: one `feed_data` call parses
every message in the buffer. So we never give it more than one head at a time:

* The head is found by us (`find_head_end`) and fed alone, after the size limits, the
  request line's shape and the HTTP version were checked on the raw bytes; a head is
  therefore never parsed together with a following message, and a parse error always
  belongs to the message being parsed.
* A Content-Length body is not fed to llhttp at all (`body.LengthReader` counts bytes).
* A chunked body is decoded by `ChunkedDecoder` (RFC 9112 §7.1), which stops exactly at the
  end of the message, so pipelined bytes stay in our buffer, and which bounds what llhttp
  cannot: chunk-size lines, the trailer section, the decoded size.

One parser is created per message (about 1 µs): no state carries over between requests.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httptools

from .errors import (
    BadRequest,
    BodyTooLarge,
    ExpectationFailed,
    HeaderFieldTooLong,
    HTTPError,
    InvalidBody,
    MethodNotImplemented,
    PayloadTooLarge,
    RequestLineTooLong,
    TooManyHeaders,
    UnsupportedTransferCoding,
    VersionNotSupported,
)

if TYPE_CHECKING:
    from .settings import CoreSettings

#: Head size cap whatever the limits (a limit of 0 included): memory stays bounded.
UNLIMITED_HEAD = 1 << 20


#: Chunk-size line cap when `limit_request_field_size` is 0.
UNLIMITED_CHUNK_LINE = 1 << 16


class Limits:
    """The request-size policy, and gunicorn's opt-in leniencies, read once from the settings."""

    __slots__ = ("body", "casefold_method", "chunk_line", "field_size", "fields", "lenient",
                 "line", "max_head", "obsolete_folding", "strip_header_spaces")

    def __init__(self, *, line: int, fields: int, field_size: int, body: int,
                 casefold_method: bool = False, obsolete_folding: bool = False,
                 strip_header_spaces: bool = False) -> None:
        self.line = line
        self.fields = fields
        self.field_size = field_size
        self.body = body  # 0: unlimited
        # gunicorn's casefold_http_method, permit_obsolete_folding, strip_header_spaces:
        # off by default, as in gunicorn; each rewrites the head before llhttp sees it.
        self.casefold_method = casefold_method
        self.obsolete_folding = obsolete_folding
        self.strip_header_spaces = strip_header_spaces
        self.lenient = casefold_method or obsolete_folding or strip_header_spaces
        if self.line and self.fields and self.field_size:
            # request line + every field line + CRLFs + the empty line, within the cap
            self.max_head = min(UNLIMITED_HEAD,
                                self.line + 2 + self.fields * (self.field_size + 2) + 2)
        else:
            self.max_head = UNLIMITED_HEAD
        # A chunk-size line (with extensions) is bounded like a field line.
        self.chunk_line = self.field_size or UNLIMITED_CHUNK_LINE

    @classmethod
    def from_settings(cls, settings: CoreSettings) -> Limits:
        return cls(
            line=settings.limit_request_line,
            fields=settings.limit_request_fields,
            field_size=settings.limit_request_field_size,
            body=settings.limit_request_body,
            casefold_method=settings.casefold_http_method,
            obsolete_folding=settings.permit_obsolete_folding,
            strip_header_spaces=settings.strip_header_spaces,
        )


class _Protocol:
    """Receives llhttp's callbacks for one head (llhttp never sees a body)."""

    __slots__ = ("headers", "headers_done", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True


class RequestHead:
    """The parsed request head, validated."""

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
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

    def request_line(self) -> str:
        """`GET /path HTTP/1.1`, for logs."""
        return f"{self.method} {self.target} HTTP/{self.version}"


def find_head_end(buf: bytes | bytearray, start: int, limits: Limits) -> int:
    """Index just after the head's CRLFCRLF in `buf`, or -1 if more bytes are needed.

    `start` is where to resume the search (bytes already scanned). Raises when the partial
    head already breaks a limit or a line-ending rule, so a client cannot make us buffer more
    than `max_head`, nor wait for a CRLFCRLF that bare LFs would never produce.
    """
    end = buf.find(b"\r\n\r\n", start)
    if end >= 0:
        return end + 4  # complete: llhttp checks the line endings (bare CR/LF, obs-fold)
    # Incomplete: look at the new bytes only (from one before `start`: a CRLF may straddle).
    s = start - 1 if start > 0 else 0
    if s and buf[s] == 10:
        s -= 1
    crlf = buf.count(b"\r\n", s)
    if buf.count(b"\n", s) != crlf:
        raise BadRequest("bare LF in the request head")  # RFC 9112 §2.2
    if buf.count(b"\r", s) - crlf > (buf[-1] == 13):
        raise BadRequest("bare CR in the request head")  # RFC 9112 §2.2
    line = limits.line
    nl = buf.find(b"\r\n")
    if nl < 0:
        if line and len(buf) > line + 1:  # +1: a trailing CR may start the CRLF
            raise RequestLineTooLong()  # RFC 9112 §3: 414 for a too long request line
        return -1
    if line and nl > line:
        raise RequestLineTooLong()
    size = limits.field_size
    # The line in progress, with its CRLF still to come (one CR of it may be here already),
    # counts as in parse_head: the CRLF is part of the limit.
    if size and len(buf) - buf.rfind(b"\n") - 1 > size - 1:
        raise HeaderFieldTooLong()  # RFC 6585 §5 (431), for the field line in progress
    if len(buf) > limits.max_head:
        raise HeaderFieldTooLong()
    return -1


def head_ready(buf: bytes | bytearray, limits: Limits) -> bool:
    """Whether `HTTPConnection.handle_request()` can run without waiting for more of a head.

    True for a complete head, and for bytes that already break a rule (too long, bare LF or
    CR, a second empty line first): the core then answers 4xx at once. For workers that wait
    for a head themselves (gthread, gevent) before handing the connection to the core.
    """
    if buf[:2] == b"\r\n":
        buf = buf[2:]  # the one empty line the core ignores
    if not buf:
        return False
    if buf[0] == 10 or buf[0] == 13:
        return len(buf) > 1 or buf[0] == 10
    try:
        return find_head_end(buf, 0, limits) > 0
    except HTTPError:
        return True


_METHODS: dict[bytes, str] = {}
_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
_CONNECTION_CLOSE = b"close"
_CONNECTION_KEEP_ALIVE = b"keep-alive"
_DIGITS_SET = frozenset(bytes([c]) for c in b"0123456789")
# RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [":" port] (reg-name, IPv4, IP-literal).
_HOST_CHARS = (b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
               b"-._~%!$&'()*+,;=:[]")  # fmt: skip


def _check_request_line(line: bytes) -> str:
    """Shape and version of the request line; the version ("1.0"/"1.1") if supported.

    llhttp accepts several spaces between the parts and answers unknown versions with a
    generic error; RFC 9112 §3 wants exactly `method SP request-target SP HTTP-version`
    and §2.3 a well-formed version we do not support gets 505 (RFC 9110 §15.6.6).
    """
    version = _VERSIONS.get(line[-3:])
    if version is not None and line[-9:-3] == b" HTTP/" and line.count(b" ") == 2:
        return version
    if line.count(b" ") != 2:
        raise BadRequest("request line is not method SP target SP version")  # RFC 9112 §3
    tail = line[-9:]
    if (
        tail[:6] == b" HTTP/"
        and tail[7:8] == b"."
        and tail[6:7] in _DIGITS_SET
        and tail[8:9] in _DIGITS_SET
    ):
        # RFC 9112 §2.3 says a 1.x with a higher minor SHOULD be served as 1.1; no HTTP/1.2
        # exists and only probes send one, so like 2.0 or 0.9 it gets 505 (docs/security.md).
        raise VersionNotSupported(tail[1:].decode("ascii"))
    raise BadRequest("malformed HTTP version")  # RFC 9112 §2.3: HTTP/DIGIT.DIGIT


#: An obs-fold: CRLF then SP/HTAB inside the field section (RFC 9112 §5.2).
_OBS_FOLD = re.compile(rb"\r\n[ \t]+")
#: Whitespace between a field name (a token, RFC 9110 §5.6.2) and its colon (RFC 9112 §5.1).
_SPACE_BEFORE_COLON = re.compile(rb"(\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]+:")


def _relax(data: bytes, nl: int, limits: Limits) -> bytes:
    """The head rewritten as the enabled leniencies allow; the limits were checked on the
    bytes as received, as gunicorn checks them.

    * casefold_http_method: the method upper-cased ("get" is served as GET).
    * permit_obsolete_folding: each obs-fold replaced by one SP, which RFC 9112 §5.2 lets
      a server do; a first field line that starts with whitespace is still refused (§2.2).
    * strip_header_spaces: "Name : value" read as "Name: value" (a smuggling risk, which
      is why RFC 9112 §5.1 says to reject it; gunicorn documents the same).
    """
    line, fields = data[:nl], data[nl:]  # fields starts with the request line's CRLF
    if limits.casefold_method:
        method, space, rest = line.partition(b" ")
        line = method.upper() + space + rest
    if limits.obsolete_folding:
        head, body_end = fields[:-4], fields[-4:]
        fields = head[:2] + _OBS_FOLD.sub(b" ", head[2:]) + body_end
    if limits.strip_header_spaces:
        fields = _SPACE_BEFORE_COLON.sub(rb"\1:", fields)
    return line + fields


def parse_head(data: bytes, limits: Limits) -> RequestHead:
    """Parse and validate one complete head (ends with CRLFCRLF, no leading empty lines).

    Raises an `HTTPError` subclass; the caller answers it and closes the connection.
    """
    # Size limits on the raw lines (llhttp has none).
    nl = data.find(b"\r\n")
    if limits.line and nl > limits.line:
        raise RequestLineTooLong()  # RFC 9112 §3 (414)
    size = limits.field_size
    if size and len(data) - nl - 4 > size:  # some field line may be too long: look closer
        for field_line in data[nl + 2 : -4].split(b"\r\n"):
            # gunicorn's documented rule: a field line and its CRLF count against the limit.
            if len(field_line) + 2 > size:
                raise HeaderFieldTooLong()  # RFC 6585 §5 (431)
    version = _check_request_line(data[:nl])
    if limits.lenient:
        data = _relax(data, nl, limits)

    protocol = _Protocol()
    parser = httptools.HttpRequestParser(protocol)
    # llhttp enforces the grammar: CRLF line ends, no bare CR/LF, no obs-fold
    # (RFC 9112 §2.2, §5.2), no whitespace between a field name and its colon (§5.1),
    # tokens for field names (RFC 9110 §5.1) and its list of registered methods (§9.1), no
    # control characters (NUL, BEL, DEL...) in field values (RFC 9110 §5.5) nor controls,
    # spaces or non-ASCII bytes in the request-target (RFC 9112 §3.2, RFC 3986),
    # digits-only and single Content-Length, no Content-Length with Transfer-Encoding
    # (RFC 9112 §6.3).
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
    host: bytes | None = None
    hosts = 0
    expect_continue = content_type = False
    close = keep_alive_token = False
    for name, value in headers:
        # Field names are tokens (checked by llhttp): a length test skips most of them.
        n = len(name)
        if n != 14 and n != 17 and n != 4 and n != 10 and n != 6 and n != 12:
            continue
        lname = name.lower()
        if lname == b"content-length":
            if content_length is not None:
                raise BadRequest("duplicate Content-Length")  # RFC 9112 §6.3 (5)
            value = value.strip(b" \t")
            # RFC 9110 §8.6 lets a recipient accept "5, 5"; we do not (docs/security.md).
            if not value.isdigit():
                raise BadRequest("invalid Content-Length")  # RFC 9110 §8.6: 1*DIGIT
            content_length = int(value)
        elif lname == b"transfer-encoding":
            if codings is None:
                codings = []
            codings.extend(c.strip(b" \t").lower() for c in value.split(b","))
        elif lname == b"content-type":
            # RFC 9110 §5.3, §8.3: a singleton field; two values could be read differently
            # by a proxy and the app (gunicorn refuses them too).
            if content_type:
                raise BadRequest("duplicate Content-Type")
            content_type = True
        elif lname == b"host":
            hosts += 1
            host = value
        elif lname == b"connection":
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == _CONNECTION_CLOSE:
                    close = True
                elif token == _CONNECTION_KEEP_ALIVE:
                    keep_alive_token = True
        elif lname == b"expect":
            # RFC 9110 §10.1.1: 100-continue is the only expectation defined; any other is
            # answered 417. A list ("100-continue, x") is another expectation too.
            if value.strip(b" \t").lower() != b"100-continue" or expect_continue:
                raise ExpectationFailed(value.decode("latin-1"))
            expect_continue = True

    if hosts > 1:
        raise BadRequest("duplicate Host")  # RFC 9112 §3.2
    if host is None:
        if version == "1.1":
            raise BadRequest("missing Host")  # RFC 9112 §3.2: HTTP/1.1 requires Host
    elif host.strip(b" \t").translate(None, _HOST_CHARS):
        raise BadRequest("invalid Host")  # RFC 9112 §3.2: 400 for an invalid Host value
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
    elif content_length and limits.body and content_length > limits.body:
        raise PayloadTooLarge()  # RFC 9110 §15.5.14 (413), before reading any of it

    head = RequestHead()
    head.method = method
    head.target = protocol.url.decode("latin-1")
    head.version = version
    head.headers = headers
    # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
    head.keep_alive = not close and (version == "1.1" or keep_alive_token)
    head.content_length = content_length or 0
    head.chunked = chunked
    # RFC 9110 §10.1.1: 100-continue is for HTTP/1.1 requests that carry content; a server
    # MUST ignore it in an HTTP/1.0 request.
    has_body = chunked or bool(content_length)
    head.expect_continue = expect_continue and version == "1.1" and has_body
    return head


# -- chunked bodies (RFC 9112 §7.1) ---------------------------------------------------------

_HEX = b"0123456789abcdefABCDEF"
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), the value a
# token or a quoted-string (RFC 9112 §7.1.1, RFC 9110 §5.6.4). Only run when ";" is present.
_CHUNK_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*[" + _TCHAR + rb"]+(?:[ \t]*=[ \t]*(?:[" + _TCHAR + rb"]+"
    rb'|"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"))?)+'
)
# field-line in a trailer section: token ":" OWS field-value OWS, no controls but HTAB
# (RFC 9112 §5, RFC 9110 §5.5); a leading SP/HTAB (obs-fold) does not match.
_TRAILER_FIELD = re.compile(rb"([" + _TCHAR + rb"]+):[\t\x20-\x7e\x80-\xff]*")
# RFC 9110 §6.5.1: fields that must not be sent in trailers (framing, routing, request
# modifiers, authentication, content metadata); a recipient is safest refusing them.
FORBIDDEN_TRAILERS = frozenset(
    (b"content-length", b"transfer-encoding", b"host", b"trailer", b"te", b"connection",
     b"keep-alive", b"upgrade", b"expect", b"content-type", b"content-encoding",
     b"content-range", b"range", b"if-match", b"if-none-match", b"if-modified-since",
     b"if-unmodified-since", b"if-range", b"cache-control", b"max-forwards", b"pragma",
     b"authorization", b"proxy-authorization", b"cookie", b"set-cookie")
)  # fmt: skip

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Strict, bounded decoding of a chunked body (RFC 9112 §7.1).

    `feed(data, out)` appends decoded bytes to `out` and returns how many bytes of `data`
    it used: it stops exactly at the end of the message, the rest belongs to the next one.
    Bounds: a chunk-size line is at most `limits.chunk_line` bytes, the trailer section at
    most `limits.fields` lines of `limits.field_size` bytes, the decoded total at most
    `limits.body` (if set). Raises `InvalidBody` (400) or `BodyTooLarge` (413).
    """

    __slots__ = ("_limits", "_line", "_remaining", "_state", "_trailers", "total")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._state = _SIZE
        self._line = b""  # a line (or the CRLF after data) received in pieces
        self._remaining = 0
        self._trailers = 0
        self.total = 0  # decoded bytes announced so far

    @property
    def done(self) -> bool:
        """The whole message was received."""
        return self._state == _DONE

    def feed(self, data: bytes, out: list[bytes]) -> int:
        pos = 0
        size = len(data)
        state = self._state
        while pos < size:
            if state == _DATA:
                take = self._remaining
                if take >= size - pos:
                    take = size - pos
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    state = _DATA_END
            elif state == _DATA_END:  # CRLF after chunk-data, maybe in pieces
                have = self._line
                piece = data[pos : pos + 2 - len(have)]
                pos += len(piece)
                have += piece
                if have != b"\r\n"[: len(have)]:
                    raise InvalidBody("chunk data not followed by CRLF")  # RFC 9112 §7.1
                if len(have) < 2:
                    self._line = have
                else:
                    self._line = b""
                    state = _SIZE
            elif state == _DONE:
                break
            else:  # _SIZE or _TRAILER: one line
                limit = self._limits.chunk_line if state == _SIZE else self._field_limit()
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self._line += data[pos:]
                    if len(self._line) > limit + 1:
                        raise self._too_long(state)
                    pos = size
                    break
                line = self._line + data[pos : nl + 1] if self._line else data[pos : nl + 1]
                self._line = b""
                pos = nl + 1
                if len(line) > limit + 2:
                    raise self._too_long(state)
                if line[-2:-1] != b"\r" or b"\r" in line[:-2]:
                    raise InvalidBody("bare CR or LF in a chunked body")  # RFC 9112 §2.2
                if state == _SIZE:
                    state = self._size_line(line[:-2])
                else:
                    state = self._trailer_line(line[:-2])
        self._state = state
        return pos

    def _field_limit(self) -> int:
        return self._limits.field_size or UNLIMITED_CHUNK_LINE

    @staticmethod
    def _too_long(state: int) -> InvalidBody:
        what = "chunk-size line" if state == _SIZE else "trailer field"
        return InvalidBody(f"{what} too long")

    def _size_line(self, line: bytes) -> int:
        semi = line.find(b";")
        if semi >= 0:
            if not _CHUNK_EXT.fullmatch(line, semi):
                raise InvalidBody("malformed chunk extension")  # RFC 9112 §7.1.1
            digits = line[:semi].rstrip(b" \t")  # BWS before ";"
        else:
            digits = line
        # chunk-size = 1*HEXDIG: no sign, no 0x, no spaces, bounded (no overflow).
        if not digits or digits.translate(None, _HEX):
            raise InvalidBody("invalid chunk size")
        if len(digits.lstrip(b"0")) > 15:
            raise InvalidBody("chunk size overflow")
        n = int(digits, 16)
        if not n:
            return _TRAILER  # last-chunk
        self.total += n
        body = self._limits.body
        if body and self.total > body:
            raise BodyTooLarge(f"chunked body larger than {body} bytes")  # 413
        self._remaining = n
        return _DATA

    def _trailer_line(self, line: bytes) -> int:
        if not line:
            return _DONE  # the empty line ends the message
        self._trailers += 1
        fields = self._limits.fields
        if fields and self._trailers > fields:
            raise InvalidBody("too many trailer fields")
        match = _TRAILER_FIELD.fullmatch(line)
        if match is None:
            raise InvalidBody("malformed trailer field")  # RFC 9112 §5, §7.1.2
        if match.group(1).lower() in FORBIDDEN_TRAILERS:
            raise InvalidBody(f"forbidden trailer field {match.group(1)!r}")  # RFC 9110 §6.5.1
        return _TRAILER
