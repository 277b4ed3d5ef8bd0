"""The server's two loggers, gunicorn-style access-log formatting, and log reopening on USR1.

Stdlib only (no Django import), so the gevent worker can import it before patching.

Rule for the project's ``LOGGING`` (see docs/logging.md): if ``LOGGING`` gives handlers to
``django_prefork.error``/``django_prefork.access`` (or to their parent ``django_prefork``),
the project owns that logger's output and we add nothing; otherwise we attach our own handler
from ``errorlog``/``accesslog``. A level the project set is kept. Our loggers are always
re-enabled, because ``disable_existing_loggers`` would otherwise silence them by accident.
gunicorn's logconfig*, syslog*, capture_output, -R and logger_class settings are built by
logconfig.py, logsyslog.py, logcapture.py and logclass.py and applied here, all or nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from .logcapture import StdioCapture, StdioInheritance
from .logclass import BridgeHandler, ClassAccessLogger, LoggerClassError, make_logger, uses_built_in
from .logconfig import ROOT, BuiltLogConfig, LogConfigError, build_all
from .logsyslog import make_syslog_handler

ERROR_LOGGER = "django_prefork.error"
ACCESS_LOGGER = "django_prefork.access"
PARENT_LOGGER = "django_prefork"

ERROR_LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
ERROR_LOG_DATEFMT = "%Y-%m-%d %H:%M:%S %z"
# Same default as the access_log_format setting (gunicorn's).
DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _State:
    """What configure_logging changed, so a second call (HUP) can undo it first."""

    def __init__(self) -> None:
        self.handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self.levels: dict[str, int] = {}
        self.propagate_off: set[str] = set()
        #: handlers a logconfig* setting took off a logger it names (given back on undo)
        self.displaced: list[tuple[logging.Logger, logging.Handler]] = []
        #: level, propagate and filters of each logger a logconfig* setting changed
        self.before_logconfig: dict[str, tuple[int, bool, list[Any]]] = {}
        #: the loggers the current logconfig* settings give handlers to
        self.routed: set[str] = set()
        self.capture = StdioCapture()
        #: the logger_class object, when one owns the error and access logs
        self.logger_object: Any = None
        self.inheritance = StdioInheritance()
        #: the config whose USER/GROUP the log files are handed to (server/privileges.py)
        self.workers_cfg: Any = None


_state = _State()


# --- configuration -------------------------------------------------------------------------

#: While a log cannot be written, say so at most this often (the first failure at once).
WRITE_FAILURE_REPORT_INTERVAL = 60.0


class _ReportsWriteFailures:
    """A handler that cannot write (full disk, closed pipe) says so in one line, not one
    ``--- Logging error ---`` traceback per record, then at most once a minute with the count
    of lost records, and once more when writing works again.

    The reports go to ``report_logger`` when one is set (the access log's go to the error
    log), else straight to the process's stderr: the failing log may be the error log
    itself. emit() runs under the handler's lock, so the counters need no lock of their own.
    """

    log_name = "log"
    report_logger: logging.Logger | None = None
    _lost = 0
    _lost_reported = 0
    _failed_in_emit = False
    _next_report = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_in_emit = False
        super().emit(record)  # type: ignore[misc]
        if not self._failed_in_emit and self._lost:
            self._report(f"the {self.log_name} is written again; {self._lost} "
                         f"line{'s' if self._lost != 1 else ''} could not be written.")
            self._lost = self._lost_reported = 0
            self._next_report = 0.0

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed_in_emit = True
        self._lost += 1
        now = time.monotonic()
        if now < self._next_report:
            return
        self._next_report = now + WRITE_FAILURE_REPORT_INTERVAL
        exc = sys.exc_info()[1]
        why = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) if exc else "?"
        if self._lost == 1:
            self._report(f"cannot write the {self.log_name}: {why}; lines are lost until it "
                         f"can (reported at most every {WRITE_FAILURE_REPORT_INTERVAL:.0f} s).")
        else:
            self._report(f"still cannot write the {self.log_name}: {why}; "
                         f"{self._lost - self._lost_reported} more lines lost.")
        self._lost_reported = self._lost

    def _report(self, line: str) -> None:
        if self.report_logger is not None:
            self.report_logger.warning(line)
            return
        stream = sys.__stderr__ or sys.stderr
        try:
            stream.write(f"django-prefork: {line}\n")
            stream.flush()
        except Exception:  # nowhere left to say it
            pass


class _StreamHandler(_ReportsWriteFailures, logging.StreamHandler):  # type: ignore[type-arg]
    pass


class _FileHandler(_ReportsWriteFailures, logging.FileHandler):
    pass


class _SysLogHandler(_ReportsWriteFailures, logging.handlers.SysLogHandler):
    log_name = "syslog"


def _make_handler(target: str, stream: Any, log_name: str = "log") -> logging.Handler:
    """'-' is the given standard stream; anything else a file opened for appending."""
    handler: _StreamHandler | _FileHandler
    if target == "-":
        handler = _StreamHandler(stream)
    else:
        handler = _FileHandler(target, mode="a", encoding="utf-8")
    handler.log_name = log_name if target == "-" else f"{log_name} {target}"
    return handler


def _close_quietly(handler: logging.Handler) -> None:
    """Close a handler whose last flush may fail (a full disk): losing that tail is better
    than failing the reload or the log rotation that replaces it."""
    try:
        handler.close()
    except (OSError, ValueError):
        stream = getattr(handler, "stream", None)
        with contextlib.suppress(OSError, ValueError):
            if stream is not None:
                stream.close()


def _undo_previous() -> None:
    for logger, handler in _state.handlers:
        logger.removeHandler(handler)
        _close_quietly(handler)
    for name in _state.propagate_off:
        logging.getLogger(name).propagate = True
    for logger, handler in _state.displaced:
        logger.addHandler(handler)
    for name, (level, propagate, filters) in _state.before_logconfig.items():
        logger = _logger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.filters[:] = filters
    _state.handlers.clear()
    _state.propagate_off.clear()
    _state.logger_object = None
    _state.displaced.clear()
    _state.before_logconfig.clear()
    _state.routed.clear()


def _logger(name: str) -> logging.Logger:
    return logging.root if name == ROOT else logging.getLogger(name)


def _apply_logconfig(built: BuiltLogConfig) -> None:
    """The logconfig* settings win for the loggers they name: a logger given handlers there
    gets exactly those (the ones it had are kept aside for an undo), and the level,
    propagate and filters given apply. No logger is disabled."""
    for name, plan in built.loggers.items():
        logger = _logger(name)
        _state.before_logconfig[name] = (logger.level, logger.propagate, logger.filters[:])
        # A logger named without handlers (the ini format requires a [logger_root] section,
        # often with "handlers=") keeps the ones it has.
        for handler in logger.handlers[:] if plan.handlers else ():
            logger.removeHandler(handler)
            _state.displaced.append((logger, handler))
        for handler in plan.handlers:
            logger.addHandler(handler)
            _state.handlers.append((logger, handler))
        if plan.level is not None:
            logger.setLevel(plan.level)
        if plan.propagate is not None:
            logger.propagate = plan.propagate
        if plan.filters:
            logger.filters[:] = plan.filters
        logger.disabled = False
        if plan.handlers:
            _state.routed.add(name)
    # A handler named by no logger is still ours to close on the next setup.
    attached = {id(handler) for _, handler in _state.handlers}
    _state.handlers.extend((logging.root, handler) for handler in built.handlers
                           if id(handler) not in attached)


def _enable_our_loggers() -> None:
    """Undo ``disable_existing_loggers``: it must never silence the server's logs."""
    for name in (PARENT_LOGGER, ERROR_LOGGER, ACCESS_LOGGER):
        logging.getLogger(name).disabled = False
    for name, obj in list(logging.root.manager.loggerDict.items()):
        if name.startswith(PARENT_LOGGER + ".") and isinstance(obj, logging.Logger):
            obj.disabled = False


def _project_routes(name: str, built: BuiltLogConfig | None = None) -> bool:
    """Whether the project's LOGGING, or a logconfig* setting, gave this logger (or
    django_prefork) handlers. ``built``: judge by these logconfig* settings (about to be
    applied) instead of the ones in place."""
    names = (name, PARENT_LOGGER)
    routed = {n for n in names if built.routes(n)} if built is not None else _state.routed
    if any(logger_name in routed for logger_name in names):
        return True
    ours = {id(handler) for _, handler in _state.handlers}
    if any(logger.name in names for logger, _ in _state.displaced):
        return True  # the project's handlers, set aside while a logconfig* routes it
    return any(
        id(handler) not in ours
        for logger_name in names
        for handler in logging.getLogger(logger_name).handlers
    )


def _set_level(logger: logging.Logger, level: int) -> None:
    """Set our level unless the project chose one (a level we set earlier is still ours)."""
    if logger.level == logging.NOTSET or logger.level == _state.levels.get(logger.name):
        logger.setLevel(level)
        _state.levels[logger.name] = level


def _attach(logger: logging.Logger, handler: logging.Handler,
            fmt: logging.Formatter | None = None, *, keep_propagate: bool = False) -> None:
    if fmt is not None:
        handler.setFormatter(fmt)
    logger.addHandler(handler)
    _state.handlers.append((logger, handler))
    if logger.propagate and not keep_propagate:
        logger.propagate = False  # root handlers would print every line a second time
        _state.propagate_off.add(logger.name)


class LoggingSetupError(Exception):
    """A log file named by the settings cannot be opened; the previous setup is kept.

    ``str(exc)`` is one line naming the setting, the path and why.
    """


def configure_logging(cfg: Any) -> AccessLogger | ClassAccessLogger | None:
    """Wire our two loggers after Django's LOGGING; return the AccessLogger, None if off.

    ``cfg`` needs ``errorlog`` ('-' = stderr, or a path), ``accesslog`` (None = off, '-' =
    stdout, or a path), ``loglevel`` and ``access_log_format``; the logconfig*, syslog*,
    ``capture_output``, ``enable_stdio_inheritance`` and ``logger_class`` settings are read
    when present.
    Calling it again (HUP) replaces what the previous call set up, but only once every new
    file is open and every syslog socket connected: if one cannot be, it raises
    LoggingSetupError and the previous setup stays in place, so a reload with a bad path
    keeps logging where it did (as gunicorn keeps its old logger).
    """
    class_path = getattr(cfg, "logger_class", None)
    try:
        logger_object = None if uses_built_in(class_path) else make_logger(str(class_path), cfg)
        built = build_all(cfg)
    except (LogConfigError, LoggerClassError) as exc:
        raise LoggingSetupError(str(exc)) from None
    opened: list[logging.Handler] = []
    try:
        error_target = None
        if logger_object is None and not _project_routes(ERROR_LOGGER, built):
            error_target = getattr(cfg, "errorlog", "-") or "-"
        access_target = getattr(cfg, "accesslog", None)
        if logger_object is not None or (access_target and _project_routes(ACCESS_LOGGER,
                                                                           built)):
            access_target = None
        error_handler = _open_handler("errorlog", error_target, sys.stderr)
        if error_handler is not None:
            opened.append(error_handler)
        access_handler = _open_handler("accesslog", access_target, sys.stdout)
        if access_handler is not None:
            opened.append(access_handler)
        syslog_handlers = _open_syslog(cfg)
        opened.extend(handler for _, handler in syslog_handlers)
        capture_path = StdioCapture.target(cfg)
        capture_fd = _open_capture(capture_path)
    except BaseException:
        for handler in opened:
            _close_quietly(handler)
        built.close()
        raise

    _undo_previous()
    _apply_logconfig(built)
    _enable_our_loggers()
    error = logging.getLogger(ERROR_LOGGER)
    level = _LEVELS.get(str(getattr(cfg, "loglevel", "info") or "info").lower(), logging.INFO)
    _set_level(error, level)
    if error_handler is not None:
        _attach(error, error_handler, logging.Formatter(ERROR_LOG_FORMAT, ERROR_LOG_DATEFMT))
    access = logging.getLogger(ACCESS_LOGGER)
    _set_level(access, logging.INFO)
    if access_handler is not None:
        if isinstance(access_handler, _ReportsWriteFailures):
            access_handler.report_logger = error  # say it where operators look
        _attach(access, access_handler, logging.Formatter("%(message)s"))
    if logger_object is not None:
        _attach(error, BridgeHandler(logger_object),
                keep_propagate=_project_routes(ERROR_LOGGER))
        _state.logger_object = logger_object
    for name, handler in syslog_handlers:
        # In addition to the log files, as gunicorn; a logger the project or a logconfig*
        # routes keeps its propagate.
        _attach(logging.getLogger(name), handler, keep_propagate=_project_routes(name))
    _state.capture.apply(capture_path, capture_fd)
    _state.inheritance.apply(bool(getattr(cfg, "enable_stdio_inheritance", False)))
    _state.workers_cfg = cfg
    _give_files_to_workers()
    return make_access_logger(cfg)


def logging_problems(cfg: Any) -> list[str]:
    """What configure_logging would refuse, found without applying anything (for
    --check-config): the logconfig files and dict, the logger class, the syslog socket.
    What it opens to find out is closed again."""
    problems: list[str] = []
    class_path = getattr(cfg, "logger_class", None)
    try:
        if not uses_built_in(class_path):
            make_logger(str(class_path), cfg)
    except LoggerClassError as exc:
        problems.append(str(exc))
    try:
        build_all(cfg).close()
    except LogConfigError as exc:
        problems.append(str(exc))
    try:
        for _, handler in _open_syslog(cfg):
            _close_quietly(handler)
    except LoggingSetupError as exc:
        problems.append(str(exc))
    return problems


def _give_files_to_workers() -> None:
    """With USER/GROUP, the workers (and the zygote) open and reopen (USR1) the files the
    master opened: as gunicorn, the master hands them to that user (a no-op unless root)."""
    from django_prefork.server.privileges import give_file_to_workers

    cfg = _state.workers_cfg
    if cfg is None:
        return
    paths = [handler.baseFilename for _, handler in _state.handlers
             if isinstance(handler, logging.FileHandler)]
    if _state.capture.path:
        paths.append(_state.capture.path)
    for path in paths:
        give_file_to_workers(cfg, path)


def _open_syslog(cfg: Any) -> list[tuple[str, logging.Handler]]:
    """The syslog handlers for our loggers (sockets already open), as gunicorn: the error
    log, and the access log unless disable_redirect_access_to_syslog."""
    if not getattr(cfg, "syslog", False):
        return []
    address = str(getattr(cfg, "syslog_addr", "") or "")
    wanted = [(ERROR_LOGGER, "error")]
    if not getattr(cfg, "disable_redirect_access_to_syslog", False):
        wanted.append((ACCESS_LOGGER, "access"))
    prefix = getattr(cfg, "syslog_prefix", None) or getattr(cfg, "proc_name", None)
    facility = str(getattr(cfg, "syslog_facility", "user") or "user")
    handlers: list[tuple[str, logging.Handler]] = []
    try:
        for logger_name, log_name in wanted:
            syslog = make_syslog_handler(address, facility, prefix, log_name, _SysLogHandler)
            syslog.log_name = f"{log_name} log's syslog {address}"
            handlers.append((logger_name, syslog))
    except (OSError, ValueError) as exc:
        for _, handler in handlers:
            _close_quietly(handler)
        why = getattr(exc, "strerror", None) or str(exc)
        raise LoggingSetupError(
            f"--log-syslog-to (SYSLOG_ADDR) {address!r} cannot be opened: {why}. Fix: start "
            "the syslog daemon, or point --log-syslog-to at the socket it listens on."
        ) from None
    return handlers


def _open_capture(path: str | None) -> int | None:
    if path is None:
        return None
    try:
        return StdioCapture.open(path)
    except OSError as exc:
        raise LoggingSetupError(
            f"--capture-output (CAPTURE_OUTPUT) cannot open the error log {path!r}: "
            f"{exc.strerror or exc}. Fix: make --error-logfile a writable file."
        ) from None


_SETTING_NAMES = {"errorlog": "--error-logfile (ERRORLOG)",
                  "accesslog": "--access-logfile (ACCESSLOG)"}


def _open_handler(setting: str, target: str | None, stream: Any) -> logging.Handler | None:
    """The handler for one log setting, its file already open; None when it has none."""
    if target is None:
        return None
    try:
        return _make_handler(target, stream, setting.replace("log", " log"))
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise LoggingSetupError(
            f"{_SETTING_NAMES[setting]} {target!r} cannot be opened: {why}. Fix: create its "
            "directory, make it writable by this user, or use '-' for the console."
        ) from None


def make_access_logger(cfg: Any) -> AccessLogger | ClassAccessLogger | None:
    """The AccessLogger a worker should use, or None when there is no access log.

    On when ``cfg.accesslog`` is set, when the access log goes to syslog, or when the
    project's LOGGING or a logconfig* setting routes ``django_prefork.access`` itself (so
    that alone can turn it on).
    """
    if _state.logger_object is not None:  # it gets every request, and decides (as gunicorn)
        return ClassAccessLogger(_state.logger_object)
    to_syslog = (getattr(cfg, "syslog", False)
                 and not getattr(cfg, "disable_redirect_access_to_syslog", False))
    if not (getattr(cfg, "accesslog", None) or to_syslog or _project_routes(ACCESS_LOGGER)):
        return None
    fmt = getattr(cfg, "access_log_format", None) or DEFAULT_ACCESS_LOG_FORMAT
    return AccessLogger(fmt, logging.getLogger(ACCESS_LOGGER))


def reopen_log_files() -> None:
    """USR1: reopen every log file we opened (the logconfig* settings' file handlers too),
    by path, so logrotate's rename takes effect; capture_output captures into the new file."""
    _state.capture.reopen()
    if _state.logger_object is not None:
        try:
            _state.logger_object.reopen_files()
        except Exception:
            logging.getLogger(ERROR_LOGGER).exception("The logger_class's reopen_files() failed")
    for _, handler in list(_state.handlers):
        if not isinstance(handler, logging.FileHandler):
            continue
        handler.acquire()
        try:
            try:
                stream = open(handler.baseFilename, handler.mode,  # noqa: SIM115
                              encoding=handler.encoding, errors=handler.errors)
            except OSError as exc:  # keep writing to the old file rather than to nowhere
                sys.stderr.write(f"django-prefork: cannot reopen {handler.baseFilename}: {exc}\n")
                continue
            old, handler.stream = handler.stream, stream  # type: ignore[assignment]
            if old is not None:
                with contextlib.suppress(OSError, ValueError):  # its last flush may fail
                    old.flush()
                with contextlib.suppress(OSError, ValueError):
                    old.close()
        finally:
            handler.release()
    _give_files_to_workers()  # the master may just have created them, as root


# --- wsgi.errors ---------------------------------------------------------------------------

class ErrorStream:
    """File-like ``wsgi.errors``: complete lines go to the error log, one record each.

    Buffers per thread (greenlet under gevent), because ``print()`` writes the text and the
    newline in two calls and concurrent requests must not mix their halves.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.ERROR) -> None:
        self.logger = logger or logging.getLogger(ERROR_LOGGER)
        self.level = level
        self._local = threading.local()

    def write(self, data: str) -> int:
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode("utf-8", "replace")
        *lines, rest = (getattr(self._local, "buffer", "") + data).split("\n")
        self._local.buffer = rest
        for line in lines:
            self._emit(line)
        return len(data)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        rest = getattr(self._local, "buffer", "")
        self._local.buffer = ""
        self._emit(rest)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        if line:
            self.logger.log(self.level, line)


# --- access log ----------------------------------------------------------------------------

_ATOM = re.compile(r"%\(([^)]*)\)[#0\- +]*\d*(?:\.\d+)?[a-zA-Z]")
_ATOM_KEY = re.compile(r"%\(([^)]*)\)")
_HEADER_ATOM = re.compile(r"^\{(.+)\}([ioe])$")
_TEXT_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\]')
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_URI_SAFE = "/:@!$&'()*+,;=-._~"

Getter = Callable[[dict[str, Any], str, list[tuple[str, str]], int, float], Any]


def _text_sub(match: re.Match[str]) -> str:
    char = match.group()
    return "\\" + char if char in '"\\' else f"\\x{ord(char):02x}"


def _escape_text(value: str) -> str:
    """Apache-style: no raw newline/control character or unescaped quote reaches the log."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value  # the common case, checked in C
    return _TEXT_UNSAFE.sub(_text_sub, value)


def _escape_json(value: str) -> str:
    """The inside of a JSON string literal (the format supplies the quotes)."""
    return json.dumps(value)[1:-1]


def is_json_format(fmt: str) -> bool:
    """A format is JSON when it starts with '{' and is valid JSON once its atoms are filled."""
    if not fmt.lstrip().startswith("{"):
        return False
    try:
        json.loads(_ATOM.sub("0", fmt).replace("%%", "%"))
    except ValueError:
        return False
    return True


def _environ_key(header: str) -> str:
    name = header.upper().replace("-", "_")
    return name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + name


def _remote_user(environ: dict[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return "-"
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8", "replace")
    except (ValueError, UnicodeEncodeError):
        return "-"
    return decoded.partition(":")[0] or "-"


def _raw_uri(environ: dict[str, Any]) -> str:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    uri = quote(path.encode("latin-1", "replace"), safe=_URI_SAFE)
    query = environ.get("QUERY_STRING")
    return f"{uri}?{query}" if query else uri


def _micro(seconds: float) -> int:
    """Whole microseconds, rounded once so T, M, D and L agree (0.29 s is 290000, not 289999)."""
    return round(seconds * 1_000_000)


class _Clock:
    """Caches the '[10/Oct/2000:13:55:36 -0700]' string for the current second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        now = int(time.time())
        if now != self._second:
            t = time.localtime(now)
            self._text = time.strftime(f"[%d/{_MONTHS[t.tm_mon - 1]}/%Y:%H:%M:%S %z]", t)
            self._second = now
        return self._text


def _simple_getters(clock: _Clock) -> dict[str, Getter]:
    return {
        "h": lambda e, s, h, b, t: e.get("REMOTE_ADDR") or "-",
        "l": lambda e, s, h, b, t: "-",
        "u": lambda e, s, h, b, t: _remote_user(e),
        "t": lambda e, s, h, b, t: clock.now(),
        "r": lambda e, s, h, b, t: (f"{e.get('REQUEST_METHOD', '-')} {_raw_uri(e)} "
                                    f"{e.get('SERVER_PROTOCOL', '-')}"),
        "m": lambda e, s, h, b, t: e.get("REQUEST_METHOD") or "-",
        "U": lambda e, s, h, b, t: e.get("PATH_INFO") or "-",
        "q": lambda e, s, h, b, t: e.get("QUERY_STRING", ""),  # empty, not '-', as gunicorn
        "H": lambda e, s, h, b, t: e.get("SERVER_PROTOCOL") or "-",
        "s": lambda e, s, h, b, t: s.split(None, 1)[0] if s else "-",
        "B": lambda e, s, h, b, t: int(b or 0),
        "b": lambda e, s, h, b, t: str(b) if b else "-",
        "f": lambda e, s, h, b, t: e.get("HTTP_REFERER") or "-",
        "a": lambda e, s, h, b, t: e.get("HTTP_USER_AGENT") or "-",
        "T": lambda e, s, h, b, t: _micro(t) // 1_000_000,
        "D": lambda e, s, h, b, t: _micro(t),
        "M": lambda e, s, h, b, t: _micro(t) // 1_000,
        "L": lambda e, s, h, b, t: "%d.%06d" % divmod(_micro(t), 1_000_000),  # noqa: UP031
        "p": lambda e, s, h, b, t: f"<{os.getpid()}>",
    }


def _header_getter(key: str) -> Getter | None:
    match = _HEADER_ATOM.match(key)
    if not match:
        return None
    name, kind = match.groups()
    if kind == "i":
        env_key = _environ_key(name)
        return lambda e, s, h, b, t: e.get(env_key) or "-"
    wanted = name.lower()
    if kind == "e":
        def environ_var(e: dict[str, Any], s: str, h: list[tuple[str, str]], b: int,
                        t: float) -> str:
            if name in e:
                return str(e[name])
            for key, value in e.items():  # case-insensitive, as gunicorn
                if key.lower() == wanted:
                    return str(value)
            return "-"
        return environ_var

    def response_header(e: dict[str, Any], s: str, h: list[tuple[str, str]], b: int,
                        t: float) -> str:
        for header, value in h:
            if header.lower() == wanted:
                return str(value)
        return "-"
    return response_header


class AccessLogger:
    """Formats one access-log line per request from gunicorn's atoms and logs it at INFO.

    The format is fixed at start-up, so __init__ works out which atoms it uses and each
    request computes only those. A format that is JSON (starts with '{') gets its values
    JSON-escaped; otherwise quotes, backslashes and control characters are escaped.
    """

    def __init__(self, fmt: str = DEFAULT_ACCESS_LOG_FORMAT,
                 logger: logging.Logger | None = None) -> None:
        self.fmt = fmt
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.json = is_json_format(fmt)
        self._escape = _escape_json if self.json else _escape_text
        simple = _simple_getters(_Clock())
        self._getters: list[tuple[str, Getter]] = []
        for key in dict.fromkeys(_ATOM_KEY.findall(fmt)):
            getter = simple.get(key) or _header_getter(key) or (lambda e, s, h, b, t: "-")
            self._getters.append((key, getter))
        try:  # a broken format should fail at start-up, not on the first request
            self.format({}, "200 OK", [], 0, 0.0)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"access_log_format {fmt!r} is invalid: {exc}. Fix: use "
                             "%(atom)s placeholders and write a literal % as %%.") from exc

    def format(self, environ: dict[str, Any], status: str, response_headers: list[tuple[str, str]],
               sent_bytes: int, request_time: float) -> str:
        """The log line for one request (no trailing newline)."""
        values: dict[str, Any] = {}
        escape = self._escape
        for key, getter in self._getters:
            value = getter(environ, status, response_headers, sent_bytes, request_time)
            values[key] = escape(value) if isinstance(value, str) else value
        return self.fmt % values

    def log(self, environ: dict[str, Any], status: str, response_headers: list[tuple[str, str]],
            sent_bytes: int, request_time: float) -> None:
        """Log one request; never raises, because logging must not break a response."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        try:
            line = self.format(environ, status, response_headers, sent_bytes, request_time)
        except Exception:
            logging.getLogger(ERROR_LOGGER).exception("Failed to format the access log line")
            return
        self.logger.info(line)
