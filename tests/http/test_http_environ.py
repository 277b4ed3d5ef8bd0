"""The PEP 3333 environ as Django needs it."""

from __future__ import annotations

import logging

import pytest
from httphelpers import exchange, make_ctx, make_settings

from django_prefork.http.connection import ServerContext
from django_prefork.http.wsgi import FileWrapper
from django_prefork.workers.inflight import RequestTracker


def environ_of(request: bytes, **kw) -> dict:
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        current = ctx.request_tracker.current()
        seen["_current"] = current.request_line if current else None
        start_response("200 OK", [])
        return [b""]

    ctx = make_ctx(app, keepalive=kw.pop("keepalive", False), **kw.pop("cfg", {}))
    ctx.request_tracker = RequestTracker()
    ex = exchange(app, request, ctx=ctx, **kw)
    assert ex.responses()[0].status == 200, ex.raw
    return seen


def test_basic_fields():
    env = environ_of(b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8000\r\n"
                     b"User-Agent: t\r\n\r\n")  # fmt: skip
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a/b"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["RAW_URI"] == "/a/b?x=1&y=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == "8000"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == "50000"
    assert env["HTTP_HOST"] == "example.com:8000"
    assert env["HTTP_USER_AGENT"] == "t"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is False and env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["wsgi.input"].read() == b""
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["_current"] == "GET /a/b?x=1&y=%20 HTTP/1.1"


def test_current_request_cleared_after():
    ctx_holder = {}

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    ctx = make_ctx(app)
    ctx.request_tracker = RequestTracker()
    ctx_holder["ctx"] = ctx
    exchange(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ctx=ctx)
    assert ctx.request_tracker.running() == []


def test_path_info_is_decoded_bytes_as_latin1():
    env = environ_of(b"GET /a%2Fb/caf%C3%A9?q=%2F HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == "/a/b/caf\xc3\xa9"  # WSGI: bytes decoded as latin-1
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/a/b/café"
    assert env["QUERY_STRING"] == "q=%2F"  # untouched
    assert env["RAW_URI"] == "/a%2Fb/caf%C3%A9?q=%2F"


def test_fragment_dropped():
    env = environ_of(b"GET /p?q=1#frag HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == "/p" and env["QUERY_STRING"] == "q=1"


def test_absolute_form_target():
    env = environ_of(b"GET http://example.org:81/p/q?z=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    assert env["PATH_INFO"] == "/p/q"
    assert env["QUERY_STRING"] == "z=1"
    assert env["HTTP_HOST"] == "example.org:81"  # RFC 9112 §3.2.2
    env = environ_of(b"GET https://example.org HTTP/1.1\r\nHost: other\r\n\r\n")
    assert env["PATH_INFO"] == "/" and env["HTTP_HOST"] == "example.org"


def test_headers_with_underscore_dropped_and_duplicates_joined():
    env = environ_of(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\n"
        b"X_Forwarded_For: 6.6.6.6\r\nAccept: a\r\nAccept: b\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\nX-Trailing: v  \r\n\r\n"
    )
    assert env["HTTP_X_FORWARDED_FOR"] == "1.1.1.1"
    assert env["HTTP_ACCEPT"] == "a, b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_TRAILING"] == "v"
    assert not any("6.6.6.6" in str(v) for v in env.values())


def test_content_type_and_length():
    env = environ_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 3\r\n\r\nabc")  # fmt: skip
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_http10_protocol():
    env = environ_of(b"GET / HTTP/1.0\r\n\r\n")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_unix_socket_addresses():
    env = environ_of(b"GET / HTTP/1.1\r\nHost: example.com:8443\r\n\r\n",
                     client_addr="", server_addr="/tmp/sock")  # fmt: skip
    assert env["SERVER_NAME"] == "example.com" and env["SERVER_PORT"] == "8443"
    assert env["REMOTE_ADDR"] == ""
    env = environ_of(b"GET / HTTP/1.0\r\n\r\n", client_addr="", server_addr="/tmp/sock")
    assert env["SERVER_NAME"] == "localhost" and env["SERVER_PORT"] == "80"
    env = environ_of(b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", client_addr=b"",
                     server_addr="/tmp/sock")  # fmt: skip
    assert env["SERVER_NAME"] == "[::1]" and env["SERVER_PORT"] == "80"


def test_ipv6_addresses():
    env = environ_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", client_addr=("::1", 4000, 0, 0),
                     server_addr=("::", 8000, 0, 0))  # fmt: skip
    assert env["REMOTE_ADDR"] == "::1" and env["REMOTE_PORT"] == "4000"
    assert env["SERVER_NAME"] == "::" and env["SERVER_PORT"] == "8000"


PROTO = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n"


def test_url_scheme_from_trusted_proxy():
    assert environ_of(PROTO)["wsgi.url_scheme"] == "https"
    env = environ_of(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Ssl: on\r\n\r\n")
    assert env["wsgi.url_scheme"] == "https"
    env = environ_of(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\n\r\n")
    assert env["wsgi.url_scheme"] == "http"


def test_url_scheme_ignored_from_untrusted_peer():
    env = environ_of(PROTO, client_addr=("10.0.0.5", 1234))
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https"  # still visible to the app


@pytest.mark.parametrize("allow", [["*"], ["10.0.0.0/8"], "10.0.0.5, 127.0.0.1"])
def test_forwarded_allow_ips_forms(allow):
    env = environ_of(PROTO, client_addr=("10.0.0.5", 1234), cfg={"forwarded_allow_ips": allow})
    assert env["wsgi.url_scheme"] == "https"


def test_unix_socket_peer_is_trusted():
    assert environ_of(PROTO, client_addr="", server_addr="/s")["wsgi.url_scheme"] == "https"


def test_underscore_variant_cannot_set_scheme():
    env = environ_of(b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_Proto: https\r\n\r\n")
    assert env["wsgi.url_scheme"] == "http"


def test_contradicting_scheme_headers_400():
    calls = []

    def app(environ, start_response):  # pragma: no cover - must not run
        calls.append(1)
        start_response("200 OK", [])
        return [b""]

    ex = exchange(app, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n"
                       b"X-Forwarded-Ssl: off\r\n\r\n")  # fmt: skip
    response = ex.responses()[0]
    assert response.status == 400 and response.header("Connection") == "close"
    assert calls == []
    # From an untrusted peer the headers mean nothing, so nothing contradicts.
    ex = exchange(app, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n"
                       b"X-Forwarded-Ssl: off\r\n\r\n", client_addr=("10.1.1.1", 1))  # fmt: skip
    assert ex.responses()[0].status == 200


def test_base_environ_script_name():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    ctx = ServerContext(app, make_settings(), base_environ={"SCRIPT_NAME": "/app"})
    exchange(app, b"GET /app/page HTTP/1.1\r\nHost: x\r\n\r\n", ctx=ctx)
    assert seen["SCRIPT_NAME"] == "/app" and seen["PATH_INFO"] == "/page"


def test_wsgi_errors_goes_to_error_log(caplog):
    def app(environ, start_response):
        environ["wsgi.errors"].write("something odd\n")
        environ["wsgi.errors"].flush()
        start_response("200 OK", [])
        return [b""]

    with caplog.at_level(logging.ERROR, logger="django_prefork.error"):
        exchange(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert "something odd" in caplog.text


def test_multithread_flag_from_ctx():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    ctx = ServerContext(app, make_settings(), multithread=True, multiprocess=False)
    exchange(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ctx=ctx)
    assert seen["wsgi.multithread"] is True and seen["wsgi.multiprocess"] is False


def test_wsgi_errors_writes_whole_lines_to_the_error_log(caplog):
    """print(..., file=environ['wsgi.errors']) writes text and newline separately."""
    import logging

    from django_prefork.logging import ErrorStream

    stream = ErrorStream(logging.getLogger("django_prefork.error"))
    with caplog.at_level(logging.INFO, logger="django_prefork.error"):
        print("half", "and half", file=stream)
        stream.write("no newline yet")
        stream.flush()
    messages = [r.getMessage() for r in caplog.records if r.name == "django_prefork.error"]
    assert messages == ["half and half", "no newline yet"]
