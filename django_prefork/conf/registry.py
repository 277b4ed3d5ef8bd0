"""The settings table: the single source for CLI flags, PREFORK keys, validation and docs.

Names, flags and defaults follow gunicorn so its documentation and habits carry over.
To add a setting, add one ``Setting`` here (and its annotation on ``Config``); the CLI,
``--print-config``, the system check and docs/settings.md pick it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .validators import (
    BindRule,
    BoolRule,
    ChoiceRule,
    ForwardedIpsRule,
    HeadersRule,
    IntRule,
    Invalid,
    StatsdHostRule,
    StrRule,
    TcpAddressRule,
    UmaskRule,
    WorkerClassRule,
)

__all__ = ["SECTIONS", "SETTINGS", "SETTINGS_BY_KEY", "SETTINGS_BY_NAME", "Setting"]

Rule = Callable[[Any, bool], Any]


@dataclass(frozen=True, eq=False)  # identity equality/hash: defaults may be lists
class Setting:
    """One server setting; ``key`` (the PREFORK key) defaults to ``name.upper()``."""

    name: str
    flags: tuple[str, ...]
    default: Any
    rule: Rule
    section: str
    help: str
    env: str | None = None
    #: turns the environment variable's text into a value for ``rule`` (may raise Invalid)
    env_convert: Callable[[str], Any] | None = None
    env_help: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    action: str | None = None  # argparse action: "append", "store_true" or None (store)
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name.upper())

    @property
    def flag(self) -> str:
        """The long flag, used in messages (``--workers``); '' for PREFORK-only settings."""
        return self.flags[-1] if self.flags else ""

    def describe(self) -> str:
        """Allowed values, for docs and help."""
        describe = getattr(self.rule, "describe", None)
        return describe() if describe else ""


def _port_env(text: str) -> list[str]:
    """PORT=8000 -> bind ["0.0.0.0:8000"], as on Heroku-style platforms (and gunicorn)."""
    port = text.strip()
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise Invalid("must be a port number from 0 to 65535", to="a port number such as 8000")
    return [f"0.0.0.0:{int(port)}"]


SECTIONS = ("Server socket", "Worker processes", "Server mechanics", "Logging",
            "Request limits", "Proxies", "Observability")

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
WORKER_CLASSES = ("sync", "gthread", "gevent")
HEADER_MAPS = ("drop", "refuse", "dangerous")

SETTINGS: tuple[Setting, ...] = (
    # -- Server socket
    Setting(
        "bind", ("-b", "--bind"), ["127.0.0.1:8000"], BindRule(), "Server socket",
        "Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeat for more.",
        env="PORT", env_convert=_port_env, env_help="PORT=8000 means bind 0.0.0.0:8000",
        metavar="ADDRESS", action="append",
    ),
    Setting(
        "backlog", ("--backlog",), 2048, IntRule(1, 65535), "Server socket",
        "Maximum number of pending connections queued by the kernel.", metavar="INT",
    ),
    # -- Worker processes
    Setting(
        "workers", ("-w", "--workers"), 1,
        IntRule(1, hint="1 or more (a common choice is 2 x CPU cores + 1)"),
        "Worker processes",
        "Number of worker processes serving requests.", env="WEB_CONCURRENCY", metavar="INT",
    ),
    Setting(
        "worker_class", ("-k", "--worker-class"), "sync", WorkerClassRule(WORKER_CLASSES),
        "Worker processes",
        "Worker type: sync (one request at a time), gthread (threads) or gevent (greenlets).",
        metavar="{" + ",".join(WORKER_CLASSES) + "}", choices=WORKER_CLASSES,
    ),
    Setting(
        "threads", ("--threads",), 1, IntRule(1), "Worker processes",
        "Threads per worker for the gthread worker.", metavar="INT",
    ),
    Setting(
        "worker_connections", ("--worker-connections",), 1000, IntRule(1), "Worker processes",
        "Maximum simultaneous clients per gthread or gevent worker.", metavar="INT",
    ),
    Setting(
        "timeout", ("-t", "--timeout"), 30, IntRule(0), "Worker processes",
        "Seconds a silent worker may take before it is killed and replaced (0 = never).",
        metavar="INT",
    ),
    Setting(
        "graceful_timeout", ("--graceful-timeout",), 30, IntRule(0), "Worker processes",
        "Seconds workers get to finish in-flight requests on a graceful stop/restart.",
        metavar="INT",
    ),
    Setting(
        "keepalive", ("--keep-alive",), 2, IntRule(0), "Worker processes",
        "Seconds to wait for the next request on a keep-alive connection.", metavar="INT",
    ),
    Setting(
        "max_requests", ("--max-requests",), 0, IntRule(0), "Worker processes",
        "Restart a worker after this many requests, to contain memory leaks (0 = never).",
        metavar="INT",
    ),
    Setting(
        "max_requests_jitter", ("--max-requests-jitter",), 0, IntRule(0), "Worker processes",
        "Random 0..N added to max_requests per worker so they do not all restart at once.",
        metavar="INT",
    ),
    # -- Server mechanics
    Setting(
        "preload_app", ("--preload",), False, BoolRule(), "Server mechanics",
        "Load the application in the master before forking (faster start, shared memory).",
        action="store_true",
    ),
    Setting(
        "pidfile", ("-p", "--pid"), None, StrRule(optional=True, hint="a file path"),
        "Server mechanics", "File to write the master's process id to.", metavar="FILE",
    ),
    Setting(
        "umask", ("-m", "--umask"), 0, UmaskRule(), "Server mechanics",
        "Mask for the mode of unix socket files the master creates, e.g. 0o117 gives 0660 "
        "(0 = srwxrwxrwx, as gunicorn).",
        metavar="INT",
    ),
    Setting(
        "proc_name", ("-n", "--name"), None, StrRule(optional=True, hint="a short name"),
        "Server mechanics", "Name of the server processes in process listings and logs.",
        metavar="STRING",
    ),
    # -- Logging
    Setting(
        "accesslog", ("--access-logfile",), None,
        StrRule(optional=True, hint="a file path, or - for stdout"), "Logging",
        "Access log file ('-' = stdout); not set = no access log.", metavar="FILE",
    ),
    Setting(
        "access_log_format", ("--access-logformat",), DEFAULT_ACCESS_LOG_FORMAT,
        StrRule(hint='a format like \'%(h)s "%(r)s" %(s)s\''), "Logging",
        "Access log line format, with gunicorn's atoms such as %(h)s %(r)s %(s)s.",
        metavar="STRING",
    ),
    Setting(
        "errorlog", ("--error-logfile",), "-",
        StrRule(optional=True, hint="a file path, or - for stderr"), "Logging",
        "Error log file ('-' = stderr).", metavar="FILE",
    ),
    Setting(
        "loglevel", ("--log-level",), "info", ChoiceRule(LOG_LEVELS), "Logging",
        "Error log level (case-insensitive).", metavar="LEVEL", choices=LOG_LEVELS,
    ),
    # -- Request limits
    Setting(
        "limit_request_line", ("--limit-request-line",), 4094, IntRule(0, 8190),
        "Request limits",
        "Maximum size in bytes of the HTTP request line (0 = unlimited).", metavar="INT",
    ),
    Setting(
        "limit_request_fields", ("--limit-request-fields",), 100, IntRule(0, 32768),
        "Request limits",
        "Maximum number of header fields in a request (0 = the maximum, 32768).",
        metavar="INT",
    ),
    Setting(
        "limit_request_field_size", ("--limit-request-field-size",), 8190, IntRule(0),
        "Request limits",
        "Maximum size in bytes of one header field line with its CRLF, as gunicorn counts "
        "(0 = the default, 8190, as gunicorn).", metavar="INT",
    ),
    Setting(
        "header_timeout", ("--header-timeout",), 30, IntRule(0), "Request limits",
        "Seconds a client has to send a complete request head (408, then close; 0 = no limit).",
        metavar="INT",
    ),
    Setting(
        "limit_request_body", ("--limit-request-body",), 0, IntRule(0), "Request limits",
        "Maximum request body size in bytes, Content-Length or chunked (413; 0 = unlimited).",
        metavar="INT",
    ),
    Setting(
        "header_map", ("--header-map",), "drop", ChoiceRule(HEADER_MAPS), "Request limits",
        "Header names with '_': drop them, refuse the request (400), or map them like '-' "
        "(dangerous: X_Foo can pose as X-Foo).",
        metavar="{" + ",".join(HEADER_MAPS) + "}", choices=HEADER_MAPS,
    ),
    # -- Proxies
    Setting(
        "forwarded_allow_ips", ("--forwarded-allow-ips",), ["127.0.0.1", "::1"],
        ForwardedIpsRule(), "Proxies",
        "Proxy IPs/networks (comma-separated, or '*') trusted to set secure scheme headers.",
        env="FORWARDED_ALLOW_IPS", metavar="IPS",
    ),
    Setting(
        "secure_scheme_headers", (), {
            "X-FORWARDED-PROTOCOL": "ssl",
            "X-FORWARDED-PROTO": "https",
            "X-FORWARDED-SSL": "on",
        },
        HeadersRule(), "Proxies",
        "Headers and values that, from a trusted proxy, mark a request as HTTPS.",
    ),
)

OBSERVABILITY_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "metrics_bind", ("--metrics-bind",), None, TcpAddressRule(), "Observability",
        "Serve Prometheus metrics (/metrics) and health checks (/-/live, /-/ready) from the "
        "master at this HOST:PORT (port 0 = any free port); not set = off.",
        metavar="HOST:PORT",
    ),
    Setting(
        "health_on_main_bind", ("--health-on-main-bind",), False, BoolRule(), "Observability",
        "Also answer GET /-/live and /-/ready on the main bind, before Django (off: they "
        "reach the application like any path).",
        action="store_true",
    ),
    Setting(
        "statsd_host", ("--statsd-host",), None, StatsdHostRule(), "Observability",
        "Send StatsD metrics (gunicorn's names) to HOST:PORT over UDP, or to unix:PATH; "
        "not set = off.",
        metavar="ADDRESS",
    ),
    Setting(
        "statsd_prefix", ("--statsd-prefix",), "", StrRule(hint="a name like myapp"),
        "Observability",
        "Prefix for every StatsD metric name (a dot is added), e.g. myapp.gunicorn.requests.",
        metavar="STRING",
    ),
    Setting(
        "dogstatsd_tags", ("--dogstatsd-tags",), "", StrRule(hint="tags like env:prod,app:x"),
        "Observability",
        "Comma-separated DogStatsD tags added to every StatsD metric (key:value,...).",
        metavar="TAGS",
    ),
)
SETTINGS = SETTINGS + OBSERVABILITY_SETTINGS


# -- Control socket (preforkctl; docs/observability.md, "preforkctl"). gunicorn 25.1's names.
class _SocketPathRule(StrRule):
    """A unix socket path (or None: the per-pid default), short enough for sun_path."""

    #: sun_path holds 108 bytes on Linux, the last one a NUL.
    MAX_BYTES = 107
    TO = "an absolute path like /run/myapp/prefork.ctl (or leave it unset)"

    def __init__(self) -> None:
        super().__init__(optional=True, hint=self.TO)

    def describe(self) -> str:
        return "a file path or None (per-pid default)"

    def __call__(self, value: Any, strings: bool) -> str | None:
        path = super().__call__(value, strings)
        if path is None:
            return None
        path = path.strip()
        if "\0" in path:
            raise Invalid("has a NUL byte", to=self.TO)
        if len(path.encode("utf-8", "surrogateescape")) > self.MAX_BYTES:
            raise Invalid(f"is longer than the {self.MAX_BYTES} bytes a unix socket path "
                          "may have", to="a shorter path")
        return path


class _SocketModeRule(UmaskRule):
    """A socket file's mode, read like a umask (``0660``, ``0o660``); never 0."""

    TO = "an octal mode such as 0600 (owner only) or 0660 (owner and group)"

    def describe(self) -> str:
        return "integer 0o1-0o777 (octal text like 0600 or 0o660 accepted)"

    def __call__(self, value: Any, strings: bool) -> int:
        mode = super().__call__(value, strings)
        if not mode & 0o600 == 0o600:
            raise Invalid(f"{oct(mode)} does not let the owner read and write the socket",
                          to=self.TO)
        return mode


CONTROL_SOCKET_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "control_socket", ("--control-socket",), None, _SocketPathRule(), "Observability",
        "Unix socket where the master takes preforkctl commands; not set = "
        "$XDG_RUNTIME_DIR/django-prefork/PID.ctl, else /tmp/django-prefork-UID/PID.ctl.",
        metavar="PATH",
    ),
    Setting(
        "control_socket_mode", ("--control-socket-mode",), 0o600, _SocketModeRule(),
        "Observability",
        "File mode of the control socket (0600: its owner only; 0660 adds the group).",
        metavar="MODE",
    ),
    Setting(
        "control_socket_disable", ("--no-control-socket",), False, BoolRule(),
        "Observability", "Do not open the control socket (preforkctl cannot reach the "
        "master).", action="store_true",
    ),
)
SETTINGS = SETTINGS + CONTROL_SOCKET_SETTINGS

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
