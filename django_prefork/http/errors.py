"""Errors of the HTTP core and the one table that maps them to a response status.

Request errors (`HTTPError` subclasses) are answered by the server itself with a short
response and `Connection: close`; the application never sees the request. Client-side
failures while the application runs (`ClientDisconnected`, `InvalidBody`) are `OSError`s, so
Django turns a failed `request.body` read into `UnreadablePostError`, as with gunicorn.
"""

from __future__ import annotations

from http import HTTPStatus

from .util import date_header


class HTTPError(Exception):
    """A request the server refuses before the application is called."""


class BadRequest(HTTPError):
    """Malformed request, or one that breaks a framing rule (smuggling defence)."""


class InvalidSchemeHeaders(BadRequest):
    """Trusted proxy headers disagree on the scheme (e.g. X-Forwarded-Proto vs -Ssl)."""


class RequestLineTooLong(HTTPError):
    """Request line longer than `limit_request_line`."""


class TooManyHeaders(HTTPError):
    """More header fields than `limit_request_fields`."""


class HeaderFieldTooLong(HTTPError):
    """A header line longer than `limit_request_field_size`."""


class MethodNotImplemented(HTTPError):
    """A method a WSGI server cannot serve (CONNECT)."""


class UnsupportedTransferCoding(HTTPError):
    """A transfer coding other than chunked, which we cannot decode."""


class VersionNotSupported(HTTPError):
    """A well-formed HTTP version other than 1.0 or 1.1 on the request line."""


class ExpectationFailed(HTTPError):
    """An Expect value other than 100-continue (RFC 9110 §10.1.1)."""


class RequestTimeout(HTTPError):
    """The request head did not arrive completely within `header_timeout`."""


class PayloadTooLarge(HTTPError):
    """Content-Length above `limit_request_body` (refused before the body is read)."""


class ClientDisconnected(ConnectionError):
    """The client went away (reset, broken pipe, EOF or timeout): costs only this request."""


class IncompleteBody(ClientDisconnected):
    """EOF before the end of the request body announced by its framing."""


class InvalidBody(OSError):
    """The chunked request body is malformed; seen by the application while it reads."""


class BodyTooLarge(InvalidBody):
    """A chunked body grew past `limit_request_body` while it was read."""


class ResponseError(Exception):
    """The application produced an invalid response (status, header, framing)."""


# The one table from error to status (most specific class first is not needed: lookup walks
# the exception's MRO, so a subclass may override its parent's entry).
STATUS_BY_ERROR: dict[type[BaseException], int] = {
    BadRequest: 400,
    InvalidSchemeHeaders: 400,
    InvalidBody: 400,
    BodyTooLarge: 413,
    PayloadTooLarge: 413,
    RequestTimeout: 408,
    ExpectationFailed: 417,
    RequestLineTooLong: 414,
    TooManyHeaders: 431,
    HeaderFieldTooLong: 431,
    MethodNotImplemented: 501,
    UnsupportedTransferCoding: 501,
    VersionNotSupported: 505,
    ResponseError: 500,
}


def status_for(exc: BaseException) -> int:
    """Status code for an error, 500 for anything not in the table."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


_RESPONSES: dict[tuple[int, bool], tuple[bytes, bytes, bytes]] = {}


def error_response(status: int, head_only: bool = False, http10: bool = False) -> bytes:
    """A short, complete response that closes the connection (static parts cached);
    `http10`: answer an HTTP/1.0 request in its version."""
    parts = _RESPONSES.get((status, http10))
    if parts is None:
        reason = HTTPStatus(status).phrase
        body = f"{reason}\n".encode("ascii")
        version = "HTTP/1.0" if http10 else "HTTP/1.1"
        head = (
            f"{version} {status} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Server: django-prefork\r\n"
        ).encode("ascii")
        parts = _RESPONSES[status, http10] = (head, b"\r\n", body)
    head, end, body = parts
    date = date_header().encode("ascii")
    return b"".join((head, date, end)) if head_only else b"".join((head, date, end, body))
