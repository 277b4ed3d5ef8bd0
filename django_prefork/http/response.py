"""The response side: start_response, status line and headers, framing, sendfile.

The server, not the application, decides framing and persistence: hop-by-hop headers from
the application are dropped, Content-Length is honoured exactly (a mismatch closes the
connection rather than desynchronising it), and the head goes out with the first body bytes
in one `sendall`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from typing import Any, Protocol

from .errors import ResponseError
from .util import date_header
from .wsgi import FileWrapper

#: Below this, a body chunk is copied to join it with its framing (one syscall); above, the
#: pieces are sent separately (no copy).
JOIN_LIMIT = 64 * 1024

# RFC 9110 §7.6.1: connection-specific fields are the server's business, not the app's.
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
     "proxy-connection")
)  # fmt: skip
_SPECIAL = _HOP_BY_HOP | {"content-length", "date", "server"}
_SERVER = "Server: django-prefork\r\n"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_GOOD_NAMES: set[str] = set()
# PEP 3333 status string -> (code, the status line after "HTTP/1.x ")
_STATUS: dict[str, tuple[int, bytes]] = {}
_VERSION_11 = b"HTTP/1.1 "
_VERSION_10 = b"HTTP/1.0 "


def _parse_status(status: Any) -> tuple[int, bytes]:
    """(code, status line without its version) of a PEP 3333 status string ("200 OK")."""
    if (
        type(status) is not str
        or len(status) < 3
        or not (status[:3].isdigit() and status[:3].isascii())
        or (len(status) > 3 and status[3] != " ")
        or not status.isprintable()
    ):
        raise ResponseError(f"invalid status {status!r}")
    try:
        line = f"{status if len(status) > 3 else status + ' '}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise ResponseError(f"invalid status {status!r}") from None
    code = int(status[:3])
    if code < 100:
        raise ResponseError(f"invalid status {status!r}")
    if len(_STATUS) < 256:
        _STATUS[status] = (code, line)
    return code, line


class Sink(Protocol):
    """Where a response goes (the connection), as `body.Source` is where a body comes from.

    The sink also answers the one question only the connection can answer when the head
    is built: may the connection carry another request after this response?
    """

    #: The socket can send files with sendfile() (plain TCP or unix, not TLS).
    can_sendfile: bool

    def send(self, data: bytes) -> None: ...

    def send_last(self, data: bytes) -> None:
        """Send the last bytes before the connection closes (with the FIN, if it can)."""

    def send_pair(self, first: bytes, second: bytes, last: bool) -> None:
        """Send a head and a body too large to join with it (JOIN_LIMIT), in one system call
        if it can; `last` as for send_last."""

    def sendfile(self, file: Any, offset: int, count: int) -> int:
        """Send `count` bytes of `file` from `offset`; the number sent."""

    def may_persist(self) -> bool:
        """The server's side of keep-alive, now: enabled, not draining, body finishable."""

    def head_sent(self) -> None:
        """The response has started: no 100 Continue, no error response any more."""


def _bad_header(headers: list[tuple[str, str]]) -> ResponseError:
    """Name the header that broke the fast check (the slow path, for the error log)."""
    for name, value in headers:
        if any(c in value for c in "\r\n\0"):
            return ResponseError(f"invalid value for response header {name!r}: {value!r}")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return ResponseError(f"response header {name!r} is not latin-1: {value!r}")
    return ResponseError("invalid response header")


class Response:
    """One response; `start_response` and `write` are handed to the application."""

    __slots__ = (
        "chunked",
        "head_request",
        "headers",
        "headers_sent",
        "http11",
        "keep_alive",
        "length",
        "mismatch",
        "must_close",
        "no_body",
        "sent",
        "sink",
        "status",
    )

    def __init__(self, sink: Sink, head_request: bool, http11: bool, requested_keep_alive: bool):
        self.sink = sink
        self.head_request = head_request
        self.http11 = http11
        #: The request's wish (RFC 9112 §9.3) until the head is built; then the decision.
        self.keep_alive = requested_keep_alive
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.chunked = False
        self.length: int | None = None
        self.no_body = False
        self.sent = 0  # body bytes sent (for the access log and the Content-Length check)
        self.must_close = False
        #: The app's body did not match its Content-Length (the caller logs it).
        self.mismatch = False

    # -- PEP 3333 ---------------------------------------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        """Record status and headers; they are sent with the first body bytes."""
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called again without exc_info")
        self.status = status
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:
        """The write() callable, also used for every chunk of the returned iterable."""
        if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"response body chunks must be bytes, not {type(data).__name__}")
        if not self.headers_sent:
            if not data:
                return
            self._send_first(data, None)
        elif data and not self.no_body:
            self._send_body(data)

    # -- driving the iterable ---------------------------------------------------------------

    def send_iterable(self, result: Any) -> None:
        """Send everything the application returned (the caller closes it)."""
        if type(result) is FileWrapper and self.sink.can_sendfile and self._send_file(result):
            return
        if not self.headers_sent:
            chunks = None
            if type(result) is list or type(result) is tuple:
                chunks = result
            elif getattr(result, "streaming", None) is False:
                chunks = list(result)  # a Django HttpResponse: its content is in memory already
            if chunks is not None and self.status is not None:
                total = 0
                for chunk in chunks:
                    if type(chunk) is not bytes:
                        total = -1  # let write() check the type
                        break
                    total += len(chunk)
                if total >= 0 and (len(chunks) == 1 or total <= JOIN_LIMIT):
                    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    self._send_first(data, total, last=True)
                    self.finish()
                    return
        for data in result:
            if data:
                self.write(data)
        self.finish()

    def finish(self) -> None:
        """End the body: the head if not yet sent, the last chunk, the length check."""
        if not self.headers_sent:
            if self.status is None:
                raise AssertionError("the application did not call start_response()")
            self._send_first(b"", 0, last=True)
        if self.chunked:
            if self.keep_alive:
                self.sink.send(b"0\r\n\r\n")
            else:
                self.sink.send_last(b"0\r\n\r\n")
        elif self.length is not None and self.sent != self.length and not self.no_body:
            self._mismatch()

    # -- internals --------------------------------------------------------------------------

    def _mismatch(self) -> None:
        self.must_close = True  # the client cannot find the next response: close
        self.mismatch = True

    def _build_head(self, total: int | None) -> bytes:
        """Status line and headers; `total` is the body length when the server knows it."""
        status = self.status
        cached = _STATUS.get(status)  # type: ignore[arg-type]
        code, status_line = cached if cached is not None else _parse_status(status)
        # The response's version is the request's (as gunicorn; RFC 9112 §2.3 would also
        # allow 1.1, but some HTTP/1.0 clients and monitors expect their own back).
        status_line = (_VERSION_11 if self.http11 else _VERSION_10) + status_line
        head_request = self.head_request
        no_body = head_request or code < 200 or code == 204 or code == 304  # RFC 9110 §6.4.1
        self.no_body = no_body

        length = None
        has_date = has_server = app_close = False
        framed = True
        parts = []
        for name, value in self.headers:
            if type(name) is not str or type(value) is not str:
                raise ResponseError(f"response header {name!r} is not a pair of str")
            if name not in _GOOD_NAMES:
                if not _TOKEN.fullmatch(name):
                    raise ResponseError(f"invalid response header name {name!r}")
                if len(_GOOD_NAMES) < 512:
                    _GOOD_NAMES.add(name)
            lname = name.lower()
            if lname in _SPECIAL:
                if lname == "content-length":
                    digits = value.strip()
                    if not (digits.isdigit() and digits.isascii()) or length is not None:
                        raise ResponseError(f"invalid Content-Length {value!r}")
                    length = int(digits)
                    if code < 200 or code == 204:
                        continue  # RFC 9110 §8.6: never in 1xx or 204
                elif lname == "date":
                    has_date = True
                elif lname == "server":
                    has_server = True
                else:
                    # Hop-by-hop (RFC 9110 §7.6.1): framing and persistence are the server's.
                    # The app's wish to close is honoured; the field is rewritten by us.
                    if lname == "connection" and "close" in value.lower():
                        app_close = True
                    continue
            parts.append(f"{name}: {value}\r\n")
        block = "".join(parts)
        n = len(parts)
        if block.count("\n") != n or block.count("\r") != n or "\0" in block:
            raise _bad_header(self.headers)  # CR/LF/NUL: response splitting (RFC 9110 §5.5)

        extra = []
        if not has_date:
            extra.append(date_header())  # RFC 9110 §6.6.1
        if not has_server:
            extra.append(_SERVER)

        if no_body:
            if length is None and total is not None and head_request and code not in (204, 304):
                extra.append(f"Content-Length: {total}\r\n")  # HEAD: what GET would say
        elif length is None:
            if total is not None:
                length = total
                extra.append(f"Content-Length: {total}\r\n")
            elif self.http11:
                framed = True
                # Chunked even when the connection closes after it: the last chunk marks the
                # end, so a response cut short (the app raised, the worker was killed) is
                # seen as truncated by the client (curl exits 18), not taken as complete.
                self.chunked = True
                extra.append("Transfer-Encoding: chunked\r\n")  # RFC 9112 §7.1
            else:
                framed = False  # HTTP/1.0: close-delimited (RFC 9112 §6.3 (8))
        self.length = length
        # The one keep-alive decision: the request's wish, the app's, the framing, and the
        # server's (setting, drain, body) asked now, when the head is built.
        keep = self.keep_alive and not app_close and framed and self.sink.may_persist()
        if not keep:
            extra.append("Connection: close\r\n")
        elif not self.http11:
            extra.append("Connection: keep-alive\r\n")  # RFC 9112 §9.3 (HTTP/1.0)
        self.keep_alive = keep
        extra.append("\r\n")
        try:
            return status_line + (block + "".join(extra)).encode("latin-1")
        except UnicodeEncodeError:
            raise _bad_header(self.headers) from None

    def _send_first(self, data: bytes, total: int | None, last: bool = False) -> None:
        """Send the head with the first body bytes; `last`: nothing follows them."""
        head = self._build_head(total)
        self.headers_sent = True
        sink = self.sink
        sink.head_sent()
        # The whole response in one piece on a connection that closes after it: the FIN
        # goes with it (HTTPConnection.send_last).
        last = last and not self.keep_alive and not self.chunked
        if self.no_body or not data:
            if last:
                sink.send_last(head)
            else:
                sink.send(head)
            return
        if self.chunked:
            size = len(data)
            self.sent = size
            if size < JOIN_LIMIT:
                self.sink.send(b"%b%x\r\n%b\r\n" % (head, size, data))
            else:
                self.sink.send(b"%b%x\r\n" % (head, size))
                self.sink.send(data)
                self.sink.send(b"\r\n")
            return
        length = self.length
        if length is not None and len(data) > length:
            data = data[:length]
            self.sent = len(data)
            self._mismatch()
        else:
            self.sent = len(data)
        if len(data) < JOIN_LIMIT:
            if last:
                sink.send_last(head + data)
            else:
                sink.send(head + data)
        else:
            sink.send_pair(head, data, last)

    def _send_body(self, data: bytes) -> None:
        if self.chunked:
            size = len(data)
            self.sent += size
            if size < JOIN_LIMIT:
                self.sink.send(b"%x\r\n%b\r\n" % (size, data))
            else:
                self.sink.send(b"%x\r\n" % size)
                self.sink.send(data)
                self.sink.send(b"\r\n")
            return
        length = self.length
        if length is not None:
            room = length - self.sent
            if len(data) > room:
                data = data[:room]
                self.sent += len(data)
                if data:
                    self.sink.send(data)
                if not self.must_close:
                    self._mismatch()
                return
        self.sent += len(data)
        self.sink.send(data)

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with sendfile(); False to fall back to iterating."""
        if self.status is None or self.headers_sent:
            return False
        filelike = wrapper.filelike
        if "b" not in getattr(filelike, "mode", "b"):
            return False
        try:
            st = os.fstat(filelike.fileno())
            offset = filelike.tell()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        size = max(0, st.st_size - offset)
        head = self._build_head(size)
        self.headers_sent = True
        self.sink.head_sent()
        self.sink.send(head)
        if self.no_body:
            return True
        count = size if self.length is None else min(self.length, size)
        if count:
            self.sent = self.sink.sendfile(filelike, offset, count)
        if self.length is not None and self.sent != self.length:
            self._mismatch()
        return True
