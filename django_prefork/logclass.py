"""``logger_class``: hand the server's two logs to a class of the project's, gunicorn-style.

The class gets our config (``cls(cfg)``) and gunicorn's ``Logger`` method names; what it must
offer is ``REQUIRED_METHODS``. The server keeps logging through the stdlib loggers
``django_prefork.error`` and ``django_prefork.access``: a bridge handler on the error logger
calls the method named after each record's level, and the access log calls
``access(resp, req, environ, request_time)`` with objects carrying the attributes gunicorn's
own ``Logger.access`` reads. See docs/logging.md, "logger_class".

Stdlib only (no Django import).
"""

from __future__ import annotations

import datetime
import importlib
import logging
import threading
from types import SimpleNamespace
from typing import Any

REQUIRED_METHODS = ("critical", "error", "warning", "info", "debug", "exception", "log",
                    "access", "reopen_files", "close_on_exec")

#: gunicorn's own names for its built-in logger: ours is the equivalent.
BUILT_IN_NAMES = ("gunicorn.glogging.Logger", "egg:gunicorn#simple", "simple")

LABEL = "--logger-class (LOGGER_CLASS)"


class LoggerClassError(Exception):
    """The class cannot be used; ``str()`` is one line naming the setting and why."""


def uses_built_in(path: str | None) -> bool:
    return not path or path.strip() in BUILT_IN_NAMES


def load_logger_class(path: str) -> type:
    """Import ``module.Class`` (or ``module:Class``) and check it offers gunicorn's methods."""
    module_name, sep, attr = path.replace(":", ".").rpartition(".")
    if not sep or not module_name or not attr:
        raise LoggerClassError(f"{LABEL} {path!r} is not a dotted path. Fix: name the class "
                               "as myproject.logs.ServerLogger.")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # an ImportError, or the module's own error while importing
        raise LoggerClassError(f"{LABEL} {path!r} cannot be imported: "
                               f"{type(exc).__name__}: {exc}. Fix: check the path and that "
                               "the module imports.") from None
    missing = [name for name in REQUIRED_METHODS if not callable(getattr(cls, name, None))]
    if not isinstance(cls, type) or missing:
        what = f"has no {', '.join(missing)}" if missing else "is not a class"
        raise LoggerClassError(f"{LABEL} {path!r} {what}. Fix: give it gunicorn's Logger "
                               f"methods ({', '.join(REQUIRED_METHODS)}).")
    return cls


def make_logger(path: str, cfg: Any) -> Any:
    cls = load_logger_class(path)
    try:
        return cls(cfg)
    except Exception as exc:
        raise LoggerClassError(f"{LABEL} {path!r} failed to start: "
                               f"{type(exc).__name__}: {exc}") from None


_METHOD_BY_LEVEL = ((logging.CRITICAL, "critical"), (logging.ERROR, "error"),
                    (logging.WARNING, "warning"), (logging.INFO, "info"))


class BridgeHandler(logging.Handler):
    """Give each record of the error logger to the project's logger object.

    A record the object logs to ``django_prefork.error`` while handling one is not given back
    to it (that would never end); the logger's other handlers still see it.
    """

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target
        self._inside = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._inside, "active", False):
            return
        self._inside.active = True
        try:
            message = record.getMessage()
            if record.exc_info and record.levelno == logging.ERROR:
                self.target.exception(message, exc_info=record.exc_info)
                return
            method = next((name for level, name in _METHOD_BY_LEVEL
                           if record.levelno >= level), "debug")
            kwargs = {"exc_info": record.exc_info} if record.exc_info else {}
            getattr(self.target, method)(message, **kwargs)
        except Exception:
            self.handleError(record)
        finally:
            self._inside.active = False


def _version(protocol: str) -> tuple[int, int]:
    _, _, number = protocol.partition("/")
    major, _, minor = number.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (1, 1)


def _request_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-"), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((key.replace("_", "-"), value))
    return headers


class ClassAccessLogger:
    """The access log through ``target.access(resp, req, environ, request_time)``.

    ``resp`` has gunicorn's ``status`` (the status line), ``status_code``, ``headers`` and
    ``sent``; ``req`` has ``method``, ``uri``, ``path``, ``query``, ``version`` (a tuple) and
    ``headers`` (upper-case names); ``request_time`` is a ``datetime.timedelta``.
    """

    def __init__(self, target: Any) -> None:
        self.target = target

    def log(self, environ: dict[str, Any], status: str, response_headers: list[tuple[str, str]],
            sent_bytes: int, request_time: float) -> None:
        """Never raises: logging must not break a response."""
        try:
            code = status.split(None, 1)[0] if status else ""
            resp = SimpleNamespace(status=status, status_code=int(code) if code.isdigit()
                                   else None, headers=response_headers, sent=sent_bytes)
            req = SimpleNamespace(
                method=environ.get("REQUEST_METHOD", ""),
                uri=environ.get("RAW_URI", environ.get("PATH_INFO", "")),
                path=environ.get("PATH_INFO", ""), query=environ.get("QUERY_STRING", ""),
                version=_version(environ.get("SERVER_PROTOCOL", "HTTP/1.1")),
                headers=_request_headers(environ))
            self.target.access(resp, req, environ, datetime.timedelta(seconds=request_time))
        except Exception:
            logging.getLogger("django_prefork.error").exception(
                "The logger_class's access() failed")
