"""gunicorn's logconfig, logconfig_json and logconfig_dict, built without side effects.

Python's ``fileConfig``/``dictConfig`` first close every handler in the process (Django's
``LOGGING`` ones too) and may disable every logger they do not name. The server applies
these settings *after* the project's ``LOGGING`` and must not break it, and on a reload it
must open every new file before it touches the old setup. So this module only builds: the
formatters, filters and handlers (files opened, sockets connected) and a plan per logger;
``django_prefork.logging`` applies the plan, never disabling a logger
(``disable_existing_loggers`` is treated as False, whatever the file says).

Stdlib only (no Django import), like django_prefork.logging.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import logging.config
import logging.handlers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The settings' names in messages: "FLAG (PREFORK key)".
LOGCONFIG_LABELS = {
    "logconfig": "--log-config (LOGCONFIG)",
    "logconfig_json": "--log-config-json (LOGCONFIG_JSON)",
    "logconfig_dict": "--log-config-dict (LOGCONFIG_DICT)",
}

ROOT = ""  # the root logger's key in a plan


class LogConfigError(Exception):
    """A logconfig setting cannot be applied; ``str()`` is one line naming it and why."""


@dataclass
class LoggerPlan:
    """What one named logger gets; None = leave that attribute as it is."""

    level: int | None = None
    handlers: list[logging.Handler] = field(default_factory=list)
    propagate: bool | None = None
    filters: list[Any] = field(default_factory=list)


@dataclass
class BuiltLogConfig:
    """Every handler built (to close if the setup is abandoned) and the per-logger plans."""

    handlers: list[logging.Handler] = field(default_factory=list)
    loggers: dict[str, LoggerPlan] = field(default_factory=dict)

    def close(self) -> None:
        for handler in self.handlers:
            with contextlib.suppress(Exception):
                handler.close()
        self.handlers.clear()

    def extend(self, other: BuiltLogConfig) -> None:
        """``other`` is applied after this one: it wins for the loggers both name."""
        self.handlers.extend(other.handlers)
        self.loggers.update(other.loggers)

    def routes(self, name: str) -> bool:
        """Whether the plan gives this logger handlers of its own."""
        plan = self.loggers.get(name)
        return plan is not None and bool(plan.handlers)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += ": " + " ".join(str(cause).split())
    return text


def build_all(cfg: Any) -> BuiltLogConfig:
    """Build logconfig, then logconfig_json, then logconfig_dict (later ones win per logger,
    as gunicorn gives logconfig_dict precedence over the others). Raises LogConfigError
    after closing whatever it had opened."""
    built = BuiltLogConfig()
    steps = (("logconfig", _load_ini), ("logconfig_json", _load_json_file),
             ("logconfig_dict", _from_mapping))
    try:
        for setting, load in steps:
            value = getattr(cfg, setting, None)
            if not value:
                continue
            try:
                built.extend(load(value))
            except LogConfigError:
                raise
            except Exception as exc:
                shown = f" {value!r}" if isinstance(value, str) else ""
                raise LogConfigError(
                    f"{LOGCONFIG_LABELS[setting]}{shown} cannot be applied: {_one_line(exc)}"
                ) from None
    except BaseException:
        built.close()
        raise
    return built


# --- dictConfig (logconfig_dict, logconfig_json) ------------------------------------------

def _load_json_file(path: str) -> BuiltLogConfig:
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"the JSON must be an object, not {type(data).__name__}")
    return _from_mapping(data)


def _from_mapping(config: Mapping[str, Any]) -> BuiltLogConfig:
    """Build a dictConfig dictionary's pieces with the stdlib's own configurator, in its
    order (formatters, filters, handlers with targets deferred, loggers), minus its
    ``_clearExistingHandlers()`` and its disabling of loggers."""
    data = json.loads(json.dumps(config))  # a private deep copy the configurator may edit
    data.setdefault("version", 1)  # gunicorn supplies it from its own defaults
    if data["version"] != 1:
        raise ValueError(f"version must be 1, not {data['version']!r}")
    if data.get("incremental"):
        raise ValueError("'incremental': True is not supported; leave it out")
    configurator = logging.config.DictConfigurator(data)
    conf = configurator.config
    built = BuiltLogConfig()
    try:
        for section, make in (("formatters", configurator.configure_formatter),
                              ("filters", configurator.configure_filter)):
            entries = conf.get(section, {})
            for name in list(entries):
                try:
                    entries[name] = make(entries[name])
                except Exception as exc:
                    raise ValueError(f"{section[:-1]} {name!r}: {_one_line(exc)}") from None
        handlers = conf.get("handlers", {})
        deferred = []
        for name in sorted(handlers):
            if not _build_handler(configurator, handlers, name, built, defer=True):
                deferred.append(name)
        for name in deferred:
            _build_handler(configurator, handlers, name, built, defer=False)
        for name, logger_conf in conf.get("loggers", {}).items():
            built.loggers[name] = _dict_plan(configurator, logger_conf, f"logger {name!r}")
        if conf.get("root"):
            built.loggers[ROOT] = _dict_plan(configurator, conf["root"], "the root logger")
    except BaseException:
        built.close()
        raise
    return built


def _build_handler(configurator: Any, handlers: Any, name: str, built: BuiltLogConfig,
                   *, defer: bool) -> bool:
    try:
        handler = configurator.configure_handler(handlers[name])
    except Exception as exc:
        if defer and "target not configured yet" in str(exc.__cause__ or exc):
            return False
        raise ValueError(f"handler {name!r}: {_one_line(exc)}") from None
    handler.name = name
    handlers[name] = handler
    built.handlers.append(handler)
    return True


def _dict_plan(configurator: Any, conf: Any, what: str) -> LoggerPlan:
    plan = LoggerPlan()
    try:
        if conf.get("level") is not None:
            plan.level = logging._checkLevel(conf["level"])  # type: ignore[attr-defined]
        handlers = configurator.config.get("handlers", {})
        for name in conf.get("handlers", []):
            if name not in handlers:
                raise ValueError(f"names handler {name!r}, which is not defined")
            plan.handlers.append(handlers[name])
        filters = configurator.config.get("filters", {})
        for item in conf.get("filters", []):
            plan.filters.append(filters[item] if isinstance(item, str) else item)
        if "propagate" in conf:
            plan.propagate = bool(conf["propagate"])
    except KeyError as exc:
        raise ValueError(f"{what} names filter {exc.args[0]!r}, which is not defined") from None
    except ValueError as exc:
        raise ValueError(f"{what} {exc}") from None
    return plan


# --- fileConfig (logconfig) ---------------------------------------------------------------

def _load_ini(path: str) -> BuiltLogConfig:
    """Read Python's logging ini format as ``fileConfig`` does (handler ``args`` are
    evaluated in the logging module's namespace, as there)."""
    parser = configparser.ConfigParser(defaults=None)
    with open(path, encoding="utf-8") as f:
        parser.read_file(f)
    for required in ("loggers", "handlers", "formatters"):
        if not parser.has_section(required):
            raise ValueError(f"it has no [{required}] section")
    formatters = logging.config._create_formatters(parser)  # type: ignore[attr-defined]
    built = BuiltLogConfig()
    try:
        handlers = _ini_handlers(parser, formatters, built)
        for key in _keys(parser["loggers"].get("keys", "")):
            section = parser[f"logger_{key}"]
            name = ROOT if key == "root" else section.get("qualname", key)
            plan = LoggerPlan()
            if "level" in section:
                plan.level = logging._checkLevel(section["level"])  # type: ignore[attr-defined]
            for handler_key in _keys(section.get("handlers", "")):
                if handler_key not in handlers:
                    raise ValueError(f"logger {key!r} names handler {handler_key!r}, "
                                     "which is not defined")
                plan.handlers.append(handlers[handler_key])
            if name != ROOT:
                plan.propagate = section.getint("propagate", fallback=1) != 0
            built.loggers[name] = plan
    except KeyError as exc:
        built.close()
        raise ValueError(f"it has no section {exc.args[0]!r}") from None
    except BaseException:
        built.close()
        raise
    return built


def _keys(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ini_handlers(parser: configparser.ConfigParser, formatters: dict[str, logging.Formatter],
                  built: BuiltLogConfig) -> dict[str, logging.Handler]:
    namespace = vars(logging)
    handlers: dict[str, logging.Handler] = {}
    targets: list[tuple[logging.handlers.MemoryHandler, str]] = []
    for key in _keys(parser["handlers"].get("keys", "")):
        section = parser[f"handler_{key}"]
        try:
            try:
                klass = eval(section["class"], namespace)  # fileConfig evaluates these too
            except (AttributeError, NameError):
                klass = logging.config._resolve(section["class"])  # type: ignore[attr-defined]
            args = eval(section.get("args", "()"), namespace)
            kwargs = eval(section.get("kwargs", "{}"), namespace)
            handler = klass(*args, **kwargs)
        except Exception as exc:
            raise ValueError(f"handler {key!r}: {_one_line(exc)}") from None
        handler.name = key
        built.handlers.append(handler)
        if "level" in section:
            handler.setLevel(section["level"])
        if section.get("formatter"):
            handler.setFormatter(formatters[section["formatter"]])
        if isinstance(handler, logging.handlers.MemoryHandler) and section.get("target"):
            targets.append((handler, section["target"]))
        handlers[key] = handler
    for handler, target in targets:
        handler.setTarget(handlers[target])
    return handlers
