"""One client connection: read ─► parse ─► environ ─► app ─► write.

Shared by every worker class: it only calls `recv`, `sendall`, `sendfile` and `close` on the
socket it is given (blocking, or gevent-cooperative), so concurrency stays the worker's job.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from typing import Any

from .body import Body, BodyCollector, ChunkedReader, LengthReader, SpooledReader, spool_chunked
from .errors import (
    BadRequest,
    ClientDisconnected,
    HTTPError,
    InvalidBody,
    RequestTimeout,
    error_response,
    status_for,
)
from .parser import Limits, RequestHead, find_head_end, parse_head
from .proxy import NO_HEADER, InvalidProxyHeader, ProxyHeader
from .proxy import parse as parse_proxy_header
from .rejectlog import RateLimitedWarnings, describe_peer, safe_reason
from .response import Response
from .settings import CoreSettings
from .util import header_environ_key
from .wsgi import (
    SERVER_SOFTWARE,
    ErrorStream,
    FileWrapper,
    build_environ,
    reads_content_length_only,
)

#: Bytes asked of one recv().
RECV_SIZE = 64 * 1024
#: Most unread body bytes discarded after a response to keep the connection alive.
DRAIN_LIMIT = 64 * 1024
#: A head must also arrive at HEAD_MIN_RATE bytes a second on average, after a grace of
#: HEAD_GRACE seconds (and always within `header_timeout`): a client trickling a head
#: (slowloris) is cut off in about half a second instead of holding a sync worker, which
#: serves one connection at a time, for the whole `header_timeout` (docs/security.md).
HEAD_GRACE = 0.5
HEAD_MIN_RATE = 1024


def head_time_left(started: float, received: int, header_timeout: float, now: float) -> float:
    """Seconds a client still has to complete a head it began receiving at `started`
    (monotonic), `received` bytes so far: the earlier of `header_timeout` and the
    minimum-rate deadline. Unbounded (inf) when `header_timeout` is 0."""
    if not header_timeout:
        return float("inf")
    earned = started + HEAD_GRACE + received / HEAD_MIN_RATE
    deadline = started + header_timeout
    return (deadline if deadline < earned else earned) - now

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MSG_MORE: int = getattr(socket, "MSG_MORE", 0)  # Linux
_MSG_WAITALL: int = getattr(socket, "MSG_WAITALL", 0)
_MSG_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
# Receive buffers kept for large bodies (recv_body_exact), at most this many per process
# (one per thread serving a large upload at the same moment, beyond that they come and go).
_SCRATCH: list[bytearray] = []
_SCRATCH_KEEP = 2
_UNSET = object()


class _EmptyInput(Body):
    """wsgi.input of a request without a body; stateless, so one instance serves all."""

    __slots__ = ()


_EMPTY_INPUT = _EmptyInput(None)


def send_all(sock: Any, data: bytes, flags: int = 0) -> None:
    """sock.sendall, in one send() when the kernel takes it all (a response head and a short
    body always fit): gevent's sendall asks the socket for SO_SNDBUF first, a getsockopt per
    response (3% of a gevent `Connection: close` request, bench/profile_worker.py)."""
    sent = sock.send(data, flags)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:], flags)


def send_all_pair(sock: Any, first: bytes, second: bytes, flags: int = 0) -> None:
    """first then second, in one sendmsg() when the kernel takes both.

    A response head and a body too large to join with it (response.JOIN_LIMIT) leave in one
    system call and without a segment of their own for the head, without the copy a join
    would make."""
    sent = sock.sendmsg((first, second), (), flags)
    if sent < len(first):
        sock.sendall(memoryview(first)[sent:], flags)
        sock.sendall(second, flags)
    elif sent < len(first) + len(second):
        sock.sendall(memoryview(second)[sent - len(first):], flags)


#: (TLS, raw) per socket class, for socket_kind.
_SOCKET_KINDS: dict[type, tuple[bool, bool]] = {}


def socket_kind(sock: Any) -> tuple[bool, bool]:
    """(is a TLS socket, is a raw socket that sendfile() may write to: never through TLS,
    stdlib or gevent). Found once per socket class: hasattr() of a missing attribute on a
    gevent socket goes through its __getattr__ and an AttributeError, 2.6 µs per
    connection."""
    kind = _SOCKET_KINDS.get(type(sock))
    if kind is None:
        tls = hasattr(sock, "do_handshake")
        kind = _SOCKET_KINDS[type(sock)] = (tls, hasattr(sock, "sendfile") and not tls)
    return kind


class ServerContext:
    """What every connection of a worker shares: the app, the settings read once, the logs."""

    def __init__(
        self,
        app: Any,
        settings: CoreSettings,
        access_log: Any = None,
        error_log: logging.Logger | None = None,
        multithread: bool = False,
        multiprocess: bool = True,
        keepalive: bool = False,
        base_environ: dict[str, Any] | None = None,
        recv_first: bool = False,
        recorder: Any = None,
        health_check: Any = None,
    ) -> None:
        self.app = app
        #: Metrics/StatsD (django_prefork.metrics.recorder.RequestRecorder), None when off:
        #: told of every connection and every request run here, for every worker class.
        self.recorder = recorder
        #: `(method, target) -> response bytes or None`: /-/live and /-/ready answered
        #: before the app (django_prefork.metrics.health), None when off.
        self.health_check = health_check
        #: Read a chunked body whole before calling the app, and give it a CONTENT_LENGTH:
        #: Django reads nothing without one (docs/http.md, "Chunked uploads").
        self.spool_chunked = reads_content_length_only(app)
        #: The workers' sockets are OS sockets in blocking mode (timeouts set in the kernel):
        #: a head is first read with MSG_DONTWAIT, without switching the socket to timeout
        #: mode (see HTTPConnection._read_head). Not for gevent's cooperative sockets.
        self.recv_first = recv_first and bool(_MSG_DONTWAIT)
        self.access_log = access_log
        self.error_log = error_log or logging.getLogger("django_prefork.error")
        #: One warning per rejected request, rate-limited per worker (issue 15.8).
        self.reject_log = RateLimitedWarnings(self.error_log)
        self.keepalive = bool(keepalive)
        self.draining = False
        #: Frees the bodies the app is done with (Django's requests are reference cycles).
        self.bodies = BodyCollector()
        #: Set by the worker (workers/inflight.py): `begin(conn)` and `end()` around each
        #: request, so the timeout watch knows which thread or greenlet runs which request.
        self.request_tracker: Any = None
        #: django_prefork.hooks.RequestHooks when pre_request/post_request is set, else None
        self.request_hooks: Any = None

        self.limits = Limits.from_settings(settings)
        #: Seconds to receive a complete head, from the start of handle_request (0 = none).
        self.header_timeout = settings.header_timeout
        self.header_map = settings.header_map
        #: False with --no-sendfile: files go out through send() (HTTPConnection.can_sendfile).
        self.use_sendfile = settings.sendfile
        #: Environ keys a trusted proxy may set by a header of the same name (SCRIPT_NAME).
        self.forwarder_headers = settings.forwarder_headers
        #: How a file goes out: `sock.sendfile(file, offset, count)` unless a worker class
        #: sets a function `(sock, file, offset, count) -> bytes sent` (gevent does).
        self.sendfile: Any = None

        #: Peers trusted to set the scheme headers (forwarded_allow_ips).
        self.forwarded_allow = AllowList(settings.forwarded_allow_ips)
        #: PROXY protocol (http/proxy.py): "off", "v1", "v2" or "auto", and the peers allowed
        #: to send a header (proxy_allow_ips).
        self.proxy_protocol = settings.proxy_protocol
        self.proxy_allow = AllowList(settings.proxy_allow_ips)
        #: The server's ssl.SSLContext when TLS is on (http/tls.py), else None: set by the
        #: worker, which wraps each accepted socket with it before the core sees it.
        self.tls: Any = None
        # (environ key, lower-case value meaning https); names with "_" never reach the
        # environ under the default header_map, so such a setting would never match.
        self.scheme_headers = tuple(
            (header_environ_key(name), value.strip().lower())
            for name, value in settings.secure_scheme_headers
        )

        self.base_environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.errors": ErrorStream(self.error_log),
            "wsgi.multithread": bool(multithread),
            "wsgi.multiprocess": bool(multiprocess),
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SCRIPT_NAME": "",
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
        }
        if base_environ:
            self.base_environ.update(base_environ)

    def is_trusted(self, client_addr: Any) -> bool:
        """Whether the peer may set the scheme headers (a trusted proxy)."""
        return client_addr in self.forwarded_allow


class AllowList:
    """`*`, IP addresses and networks (forwarded_allow_ips, proxy_allow_ips). A unix socket's
    peer is local and always allowed, as gunicorn."""

    __slots__ = ("all", "ips", "networks")

    def __init__(self, allow: Any) -> None:
        self.all = "*" in allow
        self.ips = frozenset(a for a in allow if "/" not in a)
        self.networks = tuple(ipaddress.ip_network(a, strict=False) for a in allow if "/" in a)

    def __contains__(self, client_addr: Any) -> bool:
        if self.all or not isinstance(client_addr, tuple):
            return True
        host = client_addr[0]
        if host in self.ips:
            return True
        if self.networks:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(ip in net for net in self.networks)
        return False


class HTTPConnection:
    """An accepted client socket; `handle_request()` serves one request at a time."""

    __slots__ = (
        "_base",
        "_buf",
        "_closed",
        "_expect_continue",
        "_reader",
        "_trusted",
        "_unix",
        "can_sendfile",
        "can_sendmsg",
        "client_addr",
        "closing",
        "ctx",
        "plain_tcp",
        "proxy_pending",
        "recv_first",
        "request_line",
        "response_started",
        "server_addr",
        "sock",
        "tls",
    )

    def __init__(self, sock: Any, client_addr: Any, server_addr: Any, ctx: ServerContext):
        self.sock = sock
        self.client_addr = client_addr
        self.server_addr = server_addr
        self.ctx = ctx
        self._buf = b""
        self._closed = False
        self._expect_continue = False
        self._reader: LengthReader | ChunkedReader | SpooledReader | None = None
        self._trusted: bool | None = None
        self.request_line = ""
        self.response_started = False
        #: Set by the worker: the next response is this connection's last (`Connection:
        #: close`), e.g. gthread shedding keep-alive connections at `worker_connections`.
        self.closing = False
        #: A TLS socket (the worker wrapped it, http/tls.py): https in the environ.
        self.tls, raw_socket = socket_kind(sock)
        self.can_sendfile = raw_socket and ctx.use_sendfile  # --no-sendfile
        self.can_sendmsg = raw_socket  # TLS sockets have no sendmsg()
        # A TCP socket without TLS: send/recv flags are allowed (TLS sockets refuse them) and
        # there are segments to merge (send_last, recv_body_exact).
        self.plain_tcp = raw_socket and isinstance(server_addr, tuple)
        #: A first head may be tried with MSG_DONTWAIT (not on TLS sockets: no flags there).
        self.recv_first = ctx.recv_first and raw_socket
        #: The PROXY header (http/proxy.py) is still to come: it precedes the first request.
        self.proxy_pending = ctx.proxy_protocol != "off"

        base = ctx.base_environ.copy()
        self._unix = not isinstance(server_addr, tuple)
        if not self._unix:
            base["SERVER_NAME"] = str(server_addr[0])
            base["SERVER_PORT"] = str(server_addr[1])
        if isinstance(client_addr, tuple):
            base["REMOTE_ADDR"] = str(client_addr[0])
            base["REMOTE_PORT"] = str(client_addr[1])
        else:  # unix socket: peers are usually unnamed
            if isinstance(client_addr, bytes):
                client_addr = client_addr.decode("utf-8", "replace")
            base["REMOTE_ADDR"] = client_addr or ""
            base["REMOTE_PORT"] = ""
        self._base = base
        if ctx.recorder is not None:
            ctx.recorder.connection_accepted()

    # -- the request cycle ------------------------------------------------------------------

    def handle_request(self) -> bool:
        """Serve one request; True if the connection may carry another one. Never raises
        for client or application errors (only BaseExceptions such as a gevent Timeout)."""
        ctx = self.ctx
        try:
            head = self._read_head()
            if head is None:
                return False  # EOF or idle timeout before a request
            if ctx.health_check is not None:
                answer = ctx.health_check(head.method, head.target)
                if answer is not None:
                    self._send_quietly(answer)
                    return False
            environ = self._prepare(head)
        except HTTPError as exc:
            self._refuse(exc)
            return False
        except InvalidBody as exc:  # a bad chunk that arrived with the head
            self._refuse(exc)
            return False
        except OSError:  # reset, timeout mid-head (ClientDisconnected is one too)
            return False
        self.request_line = head.request_line()
        tracker = ctx.request_tracker
        if tracker is not None:
            tracker.begin(self)
        reader = self._reader  # (_run forgets it once the body is finished)
        try:
            return self._run(environ, head)
        finally:
            if tracker is not None:
                tracker.end()
            if type(reader) is LengthReader:
                ctx.bodies.add(head.content_length - reader.remaining)
            elif type(reader) is SpooledReader:
                ctx.bodies.add(reader.length)
                reader.close()

    def _read_head(self) -> RequestHead | None:
        """Read until a complete head is buffered; None at EOF or timeout before any byte.

        The whole head must arrive within `header_timeout` (from this call), and at the
        minimum rate (`head_time_left`): each recv waits at most what is left (never longer
        than the socket's own timeout), so a client trickling bytes cannot hold the
        connection. A timeout with part of a head
        received is a 408 (RFC 9110 §15.5.9); with nothing received, the connection is
        just closed (an idle keep-alive or pre-opened connection is not an error).
        """
        buf: bytes | bytearray = self._buf
        limits = self.ctx.limits
        scanned = 0
        sock = self.sock
        recv = sock.recv
        if not buf and self.recv_first:
            # The request is usually here already: take it without the timeout dance below
            # (settimeout, poll, recv, settimeout back: three more syscalls per request; sync
            # wsgi-hello: see docs/benchmarks.md). If it is not, wait as below.
            try:
                buf = recv(RECV_SIZE, _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                buf = b""
            except OSError:
                return None  # reset before a request: just close
            else:
                if not buf:
                    return None  # EOF before a request
        timeout = self.ctx.header_timeout
        started = time.monotonic()
        original: Any = _UNSET
        changed = skipped = False
        try:
            while True:
                if buf and self.proxy_pending:
                    found = parse_proxy_header(bytes(buf), self.ctx.proxy_protocol)
                    if found is not None:  # (None: read on, the header is not complete)
                        self.use_proxy_header(found)
                        buf = bytes(buf[found.length:])
                        continue
                elif buf:
                    if buf[0] == 13 or buf[0] == 10:
                        # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before
                        # the request-line; we ignore exactly one CRLF (docs/security.md).
                        if not skipped and buf[:2] == b"\r\n":
                            buf = bytes(buf[2:])
                            skipped = True
                            scanned = 0
                            continue  # look again: a second empty line is refused
                        if skipped or len(buf) > 1 or buf[0] == 10:
                            raise BadRequest("empty line or bare LF before the request line")
                    else:  # (a lone CR may be the start of the one CRLF: read on)
                        end = find_head_end(buf, scanned, limits)
                        if end > 0:
                            break
                        scanned = max(0, len(buf) - 3)
                if timeout:
                    left = head_time_left(started, len(buf), timeout, time.monotonic())
                    if left <= 0:
                        raise TimeoutError("header_timeout")
                    if original is _UNSET:
                        original = sock.gettimeout()
                    # (10 ms of slack: a socket timeout equal to header_timeout, as the
                    # workers set, is left alone on the fast path)
                    if original is None or original > left + 0.01:
                        sock.settimeout(left)
                        changed = True
                    elif changed:
                        sock.settimeout(original)
                        changed = False
                try:
                    data = recv(RECV_SIZE)
                except OSError:
                    self._buf = b""
                    raise
                if not data:
                    self._buf = b""
                    if buf and buf != b"\r":
                        raise ClientDisconnected("EOF inside a request head")
                    return None
                if not buf:
                    buf = data
                else:
                    if type(buf) is bytes:
                        buf = bytearray(buf)  # a head in pieces: grow in place
                    buf += data
        except TimeoutError:
            self._buf = b""
            if buf and buf != b"\r":
                raise RequestTimeout() from None  # 408, then close
            return None  # nothing of a request came: just close
        except OSError:
            if buf and buf != b"\r":
                raise
            return None  # reset before a request: just close
        finally:
            if changed:
                try:
                    sock.settimeout(original)
                except OSError:
                    pass
        if len(buf) == end:
            head_bytes = bytes(buf)
            self._buf = b""
        else:
            head_bytes = bytes(buf[:end])
            self._buf = bytes(buf[end:])
        return parse_head(head_bytes, limits)

    def _prepare(self, head: RequestHead) -> dict[str, Any]:
        """Body reader and environ for a parsed head."""
        self.response_started = False
        self._expect_continue = head.expect_continue
        ctx = self.ctx
        reader: LengthReader | ChunkedReader | SpooledReader | None
        if head.chunked:
            chunked = ChunkedReader(self, ctx.limits)
            self._reader = reader = chunked
            if self._buf:  # validate the chunks that came with the head (400, not an app error)
                data = self._buf
                self._buf = b""
                chunked.prefeed(data)
            if ctx.spool_chunked:
                self._reader = reader = spool_chunked(chunked)
            wsgi_input: Body = Body(reader)
        elif head.content_length:
            self._reader = reader = LengthReader(self, head.content_length)
            wsgi_input = Body(reader)
        else:
            self._reader = reader = None
            wsgi_input = _EMPTY_INPUT
        environ = build_environ(
            self._base, head, wsgi_input, ctx.scheme_headers,
            self._peer_trusted, self._unix, ctx.header_map, ctx.forwarder_headers,
        )  # fmt: skip
        if self.tls:  # TLS ends here: the request is https whatever headers say
            environ["wsgi.url_scheme"] = "https"
            environ["HTTPS"] = "on"
        if type(reader) is SpooledReader:
            # The body is now length-delimited: say so, and do not let an app that forwards
            # headers announce both framings (RFC 9112 §6.3).
            environ["CONTENT_LENGTH"] = str(reader.length)
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return environ

    def use_proxy_header(self, found: ProxyHeader) -> None:
        """The connection's PROXY header (or NO_HEADER in mode auto) is parsed: from now on
        the client is the one it names. Only peers in proxy_allow_ips may send one."""
        self.proxy_pending = False
        if found is NO_HEADER:
            return
        if self.client_addr not in self.ctx.proxy_allow:
            raise InvalidProxyHeader("PROXY header from a peer not in proxy_allow_ips")
        source = found.source
        if source is None:
            return  # v1 UNKNOWN, v2 LOCAL/UNSPEC: the peer stands
        # The real client also decides whether the scheme headers are trusted: behind a TCP
        # load balancer they come from the client itself.
        self.client_addr = source
        self._trusted = None
        if isinstance(source, tuple):
            self._base["REMOTE_ADDR"], self._base["REMOTE_PORT"] = source[0], str(source[1])
        else:
            self._base["REMOTE_ADDR"], self._base["REMOTE_PORT"] = source, ""

    def _peer_trusted(self) -> bool:
        trusted = self._trusted
        if trusted is None:
            trusted = self._trusted = self.ctx.is_trusted(self.client_addr)
        return trusted

    def _run(self, environ: dict[str, Any], head: RequestHead) -> bool:
        """Call the application and send its response; the iterable is always closed."""
        ctx = self.ctx
        access_log = ctx.access_log
        recorder = ctx.recorder
        start = time.time() if access_log is not None or recorder is not None else 0.0
        if recorder is not None:
            recorder = recorder.request_started()  # what counts this request's end
        response = Response(self, head.method == "HEAD", head.version == "1.1", head.keep_alive)
        result = None
        ok = False
        hooks = ctx.request_hooks
        hook_request = None
        try:
            if hooks is not None:
                hook_request = hooks.before(head)
                hooks.pre(hook_request)  # pre_request; raising is a 500, as in gunicorn
            result = ctx.app(environ, response.start_response)
            response.send_iterable(result)
            ok = True
        except ClientDisconnected as exc:
            ctx.error_log.debug("%s: client went away: %s", self.request_line, exc)
        except InvalidBody as exc:  # a bad or too large chunked body the app did not handle
            self._log_rejected(status_for(exc), exc)
            if not response.headers_sent:
                response.status = "400 Bad Request" if status_for(exc) == 400 else (
                    "413 Content Too Large")
                response.headers = []
                self._send_quietly(
                    error_response(status_for(exc), response.head_request, not response.http11)
                )
        except Exception:
            ctx.error_log.exception("Error handling request %s", self.request_line)
            if not response.headers_sent:
                response.status = "500 Internal Server Error"
                response.headers = []
                self._send_quietly(error_response(500, response.head_request, not response.http11))
        finally:
            if result is not None:
                close = getattr(result, "close", None)
                if close is not None:
                    try:
                        close()
                    except ClientDisconnected as exc:
                        ctx.error_log.debug("%s: client went away: %s", self.request_line, exc)
                        ok = False
                    except Exception:
                        ctx.error_log.exception(
                            "Error closing the response of %s", self.request_line
                        )
                        ok = False
        if hook_request is not None:
            hooks.after(hook_request, environ, response.status, response.headers, response.sent)
        if response.mismatch:
            ctx.error_log.warning(
                "%s: sent %d body bytes but Content-Length is %d; closing the connection",
                self.request_line, response.sent, response.length,
            )  # fmt: skip
        if access_log is not None or recorder is not None:
            elapsed = time.time() - start
            status = response.status or "500 Internal Server Error"
            if recorder is not None:
                recorder.request_finished(head.method, status, response.sent,
                                          elapsed if elapsed > 0 else 0.0)
            if access_log is not None:
                try:
                    access_log.log(environ, status, response.headers, response.sent, elapsed)
                except Exception:
                    ctx.error_log.exception("Access log failed")
        # Not `ctx.draining` here: the head already said whether the connection stays open
        # (response.keep_alive is final once the head is built, and takes the drain into
        # account then). A drain that began since must not close a connection we promised
        # to keep: the client's next request would meet a reset. That request is the one
        # answered with `Connection: close`.
        if not ok or not response.keep_alive or response.must_close:
            return False
        return self._finish_body()

    def _finish_body(self) -> bool:
        """Discard what the application left of the body; False if that is not possible."""
        reader = self._reader
        self._reader = None
        if reader is None or reader.done:
            return True
        if self._expect_continue or reader.failed:
            return False  # RFC 9110 §10.1.1: no 100 sent, the client may not send the body
        try:
            return reader.drain(DRAIN_LIMIT)
        except OSError:  # ClientDisconnected, InvalidBody, timeout
            return False

    # -- the response's sink (response.Sink) ------------------------------------------------

    def may_persist(self) -> bool:
        """The server's side of keep-alive when the head is built: enabled for this worker,
        no drain under way, the worker has not marked this connection's last response
        (`closing`), and what the app left of the body can be discarded."""
        ctx = self.ctx
        return (ctx.keepalive and not ctx.draining and not self.closing
                and self._body_finishable())

    def head_sent(self) -> None:
        self.response_started = True

    def _body_finishable(self) -> bool:
        """Predict, at header time, whether the rest of the body can be discarded."""
        reader = self._reader
        if reader is None or reader.done:
            return True
        if self._expect_continue or reader.failed:
            return False
        return type(reader) is ChunkedReader or reader.remaining <= DRAIN_LIMIT  # type: ignore[union-attr]

    def _refuse(self, exc: BaseException) -> None:
        """Answer a request we will not run, then the caller closes (nothing more is read)."""
        status = status_for(exc)
        self._log_rejected(status, exc)
        self._send_quietly(error_response(status))
        try:  # FIN after the response: the client reads it before any reset for unread bytes
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _log_rejected(self, status: int, exc: BaseException) -> None:
        """The one warning line of a rejected request: peer, status, reason; no payload."""
        self.ctx.reject_log.warning(
            "Invalid request from %s: %d %s", describe_peer(self.client_addr), status,
            safe_reason(exc),
        )  # fmt: skip

    # -- socket I/O used by body readers and the response -----------------------------------

    def _continue(self) -> None:
        """Send `100 Continue` if the client waits for it (RFC 9110 §10.1.1): only once the
        app wants the body."""
        self._expect_continue = False
        if not self.response_started:
            self.send(_CONTINUE)

    def recv_body(self, n: int) -> bytes:
        """Up to `n` body bytes: buffered ones first, else one recv (b"" at EOF)."""
        if self._expect_continue:
            self._continue()
        buf = self._buf
        if buf:
            if len(buf) <= n:
                self._buf = b""
                return buf
            self._buf = buf[n:]
            return buf[:n]
        try:
            data: bytes = self.sock.recv(n if n < RECV_SIZE * 4 else RECV_SIZE * 4)
        except OSError as exc:
            raise ClientDisconnected(f"reading the request body: {exc}") from exc
        return data

    def recv_body_exact(self, n: int) -> bytes:
        """`n` body bytes in one piece (fewer only at EOF): buffered ones first, the rest
        received into a reused buffer (no allocation per recv), then copied out once."""
        if self._expect_continue:
            self._continue()
        buf = self._buf
        if len(buf) >= n:
            return self.recv_body(n)
        scratch = _SCRATCH.pop() if _SCRATCH else bytearray()
        if len(scratch) < n:
            scratch = bytearray(n)
        view = memoryview(scratch)
        have = len(buf)
        view[:have] = buf
        self._buf = b""
        recv_into = self.sock.recv_into
        flags = _MSG_WAITALL if self.plain_tcp else 0  # one call, usually
        try:
            while have < n:
                got = recv_into(view[have:n], n - have, flags)
                if not got:
                    break
                have += got
            return bytes(view[:have])
        except OSError as exc:
            raise ClientDisconnected(f"reading the request body: {exc}") from exc
        finally:
            view.release()
            if len(_SCRATCH) < _SCRATCH_KEEP:
                _SCRATCH.append(scratch)

    def feed(self, data: bytes) -> bytes:
        """Add bytes read by the worker (waiting for a head) to the buffer; return it all."""
        buf = self._buf + data if self._buf else data
        self._buf = buf
        return buf

    def unread(self, data: bytes) -> None:
        """Give back bytes of the next message (read along with the end of a body)."""
        self._buf = data + self._buf if self._buf else data

    def send(self, data: bytes) -> None:
        try:
            send_all(self.sock, data)
        except OSError as exc:
            raise ClientDisconnected(f"sending the response: {exc}") from exc

    def send_last(self, data: bytes) -> None:
        """Send the last bytes of a response after which the connection closes, and the FIN
        with them.

        MSG_MORE holds the bytes back for a moment and shutdown(SHUT_WR) then sends them in
        one segment with the FIN (Linux tacks the FIN onto a queued, unsent segment), where
        send + close sends two: the client gets the response and its end in one wakeup.
        Plain WSGI hello with the sync worker (a new connection per request): 25 -> 19 µs
        of server CPU per request, 26,100 -> 27,500 req/s (docs/benchmarks.md).
        """
        if not (self.plain_tcp and _MSG_MORE):
            self.send(data)
            return
        sock = self.sock
        try:
            send_all(sock, data, _MSG_MORE)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise ClientDisconnected(f"sending the response: {exc}") from exc

    def send_pair(self, first: bytes, second: bytes, last: bool) -> None:
        """Send first and second without joining them; `last`: the connection closes after
        them, and the FIN goes with them (send_last)."""
        if not self.can_sendmsg:
            self.send(first)
            if last:
                self.send_last(second)
            else:
                self.send(second)
            return
        sock = self.sock
        with_fin = last and self.plain_tcp and _MSG_MORE
        try:
            send_all_pair(sock, first, second, _MSG_MORE if with_fin else 0)
            if with_fin:
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise ClientDisconnected(f"sending the response: {exc}") from exc

    def sendfile(self, file: Any, offset: int, count: int) -> int:
        try:
            sendfile = self.ctx.sendfile
            sent: int
            if sendfile is not None:
                sent = sendfile(self.sock, file, offset, count)
            else:
                sent = self.sock.sendfile(file, offset, count)
            return sent
        except OSError as exc:
            raise ClientDisconnected(f"sending a file: {exc}") from exc

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    # -- worker API -------------------------------------------------------------------------

    def has_pending_data(self) -> bool:
        """Pipelined bytes already buffered: the next request may be ready without a recv
        (decrypted bytes the TLS layer holds are invisible to a poller: they count too)."""
        return bool(self._buf) or (self.tls and self.sock.pending() > 0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.sock.close()
            except OSError:
                pass
