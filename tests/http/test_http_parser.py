"""Request errors: exact status, Connection: close, the app never runs, nothing after is read."""

from __future__ import annotations

import pytest
from httphelpers import exchange, make_limits, simple_app

from django_prefork.http.errors import (
    BadRequest,
    HeaderFieldTooLong,
    RequestLineTooLong,
    status_for,
)
from django_prefork.http.parser import parse_head

GOOD = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


def refused(request: bytes, status: int, **kw) -> None:
    """`request` followed by a good one gets exactly one response: `status`, closed."""
    calls = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    ex = exchange(app, request + GOOD, keepalive=True, **kw)
    responses = ex.responses()
    assert [r.status for r in responses] == [status], ex.raw
    assert responses[0].header("Connection") == "close"
    assert responses[0].header("Date")
    assert calls == []  # neither the bad request nor the one after it reached the app
    assert ex.results == [False]
    assert not ex.errors


def test_request_line_too_long():
    refused(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)


def test_request_line_limit_is_configurable():
    refused(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, limit_request_line=50)
    ex = exchange(simple_app(), b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                  limit_request_line=0)  # fmt: skip
    assert ex.responses()[0].status == 200


def test_long_request_line_refused_before_its_end():
    # No CRLF ever: refused as soon as the limit is passed, not when the line ends.
    ex = exchange(simple_app(), b"GET /" + b"a" * 5000, shutdown=False)
    assert ex.responses()[0].status == 414


def test_too_many_headers():
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    refused(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", 431)
    refused(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n", 431, limit_request_fields=2)


def test_header_field_too_long():
    refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431)
    refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 60 + b"\r\n\r\n", 431,
            limit_request_field_size=50)  # fmt: skip


def test_long_header_refused_before_its_end():
    ex = exchange(simple_app(), b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 9000, shutdown=False)
    assert ex.responses()[0].status == 431


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", id="CL+TE"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n", id="TE+CL"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Content-Length: 3\r\n\r\nabc", id="duplicate-CL"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", id="CL-sign"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
                     id="CL-list"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="missing-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="duplicate-host"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"zz\r\nabc\r\n0\r\n\r\n", id="bad-chunk-size"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                     id="TE-not-chunked"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                     id="chunked-not-final"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="chunked-twice"),
        pytest.param(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                     id="TE-in-1.0"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", id="NUL-value"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x07b\r\n\r\n", id="BEL-value"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", id="DEL-value"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", id="CR-value"),
        pytest.param(b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", id="NUL-target"),
        pytest.param(b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n", id="DEL-target"),
        pytest.param(b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", id="CTL-target"),
        pytest.param(b"GET nopath HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-target"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", id="space-in-name"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: v\r\n folded\r\n\r\n", id="obs-fold"),
        pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", id="bare-LF"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[:-4] + b"\r\n\n\r\n\r\n",
                     id="bare-LF-end"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", id="tls-hello"),
    ],
)  # fmt: skip
def test_bad_request_400(request_bytes):
    refused(request_bytes, 400)


@pytest.mark.parametrize("te", [b"gzip, chunked", b"x-custom, chunked", b"identity, chunked"])
def test_unknown_transfer_coding_501(te):
    refused(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n0\r\n\r\n", 501)


def test_unknown_transfer_coding_in_two_fields_501():
    refused(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501)  # fmt: skip


def test_connect_501_and_bad_version_505():
    refused(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 501)
    refused(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)
    refused(b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505)


def test_http10_needs_no_host():
    ex = exchange(simple_app(), b"GET / HTTP/1.0\r\n\r\n")
    assert ex.responses()[0].status == 200


def test_one_leading_empty_line_ignored_a_second_refused():
    # RFC 9112 §2.2 asks to ignore at least one; we ignore exactly one (docs/security.md).
    ex = exchange(simple_app(), b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ex.responses()[0].status == 200
    refused(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400)


def test_head_split_across_many_reads():
    request = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"
    pieces = [request[i : i + 1] for i in range(len(request))]
    ex = exchange(simple_app(), pieces)
    assert ex.responses()[0].status == 200


def test_eof_mid_head_closes_silently():
    ex = exchange(simple_app(), b"GET / HTTP/1.1\r\nHost")
    assert ex.raw == b""
    assert ex.results == [False]


def test_parse_head_unit():
    limits = make_limits()
    head = parse_head(b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", limits)
    assert (head.method, head.target, head.version) == ("GET", "/a?b", "1.1")
    assert head.keep_alive is False
    assert head.request_line() == "GET /a?b HTTP/1.1"
    head = parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", limits)
    assert head.keep_alive is True
    head = parse_head(b"GET / HTTP/1.0\r\n\r\n", limits)
    assert head.keep_alive is False
    head = parse_head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n"
                      b"Expect: 100-continue\r\n\r\n", limits)  # fmt: skip
    assert head.content_length == 12 and head.expect_continue and not head.chunked
    with pytest.raises(RequestLineTooLong):
        parse_head(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                   make_limits(limit_request_line=20))
    with pytest.raises(HeaderFieldTooLong):
        parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"b" * 30 + b"\r\n\r\n",
                   make_limits(limit_request_field_size=20))  # fmt: skip
    with pytest.raises(BadRequest):
        parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", limits)


def test_status_table():
    assert status_for(BadRequest()) == 400
    assert status_for(RequestLineTooLong()) == 414
    assert status_for(ValueError()) == 500
