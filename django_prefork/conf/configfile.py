"""Read a gunicorn config file (``-c gunicorn.conf.py``) as it stands.

The file is Python: settings are module globals with gunicorn's lower-case names, server
hooks are functions named after the hook. Reading it runs it, as gunicorn does. Nothing
here calls a hook: django_prefork/hooks.py does.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import inspect
import os
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..hooks import HOOK_ARITY
from .registry import SETTINGS_BY_NAME

__all__ = ["HOOK_ARITY", "ConfigFile", "FileProblem", "read_config_file"]

#: Names gunicorn accepts that have no meaning here, and why (a note, not an error).
IGNORED: dict[str, str] = {
    "wsgi_app": "Django's WSGI_APPLICATION setting names the application",
}

#: gunicorn 27's settings (docs.gunicorn.org "Settings"): a name from this list that the
#: registry does not have yet is reported as such, not as a typo.
_GUNICORN_SETTINGS_TEXT = """
    config bind backlog workers worker_class threads worker_connections max_requests
    max_requests_jitter timeout graceful_timeout keepalive limit_request_line
    limit_request_fields limit_request_field_size reload reload_engine reload_extra_files
    check_config print_config preload_app sendfile reuse_port chdir daemon raw_env pidfile
    worker_tmp_dir user group umask initgroups tmp_upload_dir secure_scheme_headers
    forwarded_allow_ips accesslog disable_redirect_access_to_syslog access_log_format
    errorlog loglevel capture_output logger_class logconfig logconfig_dict logconfig_json
    syslog_addr syslog syslog_prefix syslog_facility enable_stdio_inheritance statsd_host
    dogstatsd_tags statsd_prefix enable_backlog_metric proc_name default_proc_name
    pythonpath paste proxy_protocol proxy_allow_ips keyfile certfile ssl_version cert_reqs
    ca_certs suppress_ragged_eofs do_handshake_on_connect ciphers raw_paste_global_conf
    permit_obsolete_folding strip_header_spaces permit_unconventional_http_method
    permit_unconventional_http_version casefold_http_method forwarder_headers header_map
    control_socket control_socket_mode control_socket_disable
"""
GUNICORN_SETTINGS = frozenset(_GUNICORN_SETTINGS_TEXT.split())


@dataclass(frozen=True)
class FileProblem:
    """One mistake in the file: the setting name (or None) and a one-line message."""

    name: str | None
    message: str


@dataclass
class ConfigFile:
    """What a config file holds: setting values (as written), hooks, and notes to print."""

    path: str
    values: dict[str, Any] = field(default_factory=dict)
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _run(path: str) -> dict[str, Any]:
    """Execute the file as a module (any file name, as gunicorn allows) and return its globals."""
    loader = importlib.machinery.SourceFileLoader("__config__", path)
    spec = importlib.util.spec_from_file_location("__config__", path, loader=loader)
    assert spec is not None  # a SourceFileLoader always gives a spec
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return vars(module)


def _check_hook(path: str, name: str, value: Any) -> FileProblem | None:
    arity = HOOK_ARITY[name]
    plural = "s" if arity > 1 else ""
    if not callable(value):
        return FileProblem(name, f"config file {path}: hook {name} = {value!r:.60} is not "
                                 f"callable. Fix: define def {name}(...) taking {arity} "
                                 f"argument{plural}, as gunicorn calls it.")
    try:
        inspect.signature(value).bind(*range(arity))
    except (TypeError, ValueError):
        return FileProblem(name, f"config file {path}: hook {name} must accept {arity} "
                                 f"positional argument{plural}, as gunicorn passes them. Fix: "
                                 f"change its signature.")
    return None


def _unknown(path: str, name: str) -> FileProblem:
    where = f"config file {path}: {name!r}"
    if name in GUNICORN_SETTINGS:
        return FileProblem(name, f"{where} is a gunicorn setting django-prefork does not "
                                 "support yet (docs/migrating.md). Fix: remove it.")
    helper = f"a helper variable is skipped when named _{name}"
    close = difflib.get_close_matches(name, [*SETTINGS_BY_NAME, *HOOK_ARITY], n=1)
    if close:
        return FileProblem(name, f"{where} is not a setting: did you mean {close[0]!r}? "
                                 f"({helper})")
    return FileProblem(name, f"{where} is not a setting or a hook. Fix: remove it ({helper}).")


def _imported(value: Any, name: str) -> bool:
    """Whether a global is a tool the file imported (``import os``, ``from multiprocessing
    import cpu_count``, ``from os import environ``) rather than configuration.

    What stays is plain data and functions defined in the file, so a misspelt setting
    (``workerss = 3``) or hook (``def post_frok``) is reported instead of ignored.
    """
    if name in SETTINGS_BY_NAME or name in HOOK_ARITY or name in IGNORED:
        return False
    if isinstance(value, (types.ModuleType, type)):
        return True
    if callable(value):
        return getattr(value, "__module__", None) != "__config__"
    return type(value).__module__ != "builtins"


def read_config_file(path: str) -> tuple[ConfigFile, list[FileProblem]]:
    """Run ``path`` and sort its globals into settings, hooks and problems.

    Skipped, as they are not configuration: names starting with ``_`` and what the file
    imported. A file that is missing or raises gives one problem naming the file and the
    error, and no values.
    """
    result = ConfigFile(path)
    if not os.path.isfile(path):
        why = "is a directory" if os.path.isdir(path) else "does not exist"
        return result, [FileProblem("config", f"config file {path} {why}. Fix: pass the path "
                                              "of an existing file to -c/--config.")]
    try:
        namespace = _run(path)
    except (Exception, SystemExit) as exc:
        error = " ".join(f"{type(exc).__name__}: {exc}".split())
        line = ""
        if isinstance(exc, SyntaxError) and exc.lineno:
            line = f" (line {exc.lineno})"
        return result, [FileProblem("config", f"config file {path} could not be read{line}: "
                                              f"{error}. Fix: correct the file.")]
    problems: list[FileProblem] = []
    for name, value in namespace.items():
        if name.startswith("_") or _imported(value, name):
            continue
        if name in IGNORED:
            result.notes.append(f"config file {path}: {name} is ignored: {IGNORED[name]}.")
        elif name in HOOK_ARITY:
            problem = _check_hook(path, name, value)
            if problem:
                problems.append(problem)
            else:
                result.hooks[name] = value
        elif name == "config":
            problems.append(FileProblem(name, f"config file {path}: 'config' cannot name "
                                              "another file. Fix: remove it."))
        elif name in SETTINGS_BY_NAME:
            result.values[name] = value
        else:
            problems.append(_unknown(path, name))
    return result, problems
