"""The settings registry: one table drives the CLI, PREFORK, validation, checks and docs.

Importing this package never imports Django (workers and the docs generator use it bare).
"""

from __future__ import annotations

from .binds import BindSpec, parse_addrport, parse_bind
from .loader import (
    SOURCES,
    Config,
    ConfigError,
    add_arguments,
    load_config,
    load_config_collecting,
    validate_prefork,
)
from .registry import SETTINGS, SETTINGS_BY_KEY, SETTINGS_BY_NAME, Setting

__all__ = [
    "SETTINGS",
    "SETTINGS_BY_KEY",
    "SETTINGS_BY_NAME",
    "SOURCES",
    "BindSpec",
    "Config",
    "ConfigError",
    "Setting",
    "add_arguments",
    "load_config",
    "load_config_collecting",
    "parse_addrport",
    "parse_bind",
    "validate_prefork",
]
