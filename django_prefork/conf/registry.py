"""The settings table: the single source for CLI flags, PREFORK keys, validation and docs.

Names, flags and defaults follow gunicorn so its documentation and habits carry over.
To add a setting, add one ``Setting`` here (and its annotation on ``Config``); the CLI,
``--print-config``, the system check and docs/settings.md pick it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..logsyslog import FACILITIES, default_syslog_address
from .validators import (
    BindRule,
    BoolRule,
    CertReqsRule,
    ChoiceRule,
    ConfigPathRule,
    DirectoryRule,
    DottedPathRule,
    FilePatternsRule,
    ForwardedIpsRule,
    GroupRule,
    HeaderNamesRule,
    HeadersRule,
    IntRule,
    Invalid,
    LogConfigDictRule,
    PathListRule,
    ProxyProtocolRule,
    RawEnvRule,
    SslVersionRule,
    StatsdHostRule,
    StrRule,
    SyslogAddressRule,
    TcpAddressRule,
    TmpDirRule,
    UmaskRule,
    UserRule,
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
    #: argparse action: "append", "store_true", "store_false" (gunicorn's --no-sendfile)
    #: or None (store)
    action: str | None = None
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


class PathRule(StrRule):
    """An optional URL path, which must start with '/'."""

    def describe(self) -> str:
        return "path starting with / or None"

    def __call__(self, value: Any, strings: bool) -> str | None:
        text = super().__call__(value, strings)
        if text is not None and not text.startswith("/"):
            raise Invalid("must be a path starting with /", to=self.hint)
        return text


SECTIONS: tuple[str, ...] = ("Server socket", "Worker processes", "Server mechanics",
                             "Logging", "Request limits", "Proxies", "Observability")

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
WORKER_CLASSES = ("sync", "gthread", "gevent")
HEADER_MAPS = ("drop", "refuse", "dangerous")
RELOAD_ENGINES = ("auto", "poll", "inotify")

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
        "reload_batch", ("--reload-batch",), 1, IntRule(1), "Server mechanics",
        "On HUP, workers replaced at a time: each new one serves before an old one retires.",
        metavar="INT",
    ),
    Setting(
        "reload_warmup_path", ("--reload-warmup-path",), None,
        PathRule(optional=True, hint="a path such as /healthz"), "Server mechanics",
        "GET this path in each new worker before it counts as ready (5xx = not ready); "
        "not set = off.",
        metavar="PATH",
    ),
    Setting(
        "reload", ("--reload",), False, BoolRule(), "Server mechanics",
        "Development: reload (as on HUP) when a project Python file, template or extra file "
        "changes; a broken save keeps the old workers serving. Not with --preload.",
        action="store_true",
    ),
    Setting(
        "reload_engine", ("--reload-engine",), "auto", ChoiceRule(RELOAD_ENGINES),
        "Server mechanics",
        "How --reload sees changes: inotify (Linux), poll (stat every 0.5 s), or auto "
        "(inotify where it can be set up, else poll).",
        metavar="{" + ",".join(RELOAD_ENGINES) + "}", choices=RELOAD_ENGINES,
    ),
    Setting(
        "reload_extra_files", ("--reload-extra-file",), [], FilePatternsRule(),
        "Server mechanics",
        "With --reload, also watch this file or glob pattern (** recurses; files that match "
        "later are watched too); repeat for more.",
        metavar="FILE", action="append",
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
        "errorlog", ("--log-file", "--error-logfile"), "-",
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
        "limit_request_field_size",
        ("--limit-request-field_size", "--limit-request-field-size"), 8190, IntRule(0),
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
    Setting(
        "enable_backlog_metric", ("--enable-backlog-metric",), False, BoolRule(),
        "Observability",
        "Send the TCP listeners' accept-queue length to StatsD once a second as the "
        "gunicorn.backlog histogram (Linux; needs statsd_host).",
        action="store_true",
    ),
)

#: What gunicorn's "Server mechanics" settings do for a process and its HTTP core.
MECHANICS_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "config", ("-c", "--config"), None, ConfigPathRule(), "Server mechanics",
        "A gunicorn config file (Python: settings as module globals, hooks as functions), "
        "read between PREFORK and the environment; not set = none (unlike gunicorn, "
        "./gunicorn.conf.py is not read unless named).",
        metavar="FILE",
    ),
    Setting(
        "raw_env", ("-e", "--env"), [], RawEnvRule(), "Server mechanics",
        "KEY=VALUE set in os.environ of the master before the workers start, so the "
        "workers and the app see it; Django's settings were already read by then.",
        metavar="KEY=VALUE", action="append",
    ),
    Setting(
        "chdir", ("--chdir",), None, DirectoryRule(), "Server mechanics",
        "Directory the master changes to before the workers load the app (manage.py has "
        "already read the settings from where it started); not set = stay.",
        metavar="DIR",
    ),
    Setting(
        "pythonpath", ("--pythonpath",), [], PathListRule(), "Server mechanics",
        "Comma-separated directories put first on sys.path in the master and the workers "
        "(on the command line Django's own --pythonpath takes one, before settings load).",
        metavar="DIRS",
    ),
    Setting(
        "reuse_port", ("--reuse-port",), False, BoolRule(), "Server mechanics",
        "Set SO_REUSEPORT on TCP listeners, so another process may bind the same port.",
        action="store_true",
    ),
    Setting(
        "sendfile", ("--no-sendfile",), True, BoolRule(), "Server mechanics",
        "Send wsgi.file_wrapper responses with sendfile(2); --no-sendfile (or SENDFILE=0) "
        "copies them through user space instead.",
        env="SENDFILE", env_help="SENDFILE=0 disables sendfile, as in gunicorn",
        action="store_false",
    ),
    Setting(
        "forwarder_headers", ("--forwarder-headers",), ["SCRIPT_NAME", "PATH_INFO"],
        HeaderNamesRule(), "Proxies",
        "Headers a trusted proxy (forwarded_allow_ips) may send to set the environ key of "
        "the same name, e.g. SCRIPT_NAME for an app mounted under a prefix.",
        metavar="NAMES",
    ),
)

#: gunicorn's opt-in HTTP leniencies (off by default there too): each loosens what RFC 9112
#: asks a server to refuse, for clients that cannot be fixed.
LENIENCY_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "casefold_http_method", ("--casefold-http-method",), False, BoolRule(),
        "Request limits",
        "Serve a lower-case method as upper case ('get' as GET); methods are case-sensitive "
        "(RFC 9110 §9.1), so off refuses 'get' with 400.",
        action="store_true",
    ),
    Setting(
        "permit_obsolete_folding", ("--permit-obsolete-folding",), False, BoolRule(),
        "Request limits",
        "Accept header values folded over lines (obs-fold, RFC 9112 §5.2), each fold read "
        "as one space; off refuses them with 400.",
        action="store_true",
    ),
    Setting(
        "strip_header_spaces", ("--strip-header-spaces",), False, BoolRule(),
        "Request limits",
        "Accept whitespace between a header name and its colon ('Name : v'); a request "
        "smuggling risk that RFC 9112 §5.1 says to refuse (400 when off).",
        action="store_true",
    ),
)
SETTINGS = SETTINGS + OBSERVABILITY_SETTINGS + MECHANICS_SETTINGS + LENIENCY_SETTINGS

# -- Process and privileges (server/privileges.py, server/daemon.py; gunicorn 27's names)
PROCESS_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "user", ("-u", "--user"), None, UserRule(), "Server mechanics",
        "Run the workers (and the zygote that imports the project) as this user, a name or "
        "a uid; the master keeps its own. Not set = the current user, as gunicorn.",
        metavar="USER",
    ),
    Setting(
        "group", ("-g", "--group"), None, GroupRule(), "Server mechanics",
        "Run the workers (and the zygote) as this group, a name or a gid. Not set = the "
        "current group, as gunicorn (not the user's own group).",
        metavar="GROUP",
    ),
    Setting(
        "initgroups", ("--initgroups",), False, BoolRule(), "Server mechanics",
        "Give the workers every group the user is a member of (initgroups(3)) besides "
        "--group; off, they keep no supplementary groups.",
        action="store_true",
    ),
    Setting(
        "worker_tmp_dir", ("--worker-tmp-dir",), None, TmpDirRule(), "Server mechanics",
        "Directory for the workers' heartbeat files (unlinked at once, so nothing shows); "
        "not set = /dev/shm when writable, else the system temp dir. Use a tmpfs.",
        metavar="DIR",
    ),
    Setting(
        "daemon", ("-D", "--daemon"), False, BoolRule(), "Server mechanics",
        "Detach the master from the terminal (double fork, setsid, stdio to /dev/null); "
        "the pidfile holds the daemon's pid. Refused under systemd (NOTIFY_SOCKET).",
        action="store_true",
    ),
)
SETTINGS = SETTINGS + PROCESS_SETTINGS

# -- PROXY protocol and TLS (docs/tls.md); gunicorn 27's names, flags and defaults.
SECTIONS = (*SECTIONS, "SSL")
PROXY_PROTOCOL_MODES = ("off", "v1", "v2", "auto")
PROXY_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "proxy_protocol", ("--proxy-protocol",), "off", ProxyProtocolRule(), "Proxies",
        "Read a PROXY protocol header (HAProxy, AWS NLB) first on every connection: v1 or v2 "
        "required, auto takes either or none; off reads none. REMOTE_ADDR is then the client's.",
        metavar="{" + ",".join(PROXY_PROTOCOL_MODES) + "}", choices=PROXY_PROTOCOL_MODES,
    ),
    Setting(
        "proxy_allow_ips", ("--proxy-allow-from",), ["127.0.0.1", "::1"], ForwardedIpsRule(),
        "Proxies",
        "Proxy IPs/networks (comma-separated, or '*') allowed to send a PROXY protocol header; "
        "a header from any other peer is refused (400).",
        metavar="IPS",
    ),
)
TLS_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "certfile", ("--certfile",), None, StrRule(optional=True, hint="a PEM certificate file"),
        "SSL", "Serve HTTPS with this PEM certificate (chain) file; not set = plain HTTP.",
        metavar="FILE",
    ),
    Setting(
        "keyfile", ("--keyfile",), None, StrRule(optional=True, hint="a PEM private key file"),
        "SSL", "The certificate's PEM private key (not set: the key is in certfile).",
        metavar="FILE",
    ),
    Setting(
        "ca_certs", ("--ca-certs",), None, StrRule(optional=True, hint="a PEM CA bundle file"),
        "SSL", "PEM CA certificates that client certificates are checked against.",
        metavar="FILE",
    ),
    Setting(
        "cert_reqs", ("--cert-reqs",), 0, CertReqsRule(), "SSL",
        "Client certificates: 0 not asked for, 1 optional, 2 required (ssl.CERT_*).",
        metavar="INT",
    ),
    Setting(
        "ssl_version", ("--ssl-version",), None, SslVersionRule(), "SSL",
        "Deprecated (as in gunicorn): the lowest protocol, TLS (1.2, the default) or TLSv1_3.",
        metavar="NAME",
    ),
    Setting(
        "ciphers", ("--ciphers",), None, StrRule(optional=True, hint="an OpenSSL cipher list"),
        "SSL", "OpenSSL cipher list for TLS 1.2 (not set: Python's default, secure list).",
        metavar="CIPHERS",
    ),
    Setting(
        "do_handshake_on_connect", ("--do-handshake-on-connect",), False, BoolRule(), "SSL",
        "Accepted for gunicorn configs: the handshake always runs before the first request, "
        "scheduled by the worker class so it never holds a thread (docs/tls.md).",
        action="store_true",
    ),
    Setting(
        "suppress_ragged_eofs", ("--suppress-ragged-eofs",), True, BoolRule(), "SSL",
        "Treat a TLS connection closed without close_notify as a clean end of stream.",
        action="store_true",
    ),
    Setting(
        "ssl_context", (), None, DottedPathRule(), "SSL",
        "Dotted path to gunicorn's hook ssl_context(config, default_ssl_context_factory), "
        "which returns the ssl.SSLContext to serve with.",
        metavar="PATH",
    ),
)
SETTINGS = SETTINGS + PROXY_SETTINGS + TLS_SETTINGS


# -- gunicorn's server hooks as dotted paths (django_prefork/hooks.py, docs/hooks.md)
SECTIONS = (*SECTIONS, "Server hooks")


class HookPathRule(DottedPathRule):
    """A dotted path to a hook function; imported and checked at start-up (conf/loader.py)."""

    def __init__(self, hook: str) -> None:
        super().__init__()
        self.hint = f"a dotted path like myproject.hooks.{hook}"


#: (hook name, its gunicorn signature, when it runs), for the docs.
_HOOKS: tuple[tuple[str, str, str], ...] = (
    ("on_starting", "server", "in the master, before it starts anything"),
    ("on_reload", "server", "in the master, when a HUP starts a reload"),
    ("when_ready", "server", "in the master, once it listens, before the first worker"),
    ("pre_fork", "server, worker", "in the master, just before a worker is started"),
    ("post_fork", "server, worker", "in the new worker, before the app loads"),
    ("post_worker_init", "worker", "in the worker, once the app is loaded"),
    ("worker_int", "worker", "in the worker, on INT or QUIT"),
    ("worker_abort", "worker", "in the worker, on ABRT (a timeout)"),
    ("pre_exec", "server", "in the forked child of a USR2 upgrade, before the exec"),
    ("pre_request", "worker, req", "in the worker, before the app runs a request"),
    ("post_request", "worker, req, environ, resp", "in the worker, after the response"),
    ("child_exit", "server, worker", "in the master, once a worker has exited"),
    ("worker_exit", "server, worker", "in the worker, as it exits"),
    ("nworkers_changed", "server, new_value, old_value",
     "in the master, when the worker count changes"),
    ("on_exit", "server", "in the master, as it exits"),
)
HOOK_SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name, (), None, HookPathRule(name), "Server hooks",
            f"Dotted path to gunicorn's hook {name}({args}), called {when}; a -c file's "
            f"{name} function wins over it.", metavar="PATH")
    for name, args, when in _HOOKS
)
SETTINGS = SETTINGS + HOOK_SETTINGS

# -- Logging, gunicorn's remaining settings (docs/logging.md)
LOGGING_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "logconfig", ("--log-config",), None,
        StrRule(optional=True, hint="the path of a logging ini file"), "Logging",
        "A Python logging ini file (fileConfig format), applied after Django's LOGGING; it "
        "wins for the loggers it names and disables none.", metavar="FILE",
    ),
    Setting(
        "logconfig_json", ("--log-config-json",), None,
        StrRule(optional=True, hint="the path of a JSON dictConfig file"), "Logging",
        "A JSON file holding a logging dictConfig, applied after --log-config (it wins for "
        "the loggers both name).", metavar="FILE",
    ),
    Setting(
        "logconfig_dict", ("--log-config-dict",), {}, LogConfigDictRule(), "Logging",
        "A logging dictConfig dict (JSON text on the command line), applied last: it wins "
        "over --log-config and --log-config-json, as in gunicorn.", metavar="JSON",
    ),
    Setting(
        "syslog", ("--log-syslog",), False, BoolRule(), "Logging",
        "Also send the error log (and the access log, see --disable-redirect-access-to-"
        "syslog) to syslog at --log-syslog-to.", action="store_true",
    ),
    Setting(
        "syslog_addr", ("--log-syslog-to",), default_syslog_address(), SyslogAddressRule(),
        "Logging",
        "Where syslog listens: unix://PATH[#dgram|#stream], udp://HOST:PORT or "
        "tcp://HOST:PORT (default: the platform's, as gunicorn).", metavar="SYSLOG_ADDR",
    ),
    Setting(
        "syslog_prefix", ("--log-syslog-prefix",), None,
        StrRule(optional=True, hint="a short name such as mysite"), "Logging",
        "Program name in syslog lines: django-prefork.PREFIX.error (default: proc_name).",
        metavar="SYSLOG_PREFIX",
    ),
    Setting(
        "syslog_facility", ("--log-syslog-facility",), "user",
        ChoiceRule(tuple(FACILITIES)), "Logging",
        "Syslog facility name (user, daemon, local0 ... local7, ...).",
        metavar="SYSLOG_FACILITY", choices=tuple(FACILITIES),
    ),
    Setting(
        "disable_redirect_access_to_syslog", ("--disable-redirect-access-to-syslog",), False,
        BoolRule(), "Logging",
        "With --log-syslog, keep the access log out of syslog.", action="store_true",
    ),
    Setting(
        "capture_output", ("--capture-output",), False, BoolRule(), "Logging",
        "Redirect stdout and stderr of the master and the workers to the --error-logfile "
        "file (nothing changes while it is '-').", action="store_true",
    ),
    Setting(
        "enable_stdio_inheritance", ("-R", "--enable-stdio-inheritance"), False, BoolRule(),
        "Logging",
        "Flush stdout and stderr at every line in every process, so print() output appears "
        "at once (see docs/logging.md).", action="store_true",
    ),
    Setting(
        "logger_class", ("--logger-class",), None,
        StrRule(optional=True, hint="a dotted path such as myproject.logs.ServerLogger"),
        "Logging",
        "A class (dotted path) with gunicorn's Logger methods that takes over the error and "
        "access logs (docs/logging.md); gunicorn.glogging.Logger means the built-in one.",
        metavar="STRING",
    ),
)
SETTINGS = SETTINGS + LOGGING_SETTINGS


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
