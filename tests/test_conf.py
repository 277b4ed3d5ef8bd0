"""The settings registry: precedence, sources, validation messages, round trip, argparse, docs.

Plain pytest: the conf package must work without Django settings (and without Django).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from django_prefork.conf import (
    SETTINGS,
    SOURCES,
    Config,
    ConfigError,
    add_arguments,
    load_config,
    validate_prefork,
)
from django_prefork.conf.docs import generate

ROOT = Path(__file__).resolve().parent.parent


def error_of(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the registry itself ---------------------------------------------------------------


def test_registry_shape():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for s in SETTINGS:
        assert s.key == s.name.upper()
        assert s.help and "\n" not in s.help
        assert all(f.startswith("-") for f in s.flags)
    keys = {s.key for s in SETTINGS}
    assert {"KEEPALIVE", "PRELOAD_APP", "ACCESSLOG", "ERRORLOG"} <= keys
    flags = [f for s in SETTINGS for f in s.flags]
    assert len(flags) == len(set(flags))
    assert not {"--check-config", "--print-config", "--skip-checks"} & set(flags)


def test_config_annotations_match_registry():
    assert list(Config.__annotations__) == [s.name for s in SETTINGS]


def test_defaults_are_valid_and_match_gunicorn():
    cfg = load_config()
    assert cfg.bind == ["127.0.0.1:8000"]
    assert (cfg.workers, cfg.worker_class, cfg.threads, cfg.worker_connections) == (
        1, "sync", 1, 1000)
    assert (cfg.timeout, cfg.graceful_timeout, cfg.keepalive) == (30, 30, 2)
    assert (cfg.max_requests, cfg.max_requests_jitter, cfg.preload_app) == (0, 0, False)
    assert cfg.backlog == 2048
    assert (cfg.accesslog, cfg.errorlog, cfg.loglevel) == (None, "-", "info")
    assert cfg.access_log_format == '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    assert (cfg.pidfile, cfg.proc_name) == (None, None)
    assert (cfg.limit_request_line, cfg.limit_request_fields,
            cfg.limit_request_field_size) == (4094, 100, 8190)
    assert (cfg.header_timeout, cfg.limit_request_body, cfg.header_map) == (30, 0, "drop")
    assert cfg.forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert cfg.secure_scheme_headers == {
        "X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}
    assert all(cfg.source(s.name) == "default" for s in SETTINGS)
    for s in SETTINGS:  # every default passes its own rule unchanged
        assert s.rule(s.default, False) == s.default


def test_config_is_read_only_and_returns_copies():
    cfg = load_config()
    with pytest.raises(AttributeError):
        cfg.workers = 3
    cfg.bind.append("0.0.0.0:1")
    cfg.secure_scheme_headers.clear()
    assert cfg.bind == ["127.0.0.1:8000"]
    assert cfg.secure_scheme_headers
    with pytest.raises(AttributeError, match="did you mean 'workers'"):
        _ = cfg.worker
    with pytest.raises(KeyError):
        cfg.source("nope")


# -- precedence and sources --------------------------------------------------------------


def test_precedence_default_prefork_env_cli():
    prefork = {"WORKERS": 2, "BIND": "10.0.0.1:1", "FORWARDED_ALLOW_IPS": ["10.0.0.0/8"],
               "TIMEOUT": 60}
    environ = {"WEB_CONCURRENCY": "4", "PORT": "5000", "FORWARDED_ALLOW_IPS": "1.2.3.4"}

    cfg = load_config(prefork=prefork)
    assert (cfg.workers, cfg.source("workers")) == (2, "PREFORK")
    assert cfg.bind == ["10.0.0.1:1"]
    assert cfg.source("threads") == "default"

    cfg = load_config(prefork=prefork, environ=environ)
    assert (cfg.workers, cfg.source("workers")) == (4, "environment")
    assert (cfg.bind, cfg.source("bind")) == (["0.0.0.0:5000"], "environment")
    assert cfg.forwarded_allow_ips == ["1.2.3.4"]
    assert (cfg.timeout, cfg.source("timeout")) == (60, "PREFORK")

    cli = {"workers": "8", "bind": ["127.0.0.1:9"], "timeout": "5"}
    cfg = load_config(prefork=prefork, environ=environ, cli=cli)
    assert (cfg.workers, cfg.source("workers")) == (8, "command line")
    assert (cfg.bind, cfg.source("bind")) == (["127.0.0.1:9"], "command line")
    assert (cfg.timeout, cfg.source("timeout")) == (5, "command line")
    assert cfg.source("forwarded_allow_ips") == "environment"
    assert set(cfg.sources().values()) <= set(SOURCES)


def test_env_alone_and_unrelated_or_empty_env_ignored():
    cfg = load_config(environ={"WEB_CONCURRENCY": " 3 ", "PORT": "8080", "HOME": "/root"})
    assert cfg.workers == 3 and cfg.bind == ["0.0.0.0:8080"]
    cfg = load_config(environ={"WEB_CONCURRENCY": "", "PORT": "  "})
    assert cfg.source("workers") == "default" and cfg.source("bind") == "default"


def test_bind_str_or_list_in_prefork():
    assert load_config({"BIND": "0.0.0.0:80"}).bind == ["0.0.0.0:80"]
    cfg = load_config({"BIND": ["8001", "[::1]", "unix:/tmp/s.sock", "fd://4"]})
    assert cfg.bind == ["127.0.0.1:8001", "[::1]:8000", "unix:/tmp/s.sock", "fd://4"]
    assert [b.kind for b in cfg.bind_specs] == ["tcp", "tcp", "unix", "fd"]
    assert load_config({"BIND": ("a:1",)}).bind == ["a:1"]


def test_cli_ignores_non_settings_and_none():
    cfg = load_config(cli={"verbosity": 1, "settings": None, "check_config": True,
                           "workers": None, "threads": 4})
    assert cfg.source("workers") == "default"
    assert (cfg.threads, cfg.source("threads")) == (4, "command line")


def test_cli_accepts_real_types_from_call_command():
    cfg = load_config(cli={"workers": 3, "preload_app": True, "bind": "0.0.0.0:1"})
    assert (cfg.workers, cfg.preload_app, cfg.bind) == (3, True, ["0.0.0.0:1"])


def test_conversions():
    cfg = load_config({"LOGLEVEL": "WARNING", "WORKER_CLASS": "GThread",
                       "SECURE_SCHEME_HEADERS": {"x-forwarded-proto": "https"},
                       "FORWARDED_ALLOW_IPS": "127.0.0.1, 10.0.0.0/8 ,*",
                       "ACCESSLOG": "-", "PIDFILE": "", "PRELOAD_APP": True})
    assert cfg.loglevel == "warning" and cfg.worker_class == "gthread"
    assert cfg.secure_scheme_headers == {"X-FORWARDED-PROTO": "https"}
    assert cfg.forwarded_allow_ips == ["127.0.0.1", "10.0.0.0/8", "*"]
    assert cfg.accesslog == "-" and cfg.pidfile is None and cfg.preload_app is True
    assert load_config(cli={"preload_app": "false"}).preload_app is False
    assert load_config({"LIMIT_REQUEST_LINE": 0}).limit_request_line == 0
    assert load_config({"BACKLOG": 65535}).backlog == 65535


# -- error messages ----------------------------------------------------------------------


def test_prefork_error_names_key_value_and_fix():
    assert error_of(prefork={"WORKERS": 0}) == (
        "PREFORK['WORKERS'] = 0 is invalid: must be an integer >= 1. Fix: set WORKERS to 1 "
        "or more (a common choice is 2 x CPU cores + 1).")


def test_cli_error_names_flag():
    message = error_of(cli={"workers": "abc"})
    assert message.startswith("--workers abc is invalid: must be an integer >= 1. Fix: pass "
                              "--workers 1 or more")
    message = error_of(cli={"bind": ["a:1", "b:x"]})
    assert message.startswith("--bind b:x is invalid:") and "non-numeric port 'x'" in message


def test_env_error_names_variable():
    message = error_of(environ={"WEB_CONCURRENCY": "many"})
    assert message.startswith("environment variable WEB_CONCURRENCY='many' is invalid")
    assert "Fix: set WEB_CONCURRENCY to 1 or more" in message
    message = error_of(environ={"PORT": "http"})
    assert message.startswith("environment variable PORT='http' is invalid")
    assert "port number" in message
    assert "PORT=" in error_of(environ={"PORT": "70000"})


@pytest.mark.parametrize(
    ("prefork", "words"),
    [
        ({"WORKERS": "5"}, ["PREFORK['WORKERS'] = '5'", "not a string", "5 without quotes"]),
        ({"WORKERS": True}, ["PREFORK['WORKERS'] = True", "not a bool"]),
        ({"WORKERS": 2.5}, ["not float"]),
        ({"TIMEOUT": -1}, ["PREFORK['TIMEOUT'] = -1", "integer >= 0", "0 or more"]),
        ({"BACKLOG": 0}, ["integer 1-65535", "a number from 1 to 65535"]),
        ({"BACKLOG": 70000}, ["integer 1-65535"]),
        ({"LIMIT_REQUEST_LINE": 8191}, ["integer 0-8190"]),
        ({"LIMIT_REQUEST_FIELDS": 40000}, ["integer 0-32768"]),
        ({"LIMIT_REQUEST_FIELD_SIZE": -5}, ["integer >= 0"]),
        ({"PRELOAD_APP": "yes"}, ["PREFORK['PRELOAD_APP'] = 'yes'", "True or False"]),
        ({"PRELOAD_APP": 1}, ["True or False, not int"]),
        ({"WORKER_CLASS": "eventlet"}, ["one of sync, gthread, gevent"]),
        ({"WORKER_CLASS": 3}, ["must be a string"]),
        ({"LOGLEVEL": "verbose"}, ["one of debug, info, warning, error, critical"]),
        ({"BIND": 8000}, ["PREFORK['BIND'] = 8000", "string or a list of strings"]),
        ({"BIND": []}, ["at least one address"]),
        ({"BIND": ["a:1", "a:1"]}, ["lists a:1 twice"]),
        ({"BIND": ["ok:1", 5]}, ["must be a string"]),
        ({"BIND": "::1:80"}, ["brackets"]),
        ({"FORWARDED_ALLOW_IPS": "1.2.3.4,proxy"}, ["'proxy' is not an IP address"]),
        ({"FORWARDED_ALLOW_IPS": ["10.0.0.0/33"]}, ["'10.0.0.0/33'"]),
        ({"FORWARDED_ALLOW_IPS": 5}, ["string or a list of strings"]),
        ({"SECURE_SCHEME_HEADERS": ["X-FORWARDED-PROTO"]}, ["must be a dict"]),
        ({"SECURE_SCHEME_HEADERS": {"X-A": 1}}, ["must be a string"]),
        ({"ACCESSLOG": 1}, ["string or None"]),
        ({"ACCESS_LOG_FORMAT": None}, ["must be a string, not None"]),
    ],
)
def test_every_kind_of_bad_value(prefork, words):
    message = error_of(prefork=prefork)
    assert message.startswith("PREFORK[")
    assert " is invalid: " in message and ". Fix: " in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("key", "guess"),
    [("WORKER", "WORKERS"), ("workers", "WORKERS"), ("KEEP_ALIVE", "KEEPALIVE"),
     ("PRELOAD", "PRELOAD_APP"), ("ACCESS_LOGFILE", "ACCESSLOG"), ("BINDS", "BIND"),
     ("LOG_LEVEL", "LOGLEVEL"), ("TIMEOUTS", "TIMEOUT")],
)
def test_unknown_key_did_you_mean(key, guess):
    assert error_of(prefork={key: 1}) == (
        f"PREFORK has an unknown key {key!r}: did you mean {guess!r}?")


def test_unknown_key_without_guess_and_bad_prefork_type():
    message = error_of(prefork={"XYZZY": 1})
    assert message.startswith("PREFORK has an unknown key 'XYZZY'. Fix: remove it")
    assert "non-string key" in error_of(prefork={1: 2})
    assert error_of(prefork=["WORKERS"]).startswith("PREFORK must be a dict, not list")


def test_validate_prefork_returns_all_problems():
    assert validate_prefork({}) == [] and validate_prefork(None) == []
    assert validate_prefork({"WORKERS": 4, "BIND": ["0.0.0.0:80"]}) == []
    errors = validate_prefork({"WORKERS": 0, "WORKER": 3, "BIND": "x:y", "TIMEOUT": "1"})
    assert len(errors) == 4
    assert all(isinstance(e, ConfigError) and "\n" not in str(e) for e in errors)
    assert {e.setting for e in errors} == {"workers", None, "bind", "timeout"}


def test_load_config_error_carries_all_errors():
    with pytest.raises(ConfigError) as info:
        load_config({"WORKERS": 0}, {"PORT": "x"}, {"threads": "y"})
    assert len(info.value.errors) == 3
    assert [e.source for e in info.value.errors] == ["PREFORK", "environment", "command line"]


def test_gevent_requires_the_package(monkeypatch):
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return None if name == "gevent" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    message = error_of(prefork={"WORKER_CLASS": "gevent"})
    assert 'pip install "django-prefork[gevent]"' in message
    assert message.startswith("PREFORK['WORKER_CLASS'] = 'gevent' is invalid")
    assert "--worker-class gevent is invalid" in error_of(cli={"worker_class": "gevent"})


def test_gevent_accepted_when_installed(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: object())
    assert load_config(cli={"worker_class": "gevent"}).worker_class == "gevent"


# -- round trip, replace, print ----------------------------------------------------------


def test_to_dict_from_dict_json_round_trip():
    cfg = load_config({"BIND": ["[::1]:1", "unix:/tmp/x.sock"], "SECURE_SCHEME_HEADERS": {},
                       "PIDFILE": "/tmp/p.pid"}, {"WEB_CONCURRENCY": "3"}, {"preload_app": True})
    data = json.loads(json.dumps(cfg.to_dict()))
    assert set(data) == {s.name for s in SETTINGS}
    again = Config.from_dict(data)
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert again.source("workers") == "default"  # no sources given
    again = Config.from_dict(data, cfg.sources())
    assert again.sources() == cfg.sources()
    full = Config.from_json(json.loads(json.dumps(cfg.to_json())))
    assert full == cfg and full.source("workers") == "environment"
    assert full.source("preload_app") == "command line"


def test_from_dict_validates():
    with pytest.raises(ConfigError, match=r"config\['workers'\] = 0 is invalid"):
        Config.from_dict({"workers": 0})
    with pytest.raises(ConfigError, match="unknown setting 'worker': did you mean 'workers'"):
        Config.from_dict({"worker": 1})
    assert Config.from_dict({}) == load_config()


def test_replace():
    cfg = load_config({"WORKERS": 2})
    new = cfg.replace(workers=5, bind=["0.0.0.0:1"])
    assert (new.workers, new.bind, cfg.workers) == (5, ["0.0.0.0:1"], 2)
    assert new.source("workers") == "PREFORK"
    assert cfg.replace(_source="command line", threads=2).source("threads") == "command line"
    with pytest.raises(ConfigError, match=r"Config.replace\(workers=0\) is invalid"):
        cfg.replace(workers=0)
    with pytest.raises(ConfigError, match="did you mean 'threads'"):
        cfg.replace(thread=2)


def test_format_for_print():
    cfg = load_config({"WORKERS": 3}, cli={"bind": ["0.0.0.0:80"]})
    lines = cfg.format_for_print().splitlines()
    assert len(lines) == len(SETTINGS)
    assert lines[0].startswith("bind ") and lines[0].endswith("(command line)")
    assert "= ['0.0.0.0:80']" in lines[0]
    workers = next(line for line in lines if line.startswith("workers "))
    assert "= 3" in workers and workers.endswith("(PREFORK)")
    assert next(line for line in lines if line.startswith("threads ")).endswith("(default)")


# -- argparse ------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runprefork")
    add_arguments(parser)
    return parser


def test_argparse_integration():
    ns = make_parser().parse_args(["-w", "3", "-b", "a:1", "-b", "[::1]:2", "--preload"])
    cli = vars(ns)
    assert cli == {"workers": "3", "bind": ["a:1", "[::1]:2"], "preload_app": True}
    cfg = load_config(prefork={"WORKERS": 1, "THREADS": 2}, environ={}, cli=cli)
    assert (cfg.workers, cfg.bind, cfg.preload_app, cfg.threads) == (
        3, ["a:1", "[::1]:2"], True, 2)
    assert cfg.source("bind") == "command line" and cfg.source("threads") == "PREFORK"


def test_argparse_only_given_options_and_all_flags():
    parser = make_parser()
    assert vars(parser.parse_args([])) == {}
    ns = parser.parse_args(["-k", "gthread", "--threads", "4", "--keep-alive", "5",
                            "--log-level", "DEBUG", "--access-logfile", "-", "-t", "0",
                            "--forwarded-allow-ips", "*", "-p", "/tmp/x.pid", "-n", "site"])
    cfg = load_config(cli=vars(ns))
    assert (cfg.worker_class, cfg.threads, cfg.keepalive, cfg.loglevel) == (
        "gthread", 4, 5, "debug")
    assert (cfg.accesslog, cfg.timeout, cfg.forwarded_allow_ips) == ("-", 0, ["*"])
    assert (cfg.pidfile, cfg.proc_name) == ("/tmp/x.pid", "site")
    help_text = parser.format_help()  # '%' in the access log format must not break argparse
    for s in SETTINGS:
        for flag in s.flags:
            assert flag in help_text
    assert "--secure-scheme-headers" not in help_text


# -- isolation and docs --------------------------------------------------------------------


def test_conf_imports_neither_django_nor_gevent():
    code = (
        "import importlib.util, sys\n"
        "import django_prefork.conf as c, django_prefork.conf.docs\n"
        "if importlib.util.find_spec('gevent'):\n"
        "    c.load_config({'WORKER_CLASS': 'gevent'})\n"
        "sys.exit(any(m.split('.')[0] in ('django', 'gevent') for m in sys.modules))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_docs_settings_md_is_generated():
    committed = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == generate(), (
        "docs/settings.md is stale: run python -m django_prefork.conf.docs > docs/settings.md")
    for s in SETTINGS:
        assert f"`{s.key}`" in committed
