"""The PEP 3333 side: environ building, wsgi.errors and wsgi.file_wrapper."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from django_prefork import __version__
from django_prefork.logging import ErrorStream

from .errors import BadRequest, InvalidSchemeHeaders
from .parser import RequestHead
from .util import header_environ_key

__all__ = [
    "SERVER_SOFTWARE",
    "ErrorStream",
    "FileWrapper",
    "build_environ",
    "reads_content_length_only",
]

#: The environ's SERVER_SOFTWARE carries the version (as gunicorn's); the `Server` response
#: header does not (response.py), so clients are not told which release to attack.
SERVER_SOFTWARE = f"django-prefork/{__version__}"

#: Attributes under which common WSGI wrappers keep the application they wrap: WhiteNoise
#: (`application`), Sentry's and many middlewares (`app`), Flask-style (`wsgi_app`),
#: functools.wraps (`__wrapped__`).
_WRAPPED_ATTRIBUTES = ("__wrapped__", "application", "app", "wsgi_app")
_WRAP_DEPTH = 8


def reads_content_length_only(app: Any) -> bool:
    """Whether `app` is Django's WSGIHandler, or a wrapper around one.

    Django reads exactly `CONTENT_LENGTH` bytes of `wsgi.input` and nothing without it, so a
    chunked request body would reach its views empty; for such an app the server reads the
    body first and sets CONTENT_LENGTH (`body.spool_chunked`). Any other WSGI app reads
    `wsgi.input` to its end itself (`wsgi.input_terminated`) and gets the body streamed.
    """
    from django.core.handlers.wsgi import WSGIHandler  # type: ignore[import-untyped, unused-ignore]

    seen: set[int] = set()
    for _ in range(_WRAP_DEPTH):
        if isinstance(app, WSGIHandler):
            return True
        seen.add(id(app))
        for name in _WRAPPED_ATTRIBUTES:
            inner = getattr(app, name, None)
            if inner is not None and callable(inner) and id(inner) not in seen:
                app = inner
                break
        else:
            return False
    return False


class FileWrapper:
    """`wsgi.file_wrapper`: lets the server send a file with sendfile() (PEP 3333).

    Iterating reads `blksize` blocks, the fallback for TLS or non-file objects.
    """

    __slots__ = ("blksize", "close", "filelike")

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        blksize = self.blksize
        while data := read(blksize):
            yield data


# Header name (bytes, as received) -> environ key, for names without "_" only. Bounded: the
# names come from clients.
_KEYS: dict[bytes, str] = {}
_KEYS_MAX = 512


def _environ_key(name: bytes, header_map: str) -> str:
    """The environ key of a header; "" when dropped.

    A name with "_" would become the same key as its "-" twin ("X_Forwarded_Proto" poses
    as "X-Forwarded-Proto"), so per `header_map` it is dropped (default, as Django's
    runserver), refused (400) or, "dangerous", mapped anyway (gunicorn's setting).
    """
    text = name.decode("latin-1")
    key = header_environ_key(text)
    if "_" in text:
        if header_map == "refuse":
            raise BadRequest(f"header name with underscore: {text!r}")
        if header_map != "dangerous":
            return ""
    elif len(_KEYS) < _KEYS_MAX:
        _KEYS[name] = key
    return key


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    """(name, port) from a Host value, the scheme's default port when absent."""
    if host.startswith("["):  # [IPv6]:port
        name, _, rest = host.partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        name += "]"
    else:
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    return name, port or ("443" if scheme == "https" else "80")


def build_environ(
    base: dict[str, Any],
    head: RequestHead,
    wsgi_input: Any,
    scheme_headers: tuple[tuple[str, str], ...],
    trusted: Callable[[], bool],
    unix: bool,
    header_map: str = "drop",
    forwarder_headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The environ of one request: a copy of the connection's prepared `base` plus the request.

    The scheme is "http" unless `scheme_headers`, (environ key, value meaning https) pairs,
    say otherwise; they are obeyed only when
    `trusted()` (asked only if one is present) says the peer is a trusted proxy; `unix` means
    SERVER_NAME/PORT come from the Host header; `header_map` says what to do with header
    names containing "_" (see `_environ_key`). A header named like an entry of
    `forwarder_headers` (e.g. SCRIPT_NAME) from a trusted proxy sets that environ key itself,
    as gunicorn's `forwarder_headers`; from anyone else it is an ordinary "_" header.
    """
    environ = base.copy()
    target = head.target
    environ["REQUEST_METHOD"] = head.method
    environ["RAW_URI"] = target
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if head.version == "1.1" else "HTTP/1.0"
    environ["wsgi.input"] = wsgi_input

    forwarded: dict[str, str] = {}
    for name, value in head.headers:
        key = _KEYS.get(name)
        if key is None:  # never cached: names with "_", like every forwarder header
            if forwarder_headers:
                upper = name.decode("latin-1").upper()
                if upper in forwarder_headers and trusted():
                    forwarded[upper] = value.decode("latin-1").strip(" \t")
                    continue
            key = _environ_key(name, header_map)
        if not key:
            continue
        text = value.decode("latin-1").rstrip(" \t")  # trailing OWS (RFC 9110 §5.5)
        if key in environ:
            # Duplicates are joined (RFC 9110 §5.3), Cookie with "; " (RFC 6265 §5.4).
            environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + text
        else:
            environ[key] = text

    if "#" in target:  # a fragment is not part of the request-target (RFC 9112 §3.2)
        target = target.partition("#")[0]
    if target.startswith("/"):  # origin-form
        path, _, query = target.partition("?")
    elif target[:7].lower() == "http://" or target[:8].lower() == "https://":
        # absolute-form: the target's authority replaces Host (RFC 9112 §3.2.2)
        rest = target.partition("://")[2]
        slash = rest.find("/")
        qmark = rest.find("?")
        cut = min(i for i in (slash, qmark, len(rest)) if i >= 0)
        environ["HTTP_HOST"] = rest[:cut]
        path, _, query = rest[cut:].partition("?")
        if not path:
            path = "/"
    elif target == "*" and head.method == "OPTIONS":  # asterisk-form (RFC 9112 §3.2.4)
        path, query = "*", ""
    else:
        raise BadRequest("invalid request-target")  # RFC 9112 §3.2
    if "%" in path:
        # PEP 3333: PATH_INFO is the percent-decoded bytes, as a latin-1 str.
        path = unquote_to_bytes(path).decode("latin-1")
    if forwarded:
        environ.update(forwarded)
        if "SCRIPT_NAME" in forwarded:  # a mount point, "/app" (a trailing "/" is not in it)
            environ["SCRIPT_NAME"] = forwarded["SCRIPT_NAME"].rstrip("/")
    script_name = environ["SCRIPT_NAME"]
    # Only a whole path segment: SCRIPT_NAME /app does not own /application.
    if script_name and (path == script_name or path.startswith(script_name + "/")):
        path = path[len(script_name) :]
    environ["PATH_INFO"] = forwarded.get("PATH_INFO", path)
    environ["QUERY_STRING"] = query

    secure = None
    for key, https_value in scheme_headers:
        claimed = environ.get(key)
        if claimed is not None:
            if not trusted():
                break
            this = claimed.strip().lower() == https_value
            if secure is None:
                secure = this
            elif secure is not this:
                raise InvalidSchemeHeaders("contradictory scheme headers")
    scheme = "https" if secure else "http"
    environ["wsgi.url_scheme"] = scheme

    if unix:
        host = environ.get("HTTP_HOST")
        if host:
            environ["SERVER_NAME"], environ["SERVER_PORT"] = _split_host(host, scheme)
        else:
            environ["SERVER_NAME"] = "localhost"
            environ["SERVER_PORT"] = "443" if scheme == "https" else "80"
    return environ
