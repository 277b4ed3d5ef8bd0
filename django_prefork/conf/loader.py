"""Load, validate and hold the server configuration.

Precedence, lowest to highest: defaults < ``settings.PREFORK`` < a gunicorn config file
(``-c``) < environment variables (``PORT``, ``WEB_CONCURRENCY``, ``FORWARDED_ALLOW_IPS``,
``SENDFILE``, and gunicorn's flags in ``GUNICORN_CMD_ARGS``) < command line. Every user mistake
becomes a ``ConfigError`` whose ``str()`` is one line naming the setting, the bad value and
the fix, so the command can print it instead of a traceback. No Django import here: the
workers and the docs generator use this without settings.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..hooks import CALLED_HOOKS, HookError, import_hook
from .binds import BindSpec, parse_bind
from .configfile import ConfigFile, read_config_file
from .registry import SECTIONS, SETTINGS, SETTINGS_BY_KEY, SETTINGS_BY_NAME, Setting
from .validators import Invalid

__all__ = [
    "SOURCES",
    "Config",
    "ConfigError",
    "add_arguments",
    "load_config",
    "load_config_collecting",
    "validate_prefork",
]

DEFAULT = "default"
PREFORK = "PREFORK"
CONFIG_FILE = "config file"
ENVIRONMENT = "environment"
COMMAND_LINE = "command line"
SOURCES = (DEFAULT, PREFORK, CONFIG_FILE, ENVIRONMENT, COMMAND_LINE)
#: gunicorn's variable for extra command-line flags (shlex-split), read as the environment.
CMD_ARGS_ENV = "GUNICORN_CMD_ARGS"

_MAX_REPR = 120


class ConfigError(Exception):
    """A configuration mistake; ``str()`` is one line: where, value, why, and the fix."""

    def __init__(self, message: str, *, setting: str | None = None, value: Any = None,
                 source: str | None = None) -> None:
        message = " ".join(message.split())  # guarantee one line
        super().__init__(message)
        self.message = message
        self.setting = setting
        self.value = value
        self.source = source
        #: every error found by the call that raised this one (this one first)
        self.errors: list[ConfigError] = [self]


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _cli_text(value: Any) -> str:
    if isinstance(value, str):
        return shlex.quote(value) if value else "''"
    return _short_repr(value)


def _error(setting: Setting, source: str, value: Any, exc: Invalid, *,
           env_var: str | None = None, label: str | None = None) -> ConfigError:
    """Build the one-line message for ``exc`` in the words of the place the value came from."""
    if source == COMMAND_LINE and setting.flag:
        shown = exc.item if exc.has_item else value
        where = f"{setting.flag} {_cli_text(shown)}"
        fix = f"pass {setting.flag} {exc.to}"
    elif source == CONFIG_FILE and label:
        where = f"config file {label}: {setting.name} = {_short_repr(value)}"
        fix = f"set {setting.name} to {exc.to}"
    elif source == ENVIRONMENT and env_var == CMD_ARGS_ENV and setting.flag:
        shown = exc.item if exc.has_item else value
        where = f"{CMD_ARGS_ENV}: {setting.flag} {_cli_text(shown)}"
        fix = f"pass {setting.flag} {exc.to} in {CMD_ARGS_ENV}"
    elif source == ENVIRONMENT and env_var:
        where = f"environment variable {env_var}={_short_repr(value)}"
        fix = f"set {env_var} to {exc.to} or unset it"
    elif label == "replace":
        where = f"Config.replace({setting.name}={_short_repr(value)})"
        fix = f"set {setting.name} to {exc.to}"
    elif label is not None:  # Config.from_dict
        where = f"{label}[{setting.name!r}] = {_short_repr(value)}"
        fix = f"set {setting.name} to {exc.to}"
    else:
        where = f"PREFORK[{setting.key!r}] = {_short_repr(value)}"
        fix = f"set {setting.key} to {exc.to}"
    if exc.fix:
        fix = exc.fix
    reason = exc.reason
    if exc.has_item and source != COMMAND_LINE and _short_repr(exc.item) not in reason:
        reason = f"{_short_repr(exc.item)}: {reason}"
    return ConfigError(f"{where} is invalid: {reason}. Fix: {fix}.",
                       setting=setting.name, value=value, source=source)


def _aliases() -> dict[str, str]:
    """Names people plausibly write for a key: gunicorn flag spellings, lower case names."""
    out: dict[str, str] = {}
    for s in SETTINGS:
        out[s.name.upper()] = s.key
        for flag in s.flags:
            if flag.startswith("--"):
                out[flag[2:].replace("-", "_").upper()] = s.key
    return out


_ALIASES = _aliases()


def _unknown_key(key: Any) -> ConfigError:
    if not isinstance(key, str):
        return ConfigError(
            f"PREFORK has a non-string key {_short_repr(key)}. Fix: use the upper-case "
            f"setting names, e.g. 'WORKERS'.", source=PREFORK, value=key)
    guess = _ALIASES.get(key.strip().upper().replace("-", "_"))
    if guess is None:
        close = difflib.get_close_matches(key.upper(), list(SETTINGS_BY_KEY), n=1)
        guess = close[0] if close else None
    if guess is not None:
        return ConfigError(f"PREFORK has an unknown key {key!r}: did you mean {guess!r}?",
                           source=PREFORK, value=key)
    return ConfigError(
        f"PREFORK has an unknown key {key!r}. Fix: remove it; the valid keys are listed in "
        f"docs/settings.md (e.g. 'WORKERS', 'BIND').", source=PREFORK, value=key)


def _check_prefork(prefork: Any) -> tuple[dict[str, Any], list[ConfigError]]:
    """Validate a PREFORK mapping; return converted values by setting name and all errors."""
    if prefork is None:
        return {}, []
    if not isinstance(prefork, Mapping):
        return {}, [ConfigError(
            f"PREFORK must be a dict, not {type(prefork).__name__}. Fix: write "
            f"PREFORK = {{'WORKERS': 3, ...}} in settings.py.", source=PREFORK, value=prefork)]
    values: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for key, raw in prefork.items():
        setting = SETTINGS_BY_KEY.get(key) if isinstance(key, str) else None
        if setting is None:
            errors.append(_unknown_key(key))
            continue
        try:
            values[setting.name] = setting.rule(raw, False)
        except Invalid as exc:
            errors.append(_error(setting, PREFORK, raw, exc))
    return values, errors


def validate_prefork(prefork: Any) -> list[ConfigError]:
    """Every problem in a PREFORK value (for the Django system check), not just the first."""
    return _check_prefork(prefork)[1]


def _check_environ(environ: Mapping[str, str] | None) -> tuple[dict[str, Any], list[ConfigError]]:
    values: dict[str, Any] = {}
    errors: list[ConfigError] = []
    if not environ:
        return values, errors
    for setting in SETTINGS:
        if not setting.env:
            continue
        text = environ.get(setting.env)
        if text is None or not str(text).strip():  # empty = unset, as shells often leave it
            continue
        try:
            raw = setting.env_convert(text) if setting.env_convert else text
            values[setting.name] = setting.rule(raw, True)
        except Invalid as exc:
            errors.append(_error(setting, ENVIRONMENT, text, exc, env_var=setting.env))
    cmd_args = environ.get(CMD_ARGS_ENV)
    if cmd_args and cmd_args.strip():
        given, parse_errors = _parse_cmd_args(cmd_args)
        errors.extend(parse_errors)
        for name, raw in given.items():
            setting = SETTINGS_BY_NAME[name]
            try:
                values[name] = setting.rule(raw, True)
            except Invalid as exc:
                errors.append(_error(setting, ENVIRONMENT, raw, exc, env_var=CMD_ARGS_ENV))
    return values, errors


class _FlagsError(Exception):
    """argparse's complaint about GUNICORN_CMD_ARGS, raised instead of exiting."""


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit
        raise _FlagsError(message)


def _parse_cmd_args(text: str) -> tuple[dict[str, Any], list[ConfigError]]:
    """Settings from ``GUNICORN_CMD_ARGS``: gunicorn's flags, split as a shell would."""
    def problem(why: str) -> list[ConfigError]:
        return [ConfigError(f"environment variable {CMD_ARGS_ENV}={_short_repr(text)} is "
                            f"invalid: {why}. Fix: pass only setting flags such as "
                            f"'--workers 3 --timeout 60', or unset it.",
                            source=ENVIRONMENT, value=text)]
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        return {}, problem(str(exc))
    parser = _RaisingParser(prog=CMD_ARGS_ENV, add_help=False, allow_abbrev=False)
    add_arguments(parser)
    try:
        namespace = parser.parse_args(argv)
    except _FlagsError as exc:
        return {}, problem(str(exc))
    return vars(namespace), []


def _check_config_file(path: str) -> tuple[ConfigFile, dict[str, Any], list[ConfigError]]:
    """The file's settings (converted as text is, like gunicorn's validators) and errors."""
    config_file, problems = read_config_file(path)
    errors = [ConfigError(p.message, setting=p.name, source=CONFIG_FILE, value=path)
              for p in problems]
    values: dict[str, Any] = {}
    for name, raw in config_file.values.items():
        setting = SETTINGS_BY_NAME[name]
        try:
            values[name] = setting.rule(raw, True)
        except Invalid as exc:
            errors.append(_error(setting, CONFIG_FILE, raw, exc, label=path))
    return config_file, values, errors


def _check_cli(cli: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[ConfigError]]:
    """Options from argparse (or call_command); keys that are not settings are ignored so
    the command can pass all its options, and None means "not given"."""
    values: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for name, raw in (cli or {}).items():
        setting = SETTINGS_BY_NAME.get(name)
        if setting is None or raw is None:
            continue
        try:
            values[name] = setting.rule(raw, True)
        except Invalid as exc:
            errors.append(_error(setting, COMMAND_LINE, raw, exc))
    return values, errors


def _raise_first(errors: list[ConfigError]) -> None:
    if errors:
        first = errors[0]
        first.errors = list(errors)
        raise first


def _copy(value: Any) -> Any:
    """Callers get their own list/dict so a mutation cannot change the shared config."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


class Config:
    """The resolved, validated settings; read-only. ``cfg.<name>`` for every setting."""

    __slots__ = ("_hooks", "_notes", "_sources", "_values")

    # For editors and type checkers; values come from __getattr__.
    bind: list[str]
    backlog: int
    workers: int
    worker_class: str
    threads: int
    worker_connections: int
    timeout: int
    graceful_timeout: int
    keepalive: int
    max_requests: int
    max_requests_jitter: int
    preload_app: bool
    pidfile: str | None
    umask: int
    reload_batch: int
    reload_warmup_path: str | None
    reload: bool
    reload_engine: str
    reload_extra_files: list[str]
    proc_name: str | None
    accesslog: str | None
    access_log_format: str
    errorlog: str | None
    loglevel: str
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    header_timeout: int
    limit_request_body: int
    header_map: str
    forwarded_allow_ips: list[str]
    secure_scheme_headers: dict[str, str]
    metrics_bind: str | None
    health_on_main_bind: bool
    statsd_host: str | None
    statsd_prefix: str
    dogstatsd_tags: str
    enable_backlog_metric: bool
    config: str | None
    raw_env: list[str]
    chdir: str | None
    pythonpath: list[str]
    reuse_port: bool
    sendfile: bool
    forwarder_headers: list[str]
    casefold_http_method: bool
    permit_obsolete_folding: bool
    strip_header_spaces: bool
    user: int | None
    group: int | None
    initgroups: bool
    worker_tmp_dir: str | None
    daemon: bool
    proxy_protocol: str
    proxy_allow_ips: list[str]
    certfile: str | None
    keyfile: str | None
    ca_certs: str | None
    cert_reqs: int
    ssl_version: str | None
    ciphers: str | None
    do_handshake_on_connect: bool
    suppress_ragged_eofs: bool
    ssl_context: str | None
    # gunicorn's server hooks as PREFORK dotted paths (cfg.hooks holds the functions)
    on_starting: str | None
    on_reload: str | None
    when_ready: str | None
    pre_fork: str | None
    post_fork: str | None
    post_worker_init: str | None
    worker_int: str | None
    worker_abort: str | None
    pre_exec: str | None
    pre_request: str | None
    post_request: str | None
    child_exit: str | None
    worker_exit: str | None
    nworkers_changed: str | None
    on_exit: str | None
    logconfig: str | None
    logconfig_json: str | None
    logconfig_dict: dict[str, Any]
    syslog: bool
    syslog_addr: str
    syslog_prefix: str | None
    syslog_facility: str
    disable_redirect_access_to_syslog: bool
    capture_output: bool
    enable_stdio_inheritance: bool
    logger_class: str | None
    control_socket: str | None
    control_socket_mode: int
    control_socket_disable: bool

    def __init__(self, values: Mapping[str, Any] | None = None,
                 sources: Mapping[str, str] | None = None,
                 hooks: Mapping[str, Callable[..., Any]] | None = None,
                 notes: Iterable[str] = ()) -> None:
        """Trusted constructor: ``values`` must already be validated (use load_config).

        ``hooks`` None means "not read yet": ``cfg.hooks`` then reads them from the config
        file on first use (a Config rebuilt in a fresh interpreter by from_dict).
        """
        vals = {s.name: _copy(s.default) for s in SETTINGS}
        srcs = {s.name: DEFAULT for s in SETTINGS}
        vals.update(values or {})
        srcs.update(sources or {})
        object.__setattr__(self, "_values", vals)
        object.__setattr__(self, "_sources", srcs)
        object.__setattr__(self, "_hooks", dict(hooks) if hooks is not None else None)
        object.__setattr__(self, "_notes", tuple(notes))

    @property
    def hooks(self) -> dict[str, Callable[..., Any]]:
        """gunicorn server hooks: hook name -> function (validated: callable with gunicorn's
        arity; called by django_prefork/hooks.py). The config file's functions, and PREFORK's
        dotted paths for the hooks the file does not define (the file wins, as it does for
        every setting)."""
        if self._hooks is None:
            found: dict[str, Callable[..., Any]] = {}
            if self._values["config"]:
                config_file, _ = read_config_file(self._values["config"])
                found = config_file.hooks
            hooks, _ = _resolve_hooks(self._values, found)
            object.__setattr__(self, "_hooks", hooks)
        return dict(self._hooks or {})

    @property
    def notes(self) -> tuple[str, ...]:
        """One-line remarks for the operator from loading (e.g. an ignored ``wsgi_app``)."""
        return tuple(self._notes)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return _copy(self._values[name])
        except KeyError:
            close = difflib.get_close_matches(name, list(SETTINGS_BY_NAME), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AttributeError(f"Config has no setting {name!r}{hint}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is read-only; use cfg.replace(name=value)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return bool(self._values == other._values)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        changed = ", ".join(f"{n}={v!r}" for n, v in self._values.items()
                            if self._sources[n] != DEFAULT)
        return f"Config({changed})"

    def source(self, name: str) -> str:
        """Where the value of ``name`` came from: one of ``SOURCES``."""
        if name not in self._sources:
            raise KeyError(f"unknown setting {name!r}")
        return str(self._sources[name])

    def sources(self) -> dict[str, str]:
        """Setting name -> source, for every setting."""
        return dict(self._sources)

    @property
    def bind_specs(self) -> list[BindSpec]:
        """``bind`` parsed (always valid here), for the socket layer."""
        return [parse_bind(spec) for spec in self._values["bind"]]

    def to_dict(self) -> dict[str, Any]:
        """Setting name -> value; JSON-safe (lists, dicts, str, int, bool, None)."""
        return {name: _copy(value) for name, value in self._values.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  sources: Mapping[str, str] | None = None) -> Config:
        """Rebuild from ``to_dict()`` output (re-validated); missing names get defaults.

        ``sources`` (from ``cfg.sources()``) keeps ``source()`` answers; without it every
        value counts as "default". ``to_json``/``from_json`` carry both.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"config data must be a dict, not {type(data).__name__}")
        values: dict[str, Any] = {}
        errors: list[ConfigError] = []
        for name, raw in data.items():
            setting = SETTINGS_BY_NAME.get(name)
            if setting is None:
                close = difflib.get_close_matches(str(name), list(SETTINGS_BY_NAME), n=1)
                hint = f": did you mean {close[0]!r}?" if close else ""
                errors.append(ConfigError(f"config has an unknown setting {name!r}{hint}",
                                          value=name))
                continue
            try:
                values[name] = setting.rule(raw, False)
            except Invalid as exc:
                errors.append(_error(setting, DEFAULT, raw, exc, label="config"))
        _raise_first(errors)
        srcs = {n: s for n, s in (sources or {}).items() if n in values and s in SOURCES}
        return cls(values, srcs)

    def to_json(self) -> dict[str, Any]:
        """``{"values": ..., "sources": ...}``: what a spawned worker needs, JSON-safe."""
        return {"values": self.to_dict(), "sources": self.sources()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Config:
        """Inverse of ``to_json`` (takes the already decoded object)."""
        return cls.from_dict(data.get("values", {}), data.get("sources"))

    def replace(self, _source: str | None = None, **changes: Any) -> Config:
        """A validated copy with ``changes``; sources stay unless ``_source`` is given."""
        values = dict(self._values)
        sources = dict(self._sources)
        errors: list[ConfigError] = []
        for name, raw in changes.items():
            setting = SETTINGS_BY_NAME.get(name)
            if setting is None:
                close = difflib.get_close_matches(name, list(SETTINGS_BY_NAME), n=1)
                hint = f": did you mean {close[0]!r}?" if close else ""
                errors.append(ConfigError(f"replace() got an unknown setting {name!r}{hint}",
                                          value=name))
                continue
            try:
                values[name] = setting.rule(raw, False)
            except Invalid as exc:
                errors.append(_error(setting, DEFAULT, raw, exc, label="replace"))
                continue
            if _source is not None:
                if _source not in SOURCES:
                    raise ValueError(f"_source must be one of {SOURCES}, not {_source!r}")
                sources[name] = _source
        _raise_first(errors)
        return type(self)(values, sources, self._hooks, self._notes)

    def format_for_print(self) -> str:
        """``--print-config`` output: ``name = value   (source)``, one line per setting."""
        width = max(len(s.name) for s in SETTINGS)
        rows = [(s.name, repr(self._values[s.name]), self._sources[s.name]) for s in SETTINGS]
        vwidth = min(max(len(v) for _, v, _ in rows), 60)
        return "\n".join(
            f"{name:<{width}} = {value:<{vwidth}}   ({source})" for name, value, source in rows
        )


def load_config(prefork: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None,
                cli: Mapping[str, Any] | None = None) -> Config:
    """Merge defaults < PREFORK < config file < environment < command line; raise the
    first ConfigError.

    The config file is the ``config`` setting's value from the highest layer that sets it
    (``-c``, ``GUNICORN_CMD_ARGS``'s ``-c``, ``PREFORK["CONFIG"]``).

    The raised error's ``errors`` attribute lists every problem found.
    """
    cfg, errors = load_config_collecting(prefork, environ, cli)
    _raise_first(errors)
    return cfg


def load_config_collecting(prefork: Mapping[str, Any] | None = None,
                           environ: Mapping[str, str] | None = None,
                           cli: Mapping[str, Any] | None = None,
                           ) -> tuple[Config, list[ConfigError]]:
    """Collect-all mode (``--check-config``): every problem, and a Config of the rest.

    A value with a problem is left out, so its setting keeps the value of the layer below
    (or the default); the Config lets the later checks look at everything that is valid.
    """
    layers = [
        (PREFORK, _check_prefork(prefork)),
        (ENVIRONMENT, _check_environ(environ)),
        (COMMAND_LINE, _check_cli(cli)),
    ]
    path = next((vals["config"] for _, (vals, _) in reversed(layers) if vals.get("config")),
                None)
    hooks: dict[str, Callable[..., Any]] = {}
    notes: list[str] = []
    if path:
        config_file, file_values, file_errors = _check_config_file(path)
        layers.insert(1, (CONFIG_FILE, (file_values, file_errors)))
        hooks, notes = config_file.hooks, config_file.notes
    errors = [err for _, (_, errs) in layers for err in errs]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, (layer_values, _) in layers:
        for name, value in layer_values.items():
            values[name] = value
            sources[name] = source
    hooks, hook_errors = _resolve_hooks(values, hooks)
    for error in hook_errors:
        values.pop(error.setting or "", None)
        sources.pop(error.setting or "", None)
    return Config(values, sources, hooks, notes), errors + hook_errors


def _resolve_hooks(values: Mapping[str, Any], file_hooks: Mapping[str, Callable[..., Any]],
                   ) -> tuple[dict[str, Callable[..., Any]], list[ConfigError]]:
    """The config file's hooks plus those named by dotted paths (imported and checked now,
    at start-up); a path that cannot be used is an error naming its PREFORK key."""
    hooks = dict(file_hooks)
    errors: list[ConfigError] = []
    for name in CALLED_HOOKS:
        path = values.get(name)
        if not path or name in hooks:
            continue
        try:
            hooks[name] = import_hook(name, path)
        except HookError as exc:
            key = SETTINGS_BY_NAME[name].key
            errors.append(ConfigError(
                f"PREFORK[{key!r}] = {path!r}: the hook {exc}. Fix: give the dotted path of "
                f"a function {name}(...) with gunicorn's signature.",
                setting=name, value=path, source=PREFORK))
    return hooks, errors


def _help(setting: Setting) -> str:
    """argparse help: the registry's line plus where else it can be set; '%' escaped."""
    extra = [f"PREFORK['{setting.key}']"]
    if setting.env:
        extra.append(f"env {setting.env}")
    if setting.action not in ("store_true", "store_false"):
        extra.append(f"default: {setting.default!r}")
    text = f"{setting.help} [{', '.join(extra)}]"
    return text.replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser,
                  settings: Iterable[Setting] | None = None) -> None:
    """Add every setting's flags (dest = setting name, default = SUPPRESS).

    Values stay strings here; ``load_config`` converts them so a bad value gets our
    one-line error naming the flag instead of argparse's usage dump.
    """
    chosen = list(settings if settings is not None else SETTINGS)
    groups: dict[str, Any] = {}
    for section in SECTIONS:
        if any(s.section == section and s.flags for s in chosen):
            groups[section] = parser.add_argument_group(section)
    taken = set(parser._option_string_actions)  # e.g. Django's own --pythonpath
    for setting in chosen:
        flags = [flag for flag in setting.flags if flag not in taken]
        if not flags:
            continue
        kwargs: dict[str, Any] = {
            "dest": setting.name,
            "default": argparse.SUPPRESS,
            "help": _help(setting),
        }
        if setting.action in ("store_true", "store_false"):
            kwargs["action"] = setting.action
        else:
            kwargs["action"] = setting.action or "store"
            if setting.metavar:
                kwargs["metavar"] = setting.metavar
        groups.get(setting.section, parser).add_argument(*flags, **kwargs)
